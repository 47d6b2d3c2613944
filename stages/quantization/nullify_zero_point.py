"""nullify_redundant_quantization_zero_point: drop zero points that carry nothing.

Core ML runs quantization fastest without a zero point, and "no zero point"
means zero point 0. Three rewrites, tried on each quantize / dequantize:

1. zero point all 0: rebuild the op without it (exact).
2. const dequantize with zero point all -128 (int8) or all +128 (uint8): shift
   the constant data by 128 into the other 8-bit type and drop the zero point
   (exact: the integers q - zp are unchanged).
3. quantize(zp = +-128) -> dequantize(zp = the same +-128): flip both to the other
   8-bit type without zero points, together (exact: quantize rounds before adding
   the zero point, and shifting the clip range by 128 shifts the result by 128).

Rebuilt ops keep their names, so uses and block outputs are untouched.
"""
from __future__ import annotations

import numpy as np

from ir.construct import const_op
from ir.rewrite import Pattern, Rewrite, rewrite_program
from stages.base import DEFAULT_CONTEXT, stage
from stages.contracts import exact
from stages.quantization._match import (all_equal, claimable_const, const_val, new_const, only_reader,
                                          rebuilt_as)

# zero point -> (the 8-bit type it belongs to, the type that needs no zero point)
FLIP = {-128: ("int8", "uint8"), 128: ("uint8", "int8")}


def _params(op, **changes) -> dict:
    """The op's inputs without its zero point, with changes applied."""
    ins = {k: v for k, v in op.inputs.items() if k != "zero_point"}
    ins.update(changes)
    return ins


def _rebuilt(op, **changes):
    return rebuilt_as(op, op.op_type, _params(op, **changes))


def _same_name_rewrite(claims, new_ops, replaced):
    """Rewrite where each replaced op's output keeps its name (and so every use)."""
    return Rewrite(claims=tuple(claims), new_ops=tuple(new_ops),
                   replace={old.output.name: new.output for old, new in replaced})


# ---- 1. zero point 0 ------------------------------------------------------------

def match_zero(op, ctx):
    if op.op_type in ("quantize", "dequantize") and all_equal(const_val(op.zero_point), 0):
        return op
    return None


def rewrite_zero(op, ctx):
    new = _rebuilt(op)
    return _same_name_rewrite((op,), (new,), ((op, new),))


# ---- 2. const dequantize with zero point +-128 ---------------------------------

def _shift(zp_val):
    """The zero point's +-128 (all elements equal), or None."""
    for zp in FLIP:
        if all_equal(zp_val, zp):
            return zp
    return None


def match_const_dequantize(op, ctx):
    if op.op_type != "dequantize" or op.zero_point is None:
        return None
    zp = _shift(const_val(op.zero_point))
    if zp is None or const_val(op.input) is None or op.input.dtype != FLIP[zp][0]:
        return None
    return op, zp


def rewrite_const_dequantize(m, ctx):
    op, zp = m
    data = op.input
    flipped = (const_val(data).astype(np.int16) - zp).astype(FLIP[zp][1])
    old_const = claimable_const(ctx, data, op)  # removed with op: its name is free again
    const = const_op(old_const.output.name, flipped) if old_const is not None \
        else new_const(ctx, f"{data.name}_{FLIP[zp][1]}", flipped)
    new = _rebuilt(op, input=const.output)
    claims = (op,) + ((old_const,) if old_const is not None else ())
    return _same_name_rewrite(claims, (const, new), ((op, new),))


# ---- 3. quantize(+-128) -> dequantize(+-128) ------------------------------------

def match_pair(op, ctx):
    if op.op_type != "quantize" or op.zero_point is None:
        return None
    zp = _shift(const_val(op.zero_point))
    if zp is None or op.output.dtype != FLIP[zp][0]:
        return None
    dequantize = only_reader(ctx, op.output, "dequantize")
    if dequantize is None or dequantize.zero_point is None or not all_equal(const_val(dequantize.zero_point), zp):
        return None
    return op, dequantize, zp


def rewrite_pair(m, ctx):
    quantize, dequantize, zp = m
    dtype_op = new_const(ctx, f"{quantize.name}_output_dtype", FLIP[zp][1])
    new_q = _rebuilt(quantize, output_dtype=dtype_op.output)
    new_dq = rebuilt_as(dequantize, "dequantize", _params(dequantize, input=new_q.output))
    # the quantize's output changes type: only the new dequantize reads it (matched single reader)
    return Rewrite(claims=(quantize, dequantize), new_ops=(dtype_op, new_q, new_dq),
                   replace={dequantize.output.name: new_dq.output})


# one op gets at most one rewrite per sweep: the pair first, as it claims two ops
PATTERNS = (
    Pattern("nullify_zero_point_quantize_dequantize_128", match_pair, rewrite_pair),
    Pattern("nullify_zero_point_const_dequantize_128", match_const_dequantize, rewrite_const_dequantize),
    Pattern("nullify_zero_point_0", match_zero, rewrite_zero),
)


@stage("nullify_redundant_quantization_zero_point", contract=exact())
def nullify_redundant_quantization_zero_point(program, *, context=DEFAULT_CONTEXT):
    return rewrite_program(program, PATTERNS)
