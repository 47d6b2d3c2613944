"""Derived indices over a function: who produces a value, who consumes it.

They are pure functions of an immutable Function, memoized by identity in a
small LRU (never stored on the nodes as mutable back-pointers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ir.core import Function, Op, Var
from ir.lru import LRU


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


# keyed by the function's identity; the entry holds the function, so its id stays valid
_USE_DEF = LRU(64)


def use_def(fn: Function) -> UseDef:
    return _USE_DEF.get(id(fn), lambda: (fn, _index(fn)), valid=lambda hit: hit[0] is fn)[1]


# ---- liveness -------------------------------------------------------------------

def _dead_in(block, dead: list, kept: Optional[list] = None) -> set:
    """Walk a block last op to first; append the dead ops to `dead` (and the live
    ops, last first, to `kept` when given); return the names the block reads from its
    surroundings (its own inputs included). Ops inside a dead op are not visited: they go
    with it. A value is dropped from `needed` at its producer (SSA: nothing before it
    reads it), so the set holds only the values live across the current op: its size
    follows the graph's width, not its length, and large graphs stay as cheap per op."""
    needed = {v.name for v in block.outputs}
    discard, add = needed.discard, needed.add
    for op in reversed(block.ops):
        outs = op.outputs
        # (single-output ops, the common case, without a generator per op)
        if len(outs) == 1:
            name = outs[0].name
            if name not in needed:
                dead.append(op)
                continue
            discard(name)
        elif any(v.name in needed for v in outs):
            for v in outs:
                discard(v.name)
        else:
            dead.append(op)
            continue
        if kept is not None:
            kept.append(op)
        for b in op.blocks:
            needed |= _dead_in(b, dead)
        for v in op.inputs.values():
            if v.__class__ is tuple:
                needed.update(x.name for x in v)
            else:
                add(v.name)
    return needed


def dead_ops(fn: Function) -> frozenset:
    """ids of the ops whose results nothing live reads (liveness flows backwards, so one
    reverse pass decides a dead chain of any length)."""
    dead: list = []
    _dead_in(fn.block, dead)
    return frozenset(map(id, dead))


def live_ops(block) -> tuple:
    """(the ops of `block` that stay after removing its dead ones, in block order; how many
    were dead). The same reverse pass as `dead_ops`, for a block without nested blocks:
    its ops are listed directly instead of going through a set of dead ids."""
    dead: list = []
    kept: list = []
    _dead_in(block, dead, kept)
    kept.reverse()
    return kept, len(dead)
