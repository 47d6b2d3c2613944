"""distributive_quantized_binary_op_scale_normalization.

A quantized add / sub reads two dequantized operands and feeds a quantize,
optionally through a relu:

    dequantize(x, s_x) -|
                        |-> add|sub (-> relu) -> quantize(s_z)
    dequantize(y, s_y) -|

Since both ops distribute over a positive factor,
    s_x*x' + s_y*y' = s_y * ((s_x/s_y)*x' + 1*y'),
dividing every scale by a scalar s_y gives the same quantized result with
s_y = 1, which a backend can skip. When only s_x is a scalar, x and y swap
roles. The stage refuses when s_y is a vector (broadcasting the division is
not worth it), when s_x/s_y or s_z/s_y would overflow or underflow fp16, or
when an fp16 chain's normalized operands (or their sum) could overflow it,
and when any value of the chain but z (dequantizes included) is a block output.

The replaced dequantizes are new ops used only by the binary op; the old
ones stay for their other readers (dead_code_elimination removes the rest).
The normalized quantize keeps the old quantize's name. A chain whose divisor
already is 1 is left alone: rewriting it would rebuild the same values, and
this keeps the stage idempotent.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ir.construct import const_op, new_op
from ir.core import Op
from ir.dtypes import dtype
from ir.rewrite import Pattern, Rewrite
from stages.base import DEFAULT_CONTEXT, stage
from stages.rewriting import rewrite_stage
from stages.contracts import no_unnormalized_binary_ops, within
from stages.quantization._match import only_reader

DISTRIBUTIVE_BINARY_OPS = frozenset({"add", "sub"})
FP16_MAX = 65504.0
FP16_TINY = float(np.nextafter(np.float16(0), np.float16(1)))  # smallest fp16 subnormal


class Chain(NamedTuple):
    op: Op  # add / sub
    tail: Optional[Op]  # relu, when fused
    dq_x: Op
    dq_y: Op
    quantize: Op


def match_chain(op: Op, ctx) -> Optional[Chain]:
    if op.op_type not in DISTRIBUTIVE_BINARY_OPS:
        return None
    dq_x, dq_y = ctx.producer(op.x), ctx.producer(op.y)
    if dq_x is None or dq_y is None or dq_x.op_type != "dequantize" or dq_y.op_type != "dequantize":
        return None
    tail = only_reader(ctx, op.outputs[0], "relu")
    quantize = only_reader(ctx, (tail or op).outputs[0], "quantize")
    if quantize is None:
        return None
    inner = (dq_x, dq_y, op, tail)
    if any(ctx.is_block_output(o.outputs[0]) for o in inner if o is not None):
        return None  # only the quantized result z is conserved
    return Chain(op, tail, dq_x, dq_y, quantize)


# ---- the arithmetic -----------------------------------------------------------

def _fp16_unsafe(x: np.ndarray) -> bool:
    a = np.abs(np.asarray(x, dtype=np.float32))
    return bool(np.max(a) > FP16_MAX or np.min(a) < FP16_TINY)


def divide_by_y(dq_x: Op, dq_y: Op, quantize: Op) -> Optional[tuple]:
    """(s_x/s_y, s_z/s_y) in fp32, or None when s_y is a vector or fp16 cannot hold them."""
    if dq_y.axis is not None:
        return None
    s_y = np.float32(dq_y.scale.val)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        new_s_x = np.asarray(dq_x.scale.val, np.float32) / s_y
        new_s_z = np.asarray(quantize.scale.val, np.float32) / s_y
    if _fp16_unsafe(new_s_x) or _fp16_unsafe(new_s_z) or _fp16_sum_overflows(dq_x, dq_y, new_s_x):
        return None
    return new_s_x, new_s_z


def _code_span(dq: Op) -> int:
    """The largest |q - zero_point| the dequantize's integer input can hold (its dtype's width)."""
    dt = dtype(dq.input.dtype)
    return dt.max - dt.min


def _fp16_sum_overflows(dq_x: Op, dq_y: Op, new_s_x: np.ndarray) -> bool:
    """An fp16 chain whose normalized operands or their sum could leave fp16's range: the
    scales fit, yet x * s_x/s_y may not (x = 100, s_x/s_y = 6144 is inf in fp16), and an inf
    operand turns z into a clipped code where the original was exact."""
    if np.asarray(dq_x.scale.val).dtype != np.float16:
        return False
    biggest = _code_span(dq_x) * float(np.max(np.abs(new_s_x))) + _code_span(dq_y)
    return biggest > FP16_MAX


def plan(chain: Chain) -> Optional[tuple]:
    """(dequantize kept as x, dequantize normalized to 1, new s_x, new s_z), trying y then x."""
    for dq_x, dq_y in ((chain.dq_x, chain.dq_y), (chain.dq_y, chain.dq_x)):
        scales = divide_by_y(dq_x, dq_y, chain.quantize)
        if scales is not None:
            return (dq_x, dq_y, *scales)
    return None


def _already_normalized(dq_y: Op) -> bool:
    return bool(np.all(np.asarray(dq_y.scale.val) == 1))


# ---- the rewrite --------------------------------------------------------------

def _dequantize_with_scale(dq: Op, scale: np.ndarray, ctx) -> tuple:
    c = const_op(ctx.fresh_name(f"{dq.name}_normalized_scale"),
                 np.asarray(scale).astype(dq.scale.val.dtype))
    new = new_op("dequantize", ctx.fresh_name(f"{dq.name}_normalized"),
                 {"input": dq.input, "scale": c.outputs[0], "zero_point": dq.zero_point, "axis": dq.axis})
    return c, new


def normalize(chain: Chain, ctx) -> Optional[Rewrite]:
    planned = plan(chain)
    if planned is None:
        return None
    dq_x, dq_y, new_s_x, new_s_z = planned
    if _already_normalized(dq_y):
        return None
    cx, new_x = _dequantize_with_scale(dq_x, new_s_x, ctx)
    cy, new_y = _dequantize_with_scale(dq_y, np.ones((), np.float32), ctx)
    renamed = {dq_x.outputs[0].name: new_x.outputs[0], dq_y.outputs[0].name: new_y.outputs[0]}
    op = chain.op.replace(inputs={k: renamed[v.name] for k, v in chain.op.inputs.items()})
    q = chain.quantize
    cz = const_op(ctx.fresh_name(f"{q.name}_normalized_scale"), new_s_z.astype(q.scale.val.dtype))
    new_q = new_op("quantize", q.name, {**dict(q.inputs), "scale": cz.outputs[0]})
    tail = () if chain.tail is None else (chain.tail,)
    claims = (chain.op, *tail, q)
    # the chain is single-consumer up to the quantize, so it moves as a whole to the quantize's place
    return Rewrite(claims=claims, new_ops=(cx, new_x, cy, new_y, op, *tail, cz, new_q),
                   replace={q.outputs[0].name: new_q.outputs[0]})


PATTERN = Pattern("distributive_quantized_binary_op_scale_normalization", match_chain, normalize,
                  DISTRIBUTIVE_BINARY_OPS)


@stage("distributive_quantized_binary_op_scale_normalization", version="1",
       contract=within(1, why="s_x/s_y and s_z/s_y are rounded: the quantized result may move one step",
                       leaves=no_unnormalized_binary_ops))
def distributive_quantized_binary_op_scale_normalization(program, *, context=DEFAULT_CONTEXT):
    """Normalize the scalar input scale of quantized add / sub (+ relu) to 1."""
    return rewrite_stage(program, (PATTERN,))
