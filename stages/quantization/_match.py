"""Small matching helpers shared by the quantization patterns.

They answer questions a match function asks about one op in the block the
driver is sweeping (`ctx.block`): is this value a constant, who is its only
reader, is that reader in this block (a rewrite can only claim ops of the
block being rebuilt), and they make the consts a rewrite needs.
(Append new helpers at the end; other stages import these.)
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ir.construct import const_op, new_op
from ir.core import Op, Var


def const_val(var: Optional[Var]) -> Optional[np.ndarray]:
    """The value of a build-time constant, or None (absent input or runtime value)."""
    return None if var is None else var.val


def only_reader(ctx, var: Var, op_type: Optional[str] = None) -> Optional[Op]:
    """The single op reading var, when that op is in this block, var is no block
    output and (if given) the op has type op_type; else None."""
    reader = ctx.single_consumer(var)
    if reader is None or not ctx.in_block(reader):
        return None
    if op_type is not None and reader.op_type != op_type:
        return None
    return reader


def claimable_const(ctx, var: Var, reader: Op) -> Optional[Op]:
    """The const op producing var when the rewrite may remove it with `reader`:
    it is in this block and reader is its only user."""
    producer = ctx.producer(var)
    if producer is None or producer.op_type != "const" or not ctx.in_block(producer):
        return None
    users = ctx.consumers(var)
    if len(users) != 1 or users[0] is not reader or ctx.is_block_output(var):
        return None
    return producer


def new_const(ctx, hint: str, value, dtype: Optional[str] = None) -> Op:
    """A const op with a fresh name derived from hint."""
    return const_op(ctx.fresh_name(hint), value, dtype)


def all_equal(val: Optional[np.ndarray], x) -> bool:
    """Every element of a known constant equals x (False for unknown values)."""
    if val is None:
        return False
    if getattr(val, "ndim", None) == 0:  # the common case, without np.all's overhead (~3 us)
        return bool(val == x)
    return bool(np.all(np.asarray(val) == x))


def axis_of(op: Op, default=None):
    """The op's const `axis` input as an int, or default when absent."""
    v = const_val(op.get("axis"))
    return default if v is None else int(v)


def same_const(a: Optional[Var], b: Optional[Var]) -> bool:
    """Both absent, or both constants whose values are elementwise equal."""
    if a is None or b is None:
        return a is None and b is None
    va, vb = const_val(a), const_val(b)
    if va is None or vb is None:
        return a is b
    if va.ndim == 0 and vb.ndim == 0:  # the common case, without np.all's overhead
        return bool(va == vb)
    try:  # compared as the seed does: elementwise, broadcasting a scalar against a vector
        return bool(np.all(np.asarray(va) == np.asarray(vb)))
    except ValueError:  # shapes that do not broadcast are not the same constant
        return False


def rebuilt_as(like: Op, op_type: str, inputs: dict) -> Op:
    """A new op_type op with `like`'s op name and output names (types inferred), so that
    every use of like's outputs, block outputs included, reads the new op unchanged."""
    made = new_op(op_type, like.name, inputs)
    outs = tuple(Var(old.name, new.type) for old, new in zip(like.outputs, made.outputs))
    return made.replace(outputs=outs)
