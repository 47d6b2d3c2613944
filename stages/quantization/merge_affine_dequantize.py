"""merge_affine_dequantize_with_consecutive_ops: fold the layout ops that follow
a constexpr_affine_dequantize into its quantized data.

    data -> constexpr_affine_dequantize -> transpose -> expand_dims -> out
becomes
    data' -> constexpr_affine_dequantize -> out      (data' = expand_dims(transpose(data)))

Only a single-consumer chain is folded, and only while the quantized data is
read by this one constexpr. With a per-tensor scale and zero point any of
transpose / reshape / expand_dims / squeeze can be folded; with per-channel
parameters only transpose can, and the channel axis follows the permutation.
The chain stops at a block output; the new constexpr takes the name of the
last folded value, so downstream uses and block outputs keep their names.
"""
from __future__ import annotations

import numpy as np

from ir.construct import const_op
from ir.rewrite import Pattern, Rewrite, rewrite_program
from stages.base import DEFAULT_CONTEXT, stage
from stages.contracts import exact
from stages.quantization._match import (axis_of, claimable_const, const_val, new_const, only_reader,
                                          rebuilt_as)


def _perm(op) -> list:
    rank = op.x.rank
    return [int(p) % rank for p in const_val(op.perm)]


def _to_output_shape(val: np.ndarray, op) -> np.ndarray:
    # reshape / expand_dims / squeeze only move the row-major data into the op's output shape
    return np.reshape(val, op.output.shape)


# how each foldable op transforms the quantized data
FOLD_DATA = {
    "transpose": lambda val, op: np.transpose(val, _perm(op)),
    "reshape": _to_output_shape,
    "expand_dims": _to_output_shape,
    "squeeze": _to_output_shape,
}

# ops that can be folded when scale / zero_point are per channel, and where the axis goes
FOLD_AXIS = {
    "transpose": lambda axis, op: _perm(op).index(axis),
}


def _is_per_tensor(op) -> bool:
    return op.scale.rank == 0 and op.zero_point.rank == 0


def _foldable_chain(op, ctx, foldable) -> tuple:
    """The longest chain op -> a -> b ... of single-reader foldable ops in this block."""
    chain, cursor = [], op
    while True:
        nxt = only_reader(ctx, cursor.output)
        if nxt is None or nxt.op_type not in foldable or nxt.x.name != cursor.output.name:
            return tuple(chain)
        chain.append(nxt)
        cursor = nxt


def match(op, ctx):
    if op.op_type != "constexpr_affine_dequantize":
        return None
    data = op.quantized_data
    if const_val(data) is None or len(ctx.consumers(data)) != 1:
        return None
    per_tensor = _is_per_tensor(op)
    chain = _foldable_chain(op, ctx, FOLD_DATA if per_tensor else FOLD_AXIS)
    return (op, chain, per_tensor) if chain else None


def rewrite(m, ctx):
    op, chain, per_tensor = m
    data = op.quantized_data
    val = const_val(data)
    axis = None if per_tensor else axis_of(op, 0) % data.rank
    for folded in chain:
        val = FOLD_DATA[folded.op_type](val, folded)
        if not per_tensor:
            axis = FOLD_AXIS[folded.op_type](axis, folded)
    name = chain[-1].output.name
    old_data = claimable_const(ctx, data, op)  # removed with op: its name is free again
    data_name = old_data.output.name if old_data is not None else ctx.fresh_name(f"{name}_quantized_data")
    data_op = const_op(data_name, val, data.dtype)
    new_ops = [data_op]
    axis_var = op.axis
    if not per_tensor and axis != axis_of(op, 0) % data.rank:
        axis_op = new_const(ctx, f"{name}_axis", np.int32(axis))
        new_ops.append(axis_op)
        axis_var = axis_op.output
    merged = rebuilt_as(chain[-1], "constexpr_affine_dequantize",
                        {"quantized_data": data_op.output, "zero_point": op.zero_point,
                         "scale": op.scale, "axis": axis_var})
    claims = (op, *chain) + ((old_data,) if old_data is not None else ())
    return Rewrite(claims=claims, new_ops=(*new_ops, merged), replace={name: merged.output})


PATTERNS = (Pattern("merge_affine_dequantize_with_consecutive_ops", match, rewrite),)


@stage("merge_affine_dequantize_with_consecutive_ops", contract=exact())
def merge_affine_dequantize_with_consecutive_ops(program, *, context=DEFAULT_CONTEXT):
    return rewrite_program(program, PATTERNS)
