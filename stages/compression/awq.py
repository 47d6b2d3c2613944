"""awq_scale_weights: activation-aware per-input-channel scaling (AWQ, Lin et al. 2023),
folded exactly into the graph, so that the quantizer that runs next sees weights whose
important input channels are larger.

    awq_scale_weights{target="int4_block"},gptq_quantize_weights{dtype="int4",granularity="per_block"}

For every fold group (awq_fold.py: a producer that can absorb a per-channel division, such as
a layer_norm's gamma / beta or the value projection's output channels, and the linear / matmul
weights its output reaches through reshapes, transposes and the attention product) it picks
one scale s over the producer's channels by AWQ's search (numeric/awq.py: s = E[x^2]^(alpha/2),
alpha on ``grid`` + 1 points of [0, 1], the lowest calibrated proxy of the weights put on
``target`` afterwards: int4 / uint4 per block of ``block_size``, int4 / int8 per channel, or
an activation-weighted k-means LUT of ``nbits`` per ``group_size`` output channels, 0: per
tensor; codes by plain rounding, AWQ's rule, or with ``search="gptq"`` by the GPTQ that
usually follows), multiplies each reader weight's input channels by s and divides the
producer's output channels by it. When the producer is itself a selected weight its own
rounding error is part of the proxy (a per-block grid follows the division exactly, a LUT
shared by several output channels does not). The program computes the same function (the
contract: every output within float rounding of the old one, checked by verify="each"); only
the weights differ.

The calibration statistics move with the weights: a reader's input is now x / s, so its
``gram`` becomes S^-1 H S^-1 and ``input_moment`` m / s^2 (what calibrate would record on the
new program, up to float rounding); a producer weight's own input is unchanged, its measured
``sensitivity`` and ``sensitivity_per_batch`` (end-to-end error per unit of its proxy) are
rescaled by the ratio of its output energy tr(W H W^T) before / after, the first-order effect
of dividing its output channels (approximate: the true factor depends on where the error falls). So a following
gptq_quantize_weights / weighted_palettize_weights / mixed_precision reads correct figures.

Selection: the readers are chosen as every compression stage chooses weights (more than 2048
elements, or ``op_selector`` / ``config``; a config entry may give a reader its own target);
a group is scaled only when all its readers are selected and have statistics (they share one
s).

Stats: ``weights``: per weight, for a reader scaled ``alpha``, ``producer``, ``fold``,
``proxy`` / ``proxy_unscaled`` (its group's summed loss at the chosen s and at s = 1), ``min_scale`` /
``max_scale``; for a producer weight ``output_divided`` (the group); otherwise ``skipped``
with the reason (input from a nonlinearity, a residual add on the way, no statistics, ...).
``groups``: per producer, its kind, readers, path, alpha and losses (``producer_proxy``: the
producer weight's own part, when it is in the sum). ``patterns``: fold groups
found ("matched") and scaled ("rewritten").
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pyrsistent import freeze

from ir.core import Block, Op
from ir.construct import const_op
from ir.rewrite import rewire_block
from stages.base import DEFAULT_CONTEXT, StageResult
from stages.calibration.stats import INFO_ATTR, with_calibration
from stages.compression.awq_fold import Group, apply, fold_groups
from stages.compression.calibrated import NO_STATS, as_matrix, gram_of, table_of
from stages.compression.checked import ParameterError, compression_stage, one_of, positive_int
from stages.compression.numeric.awq import TARGETS, Producer, Reader, Target, alpha_grid, producer_loss
from stages.compression.numeric.awq import search as awq_search
from stages.compression.weights import Skip, as_config, resolve_params, weight_views
from stages.contracts import within

NBITS = (2, 3, 4, 6, 8)
SEARCHES = ("rounding", "gptq")
# the outputs move by float rounding only: a reader's x / s times W s, a norm's gamma / s
# (each rounded once to fp32), carried through a network
RTOL, EPS = 1e-4, 64
WHY = "x W = (x / s)(W s): the same function, each rescaled constant rounded once to its dtype"


def check_awq(params: dict) -> None:
    one_of(params, "target", TARGETS)
    one_of(params, "search", SEARCHES)
    one_of(params, "nbits", NBITS)
    for key in ("block_size", "grid"):
        positive_int(params, key)
    g = params.get("group_size")
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 0):
        raise ParameterError(f"group_size={g!r} must be an integer >= 0 (0: one LUT per tensor)")


def _target(params) -> Target:
    return Target(params["target"], int(params["block_size"]), int(params["nbits"]), int(params["group_size"]),
                  params["search"])


# ---- choosing s ------------------------------------------------------------------------------

def _readers(group: Group, values, table, chosen):
    """The numeric Readers of a group, or a Skip (a reader without statistics)."""
    out = []
    for site in group.readers:
        stats = table.get(site.weight)
        m = None if stats is None else stats.get("input_moment")
        w = as_matrix(values[site.weight], site.axes)
        if m is None or len(m) != w.shape[1]:
            return Skip(NO_STATS if stats is None else f"{site.weight!r}: no input moments of its size")
        out.append(Reader(w, site.index, np.asarray(m, np.float64), gram_of(stats, w.shape[1]),
                          _target(chosen[site.weight])))
    return out


def _producer_term(name, axes, values, table, chosen):
    """The producer weight's own term of the search, when it is selected and has statistics."""
    params = chosen.get(name)
    stats = table.get(name) if name is not None else None
    if name is None or params is None or isinstance(params, Skip) or stats is None \
            or stats.get("input_moment") is None:
        return None
    m = as_matrix(values[name], axes)
    if len(stats["input_moment"]) != m.shape[1]:
        return None
    return Producer(m, np.asarray(stats["input_moment"], np.float64), gram_of(stats, m.shape[1]), _target(params))


