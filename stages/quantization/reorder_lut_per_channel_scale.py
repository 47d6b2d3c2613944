"""reorder_lut_per_channel_scale: move a per-output-channel scale of a
palettized weight behind the layer that reads it (the order ANE wants).

    w = constexpr_lut_to_dense(...)                 w = constexpr_lut_to_dense(...)
    w = constexpr_blockwise_shift_scale(w, s)  ->   y = linear|matmul|conv(x, w, b / s)
    y = linear|matmul|conv(x, w, b)                 y = mul(y, s reshaped to the output)

Conditions (those of coremltools, plus the ones that keep the result exact
where coremltools would silently change it):
- the LUT output feeds only the shift-scale op, whose data is a float
  tensor (a float LUT) and whose offset is absent or all zero;
- every reader of the scaled weight is a linear, matmul or conv in the same
  block, and they agree on which weight axis is the output channel
  (linear / conv: 0; matmul y: -1, or -2 with transpose_y; matmul x: -2, or -1
  with transpose_x);
- the scale is 1 on every axis but that output axis;
- refinements: the scaled weight is no block output, a bias must be a
  constant (it is divided by the scale), a matmul operand has rank >= 2 and
  is not read as both x and y, and the moved scale must broadcast to the
  layer's output without changing its shape.

The scaling mul takes the layer's name, so later readers and block outputs
keep theirs; the layer itself becomes `<name>_unscaled`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ir.construct import const_op, new_op
from ir.core import Op
from ir.ops import OpError
from ir.rewrite import Pattern, Rewrite
from stages.base import DEFAULT_CONTEXT, stage
from stages.rewriting import rewrite_stage
from stages.contracts import within
from stages.contracts.postconditions import no_unreordered_lut_scales

OPS_SUPPORT_MOVE_SCALE = frozenset({"linear", "matmul", "conv"})


class LutScale(NamedTuple):
    lut: Op
    scale_op: Op
    readers: tuple  # the linear / matmul / conv ops reading the scaled weight
    output_axis: int


def _flag(var) -> bool:
    return var is not None and bool(var.val)


def output_axis_of(reader: Op, weight) -> Optional[int]:
    """The axis of `weight` that is the output channel for this reader (None: unsupported)."""
    if reader.op_type in ("linear", "conv"):
        return 0 if reader.weight is weight and reader.x is not weight else None
    as_x, as_y = reader.x is weight, reader.y is weight
    if as_x == as_y or weight.rank < 2:
        return None
    axis = (-2 if _flag(reader.transpose_y) else -1) if as_y else (-1 if _flag(reader.transpose_x) else -2)
    return axis + weight.rank


def _scale_op_of(lut: Op, ctx) -> Optional[Op]:
    readers = ctx.consumers(lut.outputs[0])
    if len(readers) != 1 or readers[0].op_type != "constexpr_blockwise_shift_scale":
        return None
    scale_op = readers[0]
    if not ctx.in_block(scale_op) or scale_op.data is not lut.outputs[0]:
        return None
    if not scale_op.data.type.dt.is_float or scale_op.scale.val is None:
        return None
    offset = scale_op.offset
    if offset is not None and (offset.val is None or np.any(offset.val)):
        return None
    return scale_op


def match_lut_scale(op: Op, ctx) -> Optional[LutScale]:
    if op.op_type != "constexpr_lut_to_dense":
        return None
    scale_op = _scale_op_of(op, ctx)
    if scale_op is None:
        return None
    weight = scale_op.outputs[0]
    readers = ctx.consumers(weight)
    if not readers or ctx.is_block_output(weight):
        return None
    if any(r.op_type not in OPS_SUPPORT_MOVE_SCALE or not ctx.in_block(r) for r in readers):
        return None
    axes = {output_axis_of(r, weight) for r in readers}
    if len(axes) != 1 or None in axes:
        return None
    axis = axes.pop()
    shape = scale_op.scale.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return LutScale(op, scale_op, tuple(dict.fromkeys(readers)), axis)


# ---- moving the scale, per reader type ------------------------------------------------
# each returns (new inputs for the unscaled layer, the factor to multiply its output with)

def _rescaled_bias(reader: Op, factor: np.ndarray) -> Optional[dict]:
    """{} without bias, {"bias": b / factor} for a const bias, None for a computed bias."""
    bias = reader.bias
    if bias is None:
        return {}
    if bias.val is None:
        return None
    return {"bias": (bias.val / np.squeeze(factor)).astype(bias.val.dtype)}


def _linear(reader: Op, m: LutScale) -> Optional[tuple]:
    factor = m.scale_op.scale.val.T  # [out, 1] -> [1, out], along the output's last axis
    bias = _rescaled_bias(reader, factor)
    return None if bias is None else ({"weight": m.lut.outputs[0], **bias}, factor)


def _matmul(reader: Op, m: LutScale) -> Optional[tuple]:
    scale = m.scale_op.scale.val
    weight = m.scale_op.outputs[0]
    transposed = _flag(reader.transpose_y) if reader.y is weight else _flag(reader.transpose_x)
    factor = np.swapaxes(scale, -1, -2) if transposed else scale
    key = "y" if reader.y is weight else "x"
    return {key: m.lut.outputs[0]}, factor


def _conv(reader: Op, m: LutScale) -> Optional[tuple]:
    per_channel = np.squeeze(m.scale_op.scale.val).reshape(-1)
    factor = per_channel.reshape((1, per_channel.size) + (1,) * (reader.outputs[0].rank - 2))
    bias = _rescaled_bias(reader, per_channel)
    return None if bias is None else ({"weight": m.lut.outputs[0], **bias}, factor)


MOVE_SCALE = {"linear": _linear, "matmul": _matmul, "conv": _conv}


def _move_scale(reader: Op, m: LutScale, ctx) -> Optional[tuple]:
    """The ops replacing one reader: consts, the unscaled layer, the mul; None if impossible."""
    moved = MOVE_SCALE[reader.op_type](reader, m)
    if moved is None:
        return None
    changes, factor = moved
    out = reader.outputs[0]
    consts, inputs = [], dict(reader.inputs)
    for k, v in changes.items():
        if isinstance(v, np.ndarray):
            c = const_op(ctx.fresh_name(f"{reader.name}_{k}_rescaled"), v)
            consts.append(c)
            v = c.outputs[0]
        inputs[k] = v
    fc = const_op(ctx.fresh_name(f"{reader.name}_channel_scale"), factor.astype(out.type.dt.storage))
    try:
        unscaled = new_op(reader.op_type, ctx.fresh_name(f"{reader.name}_unscaled"), inputs)
        mul = new_op("mul", out.name, {"x": unscaled.outputs[0], "y": fc.outputs[0]})
    except OpError:
        return None  # e.g. a LUT dtype the layer cannot take
    if mul.outputs[0].type != out.type:
        return None  # the moved scale would broadcast the output to another shape
    return (*consts, unscaled, fc, mul)


def reorder(m: LutScale, ctx) -> Optional[Rewrite]:
    new_ops, replace = [], {}
    for reader in m.readers:
        ops = _move_scale(reader, m, ctx)
        if ops is None:
            return None  # all readers move, or none
        new_ops.extend(ops)
        replace[reader.outputs[0].name] = ops[-1].outputs[0]
    return Rewrite(claims=(m.scale_op, *m.readers), new_ops=tuple(new_ops), replace=replace)


PATTERN = Pattern("reorder_lut_per_channel_scale", match_lut_scale, reorder, frozenset({"constexpr_lut_to_dense"}))


# x . (w * s) becomes (x . w) * s and the bias b / s * s: the same sum, rounded in another
# order; the difference scales with the output dtype's epsilon (fp16 rounds w * s itself to
# ~1e-3), so the allowance is 64 epsilons of the largest output (fp32: 1e-5 at least); a
# quantize downstream may then move one step
REASSOCIATION_RTOL = 1e-5
REASSOCIATION_EPS = 64
REASSOCIATION = "the per-channel scale applied after the sum: float rounding of a reordered computation"


@stage("reorder_lut_per_channel_scale", version="1",
       contract=within(1, rtol=REASSOCIATION_RTOL, eps=REASSOCIATION_EPS, why=REASSOCIATION,
                       leaves=no_unreordered_lut_scales))
def reorder_lut_per_channel_scale(program, *, context=DEFAULT_CONTEXT):
    """LUT -> per-channel scale -> linear/matmul/conv becomes LUT -> layer -> mul(scale)."""
    return rewrite_stage(program, (PATTERN,))
