"""canonicalize_quantized_lut_pattern: one order for quantized-LUT weights.

A LUT whose entries are themselves quantized (e.g. int8) can be written two
ways, equal for per-tensor and per-channel scales:

    dequantize first:   lut(int8) -> blockwise_shift_scale -> lut(fp16) -> lut_to_dense
    depalettize first:  lut(int8) -> lut_to_dense -> dense(int8) -> blockwise_shift_scale

The stage rewrites the second form into the first, as coremltools does. The
scale and offset of the dense weight gain two trailing unit axes to apply to
the LUT ([blocks..., entries, vector]); when the scale has more blocks than
the LUT along some axis, the LUT is repeated along it (so it must be a
constant, and the scale's block count a multiple of the LUT's).

Conditions: the dense LUT output feeds only the shift-scale op, as its data.
Refinements over coremltools: the iOS16 flat LUT form is left alone (its LUT
has no block axes), the LUT output must not be a block output (it
disappears), the scale / offset must be constants (they are reshaped), the
LUT blocks must fit the scale blocks (otherwise no per-LUT scale exists), and
vector_axis is carried over.

Names: an op keeps the name of the op whose place it takes (the new
shift-scale takes the old LUT op's, the new LUT op the old shift-scale's)
unless that name merely spells the op type (an auto-generated name), in
which case a fresh one is made; the final value keeps its name when it is a
block output.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ir.construct import const_op, new_op
from ir.core import Op
from ir.ops import OpError
from ir.rewrite import Pattern, Rewrite, rewrite_program
from stages.base import DEFAULT_CONTEXT, stage
from stages.contracts import exact
from stages.quantization._match import only_reader


class LutThenScale(NamedTuple):
    lut: Op  # constexpr_lut_to_dense
    scale: Op  # constexpr_blockwise_shift_scale reading the dense LUT output


def match_lut_then_scale(op: Op, ctx) -> Optional[LutThenScale]:
    if op.op_type != "constexpr_lut_to_dense" or op.shape is not None:
        return None
    dense = op.outputs[0]
    scale_op = only_reader(ctx, dense, "constexpr_blockwise_shift_scale")
    if scale_op is None or scale_op.data is not dense or scale_op.scale.val is None:
        return None
    if scale_op.offset is not None and scale_op.offset.val is None:
        return None
    return LutThenScale(op, scale_op)


def lut_for_scale(lut, scale_shape: tuple):
    """The LUT (a Var, or a repeated array) whose blocks match scale_shape; None if impossible."""
    if all(d == 1 for d in scale_shape):
        return lut
    table = lut.val
    if table is None:
        return None  # a computed LUT cannot be repeated here
    for axis, (s, n) in enumerate(zip(scale_shape, table.shape)):
        if s > n:
            if s % n:
                return None
            table = np.repeat(table, s // n, axis=axis)
    return table


def _keep_name(op: Op, ctx, new_type: str, must_keep: bool = False) -> str:
    if must_keep or op.op_type not in op.name:
        return op.name
    return ctx.fresh_name(new_type)


def dequantize_first(m: LutThenScale, ctx) -> Optional[Rewrite]:
    scale_var, offset_var, lut_var = m.scale.scale, m.scale.offset, m.lut.lut
    shape = tuple(scale_var.shape) + (1, 1)
    lut = lut_for_scale(lut_var, shape)
    if lut is None:
        return None
    first_name = _keep_name(m.lut, ctx, "constexpr_blockwise_shift_scale")
    consts = []

    def const_like(var, value, role):
        """A const holding value with var's dtype (sub-byte types included)."""
        c = const_op(ctx.fresh_name(f"{first_name}_{role}"), value, var.dtype)
        consts.append(c)
        return c.outputs[0]

    inputs = {"data": lut if lut is lut_var else const_like(lut_var, lut, "lut"),
              "scale": const_like(scale_var, scale_var.val.reshape(shape), "scale"),
              "offset": None if offset_var is None else const_like(offset_var, offset_var.val.reshape(shape), "offset")}
    out = m.scale.outputs[0]
    last_name = _keep_name(m.scale, ctx, "constexpr_lut_to_dense", ctx.is_block_output(out))
    try:
        first = new_op("constexpr_blockwise_shift_scale", first_name, inputs)
        last = new_op("constexpr_lut_to_dense", last_name,
                      {"indices": m.lut.indices, "lut": first.outputs[0], "vector_axis": m.lut.vector_axis})
    except OpError:
        return None  # the LUT blocks do not line up with the scale blocks
    return Rewrite(claims=(m.lut, m.scale), new_ops=(*consts, first, last), replace={out.name: last.outputs[0]})


PATTERN = Pattern("canonicalize_quantized_lut_pattern", match_lut_then_scale, dequantize_first)


@stage("canonicalize_quantized_lut_pattern", version="1", contract=exact())
def canonicalize_quantized_lut_pattern(program, *, context=DEFAULT_CONTEXT):
    """lut_to_dense -> blockwise_shift_scale becomes blockwise_shift_scale(LUT) -> lut_to_dense."""
    return rewrite_program(program, (PATTERN,))