def _selection(group: Group, chosen: dict):
    """None when every reader of the group is selected, else the reason for each reader."""
    declined = {r: chosen[r] for r in group.reader_names if isinstance(chosen.get(r), Skip)}
    if not declined:
        return None
    first, why = next(iter(declined.items()))
    return {r: declined.get(r) or Skip(f"shares its input with {first!r}, which is not selected ({why})")
            for r in group.reader_names}


# ---- moving the statistics -------------------------------------------------------------------

def _rescaled_reader(stats, s_in: np.ndarray) -> dict:
    out = dict(stats)
    if stats.get("input_moment") is not None:
        out["input_moment"] = np.asarray(stats["input_moment"], np.float64) / (s_in * s_in)
    if stats.get("gram") is not None:
        g = np.asarray(stats["gram"], np.float64) / np.outer(s_in, s_in)
        out["gram"] = (g + g.T) / 2
    return out


def _energy(w: np.ndarray, h: np.ndarray) -> float:
    w = np.asarray(w, np.float64)
    return float(np.einsum("ij,ij->", w @ h, w))


# the statistics that are end-to-end error per unit of the weight's proxy (a float, or one per batch)
SENSITIVITIES = ("sensitivity", "sensitivity_per_batch")


def _rescaled_producer(stats, before: np.ndarray, after: np.ndarray, axes) -> dict:
    """A producer weight's sensitivity per unit of its proxy, rescaled by its output energy
    before / after (its gram and moments describe its input, which did not change)."""
    if stats is None or not any(stats.get(k) is not None for k in SENSITIVITIES):
        return stats
    h = gram_of(stats, as_matrix(before, axes).shape[1])
    if h is None:
        return stats
    e_before, e_after = _energy(as_matrix(before, axes), h), _energy(as_matrix(after, axes), h)
    if e_after <= 0 or e_before <= 0:
        return stats
    out = dict(stats)
    for key in SENSITIVITIES:
        if stats.get(key) is not None:
            v = np.asarray(stats[key], np.float64) * (e_before / e_after)
            out[key] = float(v) if v.ndim == 0 else v
    return out


# ---- the stage -------------------------------------------------------------------------------

def _const_values(fn) -> dict:
    return {op.outputs[0].name: op.outputs[0].val for op in fn.block.ops
            if op.op_type == "const" and op.outputs and op.outputs[0].val is not None}


def _rebuilt(fn, new_values: dict):
    """fn with the consts named in new_values holding their new values (every reader rewired)."""
    subst, ops = {}, []
    for op in fn.block.ops:
        name = op.outputs[0].name if op.op_type == "const" and op.outputs else None
        if name in new_values:
            made = const_op(name, new_values[name])
            op = Op.make("const", op.name, outputs=made.outputs, attrs=op.attrs.set("val", made.outputs[0].val))
            subst[name] = op.outputs[0]
        ops.append(op)
    block = rewire_block(Block.make(fn.block.inputs, ops, fn.block.outputs), subst)
    return fn.replace(block=block)


def rescale(program, scales):
    """The program with the scales {producer op name: s over its channels} folded into the fold
    groups of function main (awq_fold), the statistics left as they are: what the stage does
    once it has chosen s (for tests and for scales chosen elsewhere)."""
    fn = program.main
    groups, _ = fold_groups(fn)
    values, changed = _const_values(fn), {}
    for producer, s in scales.items():
        group = groups.get(producer)
        if not isinstance(group, Group):
            raise ParameterError(f"awq: no fold group starts at {producer!r}"
                                 + (f" ({group})" if isinstance(group, Skip) else ""))
        changed.update(apply({**values, **changed}, group, np.asarray(s, np.float64)))
    return program.with_function(_rebuilt(fn, changed)) if changed else program


def _producer_weight(group: Group, fn) -> tuple:
    """(weight name, (output axis, input axis)) when the producer is a linear / matmul weight."""
    if group.kind != "linear":
        return None, None
    op = next(o for o in fn.block.ops if o.name == group.producer)
    if op.op_type == "linear":
        return op.inputs["weight"].name, (0, 1)
    right = op.inputs["y" if op.op_type == "matmul" else "in1"]
    ty = op.op_type == "matmul" and op.get("transpose_y") is not None and bool(np.asarray(op.inputs["transpose_y"].val))
    return right.name, ((0, 1) if ty else (1, 0))


