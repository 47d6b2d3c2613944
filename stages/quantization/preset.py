"""canonicalize_quantization: every seed quantization pass, in coremltools'
order, repeated until a whole cycle changes nothing.

The order follows coremltools' default pipelines (pass_pipeline.py):
canonicalize first (int ops, zero points), then remove redundancy
(dequantize -> quantize pairs), then the main pass (scale normalization),
then turn const dequantizes into constexprs and settle the LUT forms; the
cleanup pipeline runs dead code elimination before merging constexpr
dequantizes with the layout ops that follow them, and again after.
reorder_lut_per_channel_scale is not in coremltools' default pipelines; it
runs before canonicalize_quantized_lut_pattern because that one would
otherwise turn every float LUT -> scale chain around first.

The cycle stops as soon as a full cycle of stages in a row has left the
program unchanged (a stage that just changed it counts as settled, since
every stage runs its own patterns to a fixed point), or after `max_rounds` cycles
(then `ir.fixpoint` warns FixedPointNotReached); when nothing applies at all the
input object itself is returned. Stats: `converged`, `rounds` (cycles begun),
`stage_runs`, `changed_by` and `patterns` (the stages' per-pattern counts, summed).
"""
from __future__ import annotations

from typing import NamedTuple

from pyrsistent import pmap

from ir.fixpoint import fixed_point
from ir.rewrite import merge_counts
from stages.base import DEFAULT_CONTEXT, REGISTRY, StageError, StageResult, stage
from stages.contracts import composed

SEED_PASS_ORDER = (
    "int_op_canonicalization",
    "nullify_redundant_quantization_zero_point",
    "dequantize_quantize_pair_elimination",
    "distributive_quantized_binary_op_scale_normalization",
    "dequantize_to_constexpr",
    "reorder_lut_per_channel_scale",
    "canonicalize_quantized_lut_pattern",
    "dead_code_elimination",
    "merge_affine_dequantize_with_consecutive_ops",
    "dead_code_elimination",
)


def seed_stages(order=SEED_PASS_ORDER) -> tuple:
    """The registered stages, looked up when the preset runs (so every module has loaded)."""
    import stages.cleanup  # noqa: F401  (importing registers the stages)
    import stages.quantization  # noqa: F401

    missing = [n for n in order if n not in REGISTRY]
    if missing:
        raise StageError(f"canonicalize_quantization: stages not registered: {', '.join(missing)}")
    return tuple(REGISTRY[n] for n in order)


class _Progress(NamedTuple):
    """Where the cycle stands after some stage runs."""
    program: object
    runs: int  # stage runs so far
    unchanged_in_a_row: int
    changed_by: tuple  # names of the stages that changed something, in order
    counts: tuple  # each run's per-pattern counts


def run_to_fixed_point_detailed(program, stage_list, max_rounds: int, context=DEFAULT_CONTEXT):
    """(result, stage runs, changed_by, converged, per-pattern counts summed)."""
    n = len(stage_list)

    def run_next(p: _Progress) -> _Progress:
        res = stage_list[p.runs % n].run(p.program, context)
        counts = p.counts + ((res.stats["patterns"],) if "patterns" in res.stats else ())
        if res.program is p.program:
            return _Progress(p.program, p.runs + 1, p.unchanged_in_a_row + 1, p.changed_by, counts)
        # every stage is idempotent: the one that just changed the program is settled
        name = stage_list[p.runs % n].name
        return _Progress(res.program, p.runs + 1, 1, p.changed_by + (name,), counts)

    def settled(_old: _Progress, new: _Progress) -> bool:
        return new.unchanged_in_a_row >= n

    done = fixed_point(run_next, _Progress(program, 0, 0, (), ()), max_rounds * n,
                       what=f"canonicalize_quantization (max_rounds={max_rounds})", settled=settled,
                       stacklevel=3)
    p = done.result
    return p.program, p.runs, list(p.changed_by), done.converged, merge_counts(*p.counts)


def run_to_fixed_point(program, stage_list, max_rounds: int, context=DEFAULT_CONTEXT):
    """(result, stage runs, names of the stages that changed something, in order)."""
    result, runs, changed_by, _, _ = run_to_fixed_point_detailed(program, stage_list, max_rounds, context)
    return result, runs, changed_by


@stage("canonicalize_quantization", version="1", contract=composed(*SEED_PASS_ORDER))
def canonicalize_quantization(program, *, max_rounds: int = 8, context=DEFAULT_CONTEXT):
    """Run the eight seed quantization passes and dead code elimination to a fixed point."""
    if max_rounds < 1:
        raise StageError(f"canonicalize_quantization: max_rounds must be >= 1, got {max_rounds}")
    stage_list = seed_stages()
    result, runs, changed_by, converged, counts = run_to_fixed_point_detailed(
        program, stage_list, max_rounds, context)
    rounds = -(-runs // len(stage_list))  # cycles begun
    stats = pmap({"stage_runs": runs, "changed_by": tuple(changed_by), "converged": converged,
                  "rounds": rounds, "patterns": counts})
    return StageResult(result, stats)


__all__ = ["SEED_PASS_ORDER", "canonicalize_quantization", "seed_stages", "run_to_fixed_point",
           "run_to_fixed_point_detailed"]
