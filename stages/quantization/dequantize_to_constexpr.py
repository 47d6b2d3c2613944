"""dequantize_to_constexpr: a `dequantize` of constant data becomes a constexpr op.

A dequantize whose input is a const would be folded (and serialized) as a
full-precision tensor; the constexpr form keeps the weight compressed.
Which constexpr op depends on the function's opset, as in coremltools:

- before iOS18: `constexpr_affine_dequantize`, which needs an axis and a
  zero point: a missing axis becomes 0 (a per-tensor scale has no axis of its
  own) and a missing zero point becomes 0 in the data's dtype;
- iOS18 and later: `constexpr_blockwise_shift_scale`, whose scale has the
  data's rank (1 everywhere except along the quantized axis); the offset is
  only given when some zero point is non-zero, and data that fits in 4 bits
  is narrowed to int4 / uint4.

The new op is named `<dequantize name>_affine_dequantized`; when the
dequantize's value is a block output its name is kept so the signature does
not change.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ir.construct import const_op, new_op
from ir.core import Op, ios_version
from ir.dtypes import dtype as lookup_dtype, fits
from ir.rewrite import Pattern, Rewrite
from stages.base import DEFAULT_CONTEXT, stage
from stages.rewriting import rewrite_stage
from stages.contracts import exact
from stages.contracts.postconditions import constexpr_forms_fit_opset

_NARROW = {"int8": "int4", "uint8": "uint4"}  # data dtype -> the 4-bit dtype it may shrink to


def has_blockwise_forms(opset: str) -> bool:
    """iOS18 or later; an opset that is not Core ML's counts as the newest."""
    version = ios_version(opset)
    return version is None or version >= 18


class ConstDequantize(NamedTuple):
    op: Op
    data: np.ndarray
    scale: np.ndarray
    zero_point: Optional[np.ndarray]
    axis: Optional[int]


def _value(var) -> Optional[np.ndarray]:
    return None if var is None else var.val


def match_const_dequantize(op: Op, ctx) -> Optional[ConstDequantize]:
    if op.op_type != "dequantize" or op.input.val is None:
        return None
    params = (op.scale, op.zero_point, op.axis)
    if any(v is not None and v.val is None for v in params):
        return None  # every input must be known for the value to be a constant
    axis = _value(op.axis)
    return ConstDequantize(op, op.input.val, op.scale.val, _value(op.zero_point),
                           None if axis is None else int(axis))


# ---- the two target forms: name -> (op type, inputs as {input name: (value, dtype)}) ----

def affine_form(m: ConstDequantize) -> tuple:
    """iOS16/17 constexpr_affine_dequantize: axis and zero point are required."""
    data_dtype = m.op.input.dtype
    zp = m.zero_point if m.zero_point is not None else np.zeros((), lookup_dtype(data_dtype).storage)
    return "constexpr_affine_dequantize", {
        "quantized_data": (m.data, data_dtype),
        "zero_point": (np.squeeze(zp), data_dtype),
        "scale": (np.squeeze(m.scale), None),
        "axis": (np.int32(0 if m.axis is None else m.axis), None),
    }


def _scale_shape(m: ConstDequantize) -> tuple:
    shape = [1] * m.data.ndim
    if m.axis is not None:
        shape[m.axis] = m.data.shape[m.axis]
    return tuple(shape)


def _narrowed(data: np.ndarray, offset: Optional[np.ndarray], data_dtype: str) -> str:
    small = _NARROW.get(data_dtype)
    if small is None or data.size == 0:
        return data_dtype
    dt = lookup_dtype(small)
    if fits(data, dt) and (offset is None or fits(offset, dt)):
        return small
    return data_dtype


def blockwise_form(m: ConstDequantize) -> tuple:
    """iOS18 constexpr_blockwise_shift_scale: scale (and offset) have the data's rank."""
    shape = _scale_shape(m)
    scale = np.reshape(m.scale, shape)
    offset = None
    if m.zero_point is not None and np.any(m.zero_point):
        offset = np.reshape(np.broadcast_to(m.zero_point, np.shape(m.scale)), shape)
    data_dtype = _narrowed(m.data, offset, m.op.input.dtype)
    inputs = {"data": (m.data, data_dtype), "scale": (scale, None)}
    if offset is not None:
        inputs["offset"] = (offset, data_dtype)
    return "constexpr_blockwise_shift_scale", inputs


def target_form(m: ConstDequantize, opset: str) -> tuple:
    return blockwise_form(m) if has_blockwise_forms(opset) else affine_form(m)


def to_constexpr(m: ConstDequantize, ctx) -> Rewrite:
    old = m.op.outputs[0]
    name = old.name if ctx.is_block_output(old) else ctx.fresh_name(m.op.name + "_affine_dequantized")
    op_type, params = target_form(m, ctx.opset)
    consts = {k: const_op(ctx.fresh_name(f"{name}_{k}"), val, dt) for k, (val, dt) in params.items()}
    new = new_op(op_type, name, {k: c.outputs[0] for k, c in consts.items()})
    return Rewrite(claims=(m.op,), new_ops=(*consts.values(), new), replace={old.name: new.outputs[0]})


PATTERN = Pattern("dequantize_to_constexpr", match_const_dequantize, to_constexpr, frozenset({"dequantize"}))


@stage("dequantize_to_constexpr", version="1", contract=exact(leaves=constexpr_forms_fit_opset))
def dequantize_to_constexpr(program, *, context=DEFAULT_CONTEXT):
    """Every dequantize of constant data becomes its constexpr equivalent."""
    return rewrite_stage(program, (PATTERN,))