def _not_scaled(weights: dict, name: str, why) -> None:
    """Record why a reader's input was not scaled: ``skipped`` when the weight is untouched,
    ``input_not_scaled`` when it changed anyway (its output channels, as another group's producer)."""
    entry = weights.get(name, {})
    key = "input_not_scaled" if "output_divided" in entry else "skipped"
    weights[name] = {**entry, key: str(why)}


@compression_stage("awq_scale_weights", check_awq, version="1",
                   contract=within(0, rtol=RTOL, eps=EPS, why=WHY))
def awq_scale_weights(program, *, target: Literal[TARGETS] = "int4_block", block_size=32,
                      nbits: Literal[NBITS] = 4, group_size=16, grid=20, search: Literal[SEARCHES] = "rounding",
                      op_selector=None, config=None, context=DEFAULT_CONTEXT):
    """AWQ's per-input-channel scales, folded exactly into each weight's producer (module docstring)."""
    params = {"target": target, "block_size": block_size, "nbits": nbits, "group_size": group_size, "grid": grid,
              "search": search}
    check_awq(params)
    config = as_config(config)
    fn = program.main
    table = {k: dict(v) for k, v in table_of(program).items()}
    groups, reader_of = fold_groups(fn)
    views = {v.name: v for v in weight_views(fn)}
    chosen = {}
    for name in reader_of:
        got = resolve_params(views[name], params, config, op_selector) if name in views else Skip("not a dense weight")
        if not isinstance(got, Skip):
            check_awq(got)
        chosen[name] = got
    values = _const_values(fn)
    weights, group_stats, changed = {}, {}, {}
    alphas = alpha_grid(grid)
    for producer, group in groups.items():
        if isinstance(group, Skip):
            continue
        skip = _selection(group, chosen)
        readers = _readers(group, {**values, **changed}, table, chosen) if skip is None else None
        if isinstance(readers, Skip):
            skip = {r: readers for r in group.reader_names}
        if skip is not None:
            for r, why in skip.items():
                _not_scaled(weights, r, why)
            continue
        pw, axes = _producer_weight(group, fn)
        own = _producer_term(pw, axes, {**values, **changed}, table, chosen)
        found = awq_search(readers, group.channels, alphas, own)
        losses = dict(found.losses)
        group_stats[producer] = {"kind": group.kind, "readers": list(group.reader_names), "path": list(group.path),
                                 "alpha": found.alpha, "proxy": losses[found.alpha], "proxy_unscaled": losses[0.0],
                                 "losses": [list(p) for p in found.losses]}
        if own is not None:  # how much of it is the producer's own (constant for a per-block grid)
            group_stats[producer]["producer_proxy"] = producer_loss(own, found.scale)
            group_stats[producer]["producer_proxy_unscaled"] = producer_loss(own, np.ones(group.channels))
        if found.alpha == 0.0:
            for r in group.reader_names:
                _not_scaled(weights, r, f"s = 1 (alpha 0) had the lowest proxy of the {len(alphas)} tried")
            continue
        before = {**values, **changed}
        new = apply(before, group, found.scale)
        changed.update(new)
        for site in group.readers:
            s_in = found.scale[site.index]
            if site.weight in table:
                table[site.weight] = _rescaled_reader(table[site.weight], s_in)
            weights[site.weight] = {**weights.get(site.weight, {}), "alpha": found.alpha, "producer": producer,
                                    "fold": group.kind, "min_scale": float(s_in.min()), "max_scale": float(s_in.max()),
                                    "proxy": losses[found.alpha], "proxy_unscaled": losses[0.0]}
        if pw is not None and pw in table:
            table[pw] = _rescaled_producer(table[pw], before[pw], new[pw], axes)
        for c in group.changes:  # the producer side: its weight, bias, gamma / beta, constants on the path
            if c.divide:
                entry = {k: v for k, v in weights.get(c.const, {}).items() if k != "skipped"}
                weights[c.const] = {**entry, "output_divided": producer}
    for name, why in reader_of.items():
        if isinstance(why, Skip) or name not in weights:
            _not_scaled(weights, name, why if isinstance(why, Skip) else "its group was not scaled")
    for name in views:
        weights.setdefault(name, {"skipped": "not the weight of a linear / matmul"})
    found_groups = sum(1 for g in groups.values() if not isinstance(g, Skip))
    stats = {"weights": weights, "groups": group_stats, "scaled": sum(1 for w in weights.values() if "alpha" in w),
             "skipped": sum(1 for w in weights.values() if "skipped" in w),
             "patterns": {"awq_fold": {"matched": found_groups, "rewritten": len(group_stats) - sum(
                 1 for g in group_stats.values() if g["alpha"] == 0.0)}}}
    if not changed:
        return StageResult(program, freeze(stats))
    new_fn = _rebuilt(fn, changed)
    out = program.with_function(new_fn)
    if table:
        out = with_calibration(out, table, dict(program.attrs.get(INFO_ATTR) or {}))
    return StageResult(out, freeze(stats))
