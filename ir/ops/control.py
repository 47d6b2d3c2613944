"""const, and ops that own nested blocks."""
from __future__ import annotations

import numpy as np

from ir.dtypes import from_numpy
from ir.ops.registry import In, OpError, op, register, tt


def const_type(attrs):
    val = attrs["val"]
    name = attrs.get("dtype") or from_numpy(val).name
    return tt(name, val.shape)


def _const_infer(ins, attrs):
    if "val" not in attrs:
        raise OpError("const: missing attribute 'val'")
    return [const_type(attrs)]


register("const", [], _const_infer, lambda v, ctx: [ctx.attrs["val"]],
         doc="a constant tensor: attrs val (read-only array) and, for sub-byte data, dtype")


def _cond_infer(ins, attrs):
    if ins["pred"].dtype != "bool" or ins["pred"].rank != 0:
        raise OpError("cond: pred must be a scalar bool")
    return None  # outputs are the blocks' outputs: the builder / validator read them


@op("cond", [In("pred")], _cond_infer, n_blocks=2)
def _cond(v, ctx):
    """run blocks[0] when pred is true, else blocks[1]; both return the same types"""
    block = ctx.op.blocks[0 if bool(np.asarray(v["pred"])) else 1]
    return list(ctx.run_block(block, ()))


def _while_infer(ins, attrs):
    loop_vars = ins["loop_vars"]
    if not loop_vars:
        raise OpError("while_loop: needs at least one loop variable")
    return [v.type for v in loop_vars]  # the loop variables' values after the last iteration


def _truth(value) -> bool:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype != np.bool_:
        raise OpError(f"while_loop: the condition block must return one bool, got {arr.dtype}{list(arr.shape)}")
    return bool(arr.reshape(-1)[0])


@op("while_loop", [In("loop_vars", variadic=True)], _while_infer, n_blocks=2)
def _while_loop(v, ctx):
    """MIL while_loop: blocks[0] (the condition) and blocks[1] (the body) both take the loop
    variables as their inputs; while the condition returns true, the body's outputs become the
    next loop variables; the op returns the loop variables when the condition turns false"""
    cond, body = ctx.op.blocks
    state = tuple(v["loop_vars"])
    while _truth(ctx.run_block(cond, state)[0]):
        state = tuple(ctx.run_block(body, state))
    return list(state)
