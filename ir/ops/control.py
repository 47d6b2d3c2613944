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
