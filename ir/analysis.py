"""Derived indices over a function: who produces a value, who consumes it.

They are pure functions of an immutable Function, memoized by identity in a
small LRU (never stored on the nodes as mutable back-pointers).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from ir.core import Function, Op, Var


@dataclass(frozen=True)
class UseDef:
    producers: dict  # var name -> Op (absent for block inputs)
    consumers: dict  # var name -> tuple[Op], ops of any block that read it
    block_outputs: frozenset  # names of vars returned by any block of the function
    names: frozenset  # every var and op name in the function

    def producer(self, var: Var) -> Optional[Op]:
        return self.producers.get(var.name)

    def consumers_of(self, var: Var) -> tuple:
        return self.consumers.get(var.name, ())

    def is_block_output(self, var: Var) -> bool:
        return var.name in self.block_outputs


def _index(fn: Function) -> UseDef:
    producers, consumers, outs, names = {}, {}, set(), set()

    def visit(block):
        outs.update(v.name for v in block.outputs)
        names.update(v.name for v in block.inputs)
        for op in block.ops:
            names.add(op.name)
            for v in op.input_vars():
                consumers.setdefault(v.name, []).append(op)
            for v in op.outputs:
                producers[v.name] = op
                names.add(v.name)
            for b in op.blocks:
                visit(b)

    visit(fn.block)
    return UseDef(producers, {k: tuple(v) for k, v in consumers.items()}, frozenset(outs), frozenset(names))


class _IdentityLRU:
    """Cache keyed by object identity; holds the key so the id stays valid."""

    def __init__(self, size: int = 64):
        self.size = size
        self.items: OrderedDict = OrderedDict()

    def get(self, obj, compute):
        key = id(obj)
        hit = self.items.get(key)
        if hit is not None and hit[0] is obj:
            self.items.move_to_end(key)
            return hit[1]
        val = compute(obj)
        self.items[key] = (obj, val)
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return val


_USE_DEF = _IdentityLRU()


def use_def(fn: Function) -> UseDef:
    return _USE_DEF.get(fn, _index)


# ---- liveness -------------------------------------------------------------------

def _dead_in(block, dead: set) -> set:
    """Walk a block last op to first; record dead ops in `dead`; return the names the
    kept ops (and the block's outputs) read. Ops inside a dead op are not visited:
    they go with it."""
    needed = {v.name for v in block.outputs}
    for op in reversed(block.ops):
        outs = op.outputs
        # (single-output ops, the common case, without a generator per op)
        live = outs[0].name in needed if len(outs) == 1 else any(v.name in needed for v in outs)
        if not live:
            dead.add(id(op))
            continue
        for b in op.blocks:
            needed |= _dead_in(b, dead)
        for v in op.inputs.values():
            if v.__class__ is tuple:
                needed.update(x.name for x in v)
            else:
                needed.add(v.name)
    return needed


def dead_ops(fn: Function) -> frozenset:
    """ids of the ops whose results nothing live reads (liveness flows backwards, so one
    reverse pass decides a dead chain of any length)."""
    dead: set = set()
    _dead_in(fn.block, dead)
    return frozenset(dead)
