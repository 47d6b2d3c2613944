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
every stage runs its own patterns to a fixed point), or after `max_rounds` cycles; when
nothing applies at all the input object itself is returned.
"""
from __future__ import annotations

from pyrsistent import pmap

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


def run_to_fixed_point(program, stage_list, max_rounds: int, context=DEFAULT_CONTEXT):
    """(result, stage runs, names of the stages that changed something, in order)."""
    n = len(stage_list)
    unchanged_in_a_row, runs, changed_by = 0, 0, []
    while unchanged_in_a_row < n and runs < max_rounds * n:
        st = stage_list[runs % n]
        new = st.run(program, context).program
        runs += 1
        if new is program:
            unchanged_in_a_row += 1
        else:
            unchanged_in_a_row = 1  # every stage is idempotent: the one that changed is settled
            changed_by.append(st.name)
            program = new
    return program, runs, changed_by


@stage("canonicalize_quantization", version="1", contract=composed(*SEED_PASS_ORDER))
def canonicalize_quantization(program, *, max_rounds: int = 8, context=DEFAULT_CONTEXT):
    """Run the eight seed quantization passes and dead code elimination to a fixed point."""
    if max_rounds < 1:
        raise StageError(f"canonicalize_quantization: max_rounds must be >= 1, got {max_rounds}")
    result, runs, changed_by = run_to_fixed_point(program, seed_stages(), max_rounds, context)
    stats = pmap({"stage_runs": runs, "changed_by": tuple(changed_by)})
    return StageResult(result, stats)


__all__ = ["SEED_PASS_ORDER", "canonicalize_quantization", "seed_stages", "run_to_fixed_point"]
