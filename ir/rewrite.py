"""The one pattern-rewrite driver every stage shares.

A pattern is a pair of pure functions:

    match(op, ctx)   -> a match value, or None
    rewrite(m, ctx)  -> Rewrite(claims, new_ops, replace)

A sweep walks every block of every function (nested blocks first), offers
each op to each pattern, keeps the rewrites whose claimed ops do not overlap,
and rebuilds each changed block once. Sweeps repeat until nothing matches
(bounded by `max_sweeps`). Each sweep is linear in the size of the program.
When nothing matches, the input object itself is returned.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Optional

from ir.analysis import UseDef, use_def
from ir.core import Block, Function, InvalidProgram, Op, Program, Var, gc_paused


class Pattern(NamedTuple):
    name: str
    match: Callable  # (op, ctx) -> match | None
    rewrite: Callable  # (match, ctx) -> Rewrite | None


@dataclass(frozen=True)
class Rewrite:
    claims: tuple = ()  # ops this rewrite removes
    new_ops: tuple = ()  # ops inserted where the last claimed (or `after`) op stood
    replace: dict = field(default_factory=dict)  # old var name -> new Var, for every later use
    after: Optional[Op] = None  # anchor when nothing is claimed


class RewriteContext:
    """What match / rewrite functions may ask about the function being rewritten."""

    def __init__(self, fn: Function, ud: UseDef, taken: set):
        self.function = fn
        self.opset = fn.opset
        self.ud = ud
        self._taken = taken
        self.block = fn.block  # the block being swept (set by the driver before matching in it)
        self._block_ids = (None, frozenset())
        self._next_suffix: dict = {}

    def producer(self, var: Optional[Var]) -> Optional[Op]:
        return None if var is None else self.ud.producer(var)

    def consumers(self, var: Var) -> tuple:
        return self.ud.consumers_of(var)

    def is_block_output(self, var: Var) -> bool:
        return self.ud.is_block_output(var)

    def single_consumer(self, var: Var) -> Optional[Op]:
        """The only op reading var, when var is read once and is no block output."""
        cs = self.ud.consumers_of(var)
        if len(cs) == 1 and not self.ud.is_block_output(var):
            return cs[0]
        return None

    def in_block(self, op: Op) -> bool:
        """Whether op sits directly in the block being swept (consumers may live in nested blocks)."""
        if self._block_ids[0] is not self.block:
            self._block_ids = (self.block, frozenset(id(o) for o in self.block.ops))
        return id(op) in self._block_ids[1]

    def fresh_name(self, hint: str) -> str:
        # remember where each hint's numbering stopped: rewrites that all ask for the same
        # hint (e.g. an op type) would otherwise rescan name_1, name_2, ... every time
        i = self._next_suffix.get(hint, 0)
        name = hint if i == 0 else f"{hint}_{i}"
        while name in self.ud.names or name in self._taken:
            i += 1
            name = f"{hint}_{i}"
        self._next_suffix[hint] = i + 1
        self._taken.add(name)
        return name


# ---- rebuilding ---------------------------------------------------------------

def _resolve(subst: dict, var: Var) -> Var:
    seen = 0
    while var.name in subst:
        nxt = subst[var.name]
        if nxt is var:  # a new Var that keeps the old name maps to itself
            break
        var = nxt
        seen += 1
        if seen > len(subst):
            raise InvalidProgram(f"replacement cycle through {var.name!r}")
    return var


def rewire(op: Op, subst: dict) -> Op:
    """The op with its inputs (and nested blocks' uses) renamed through subst."""
    if not subst:
        return op
    changed = False
    ins = {}
    for k, v in op.inputs.items():
        if isinstance(v, tuple):
            nv = tuple(_resolve(subst, x) for x in v)
            changed |= any(a is not b for a, b in zip(nv, v))
        else:
            nv = _resolve(subst, v)
            changed |= nv is not v
        ins[k] = nv
    blocks = tuple(rewire_block(b, subst) for b in op.blocks)
    changed |= any(a is not b for a, b in zip(blocks, op.blocks))
    return op.replace(inputs=ins, blocks=blocks) if changed else op


def rewire_block(block: Block, subst: dict) -> Block:
    ops = [rewire(o, subst) for o in block.ops]
    outs = tuple(_resolve(subst, v) for v in block.outputs)
    if all(a is b for a, b in zip(ops, block.ops)) and all(a is b for a, b in zip(outs, block.outputs)):
        return block
    return Block.make(block.inputs, ops, outs)


def _topo_sort(inputs: tuple, ops: list, outer: set) -> list:
    """Stable topological order (Kahn), used only when a rewrite placed an op early."""
    defined = set(outer) | {v.name for v in inputs}
    made = {v.name: i for i, op in enumerate(ops) for v in op.outputs}
    deps = [{made[n] for n in _free_names(op) if n in made and n not in defined} for op in ops]
    users: dict = {}
    for i, ds in enumerate(deps):
        for d in ds:
            users.setdefault(d, []).append(i)
    pending = [len(ds) for ds in deps]
    ready = [i for i, n in enumerate(pending) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(ops[i])
        for u in users.get(i, ()):
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(ops):
        raise InvalidProgram("rewrite left a cycle among ops")
    return order


def _free_names(op: Op) -> Iterable[str]:
    """Names an op reads from its surroundings (nested blocks' own values excluded)."""
    for v in op.input_vars():
        yield v.name
    for b in op.blocks:
        local = {v.name for v in b.inputs} | {v.name for o in b.ops for v in o.outputs}
        for inner in b.ops:
            yield from (n for n in _free_names(inner) if n not in local)
        yield from (v.name for v in b.outputs if v.name not in local)


def _apply(block: Block, rewrites: list, outer: set) -> Block:
    subst: dict = {}
    removed = set()
    insert_at: dict = {}
    position = {id(op): i for i, op in enumerate(block.ops)}
    for rw in rewrites:
        subst.update(rw.replace)
        removed.update(id(o) for o in rw.claims)
        anchors = [position[id(o)] for o in (*rw.claims, rw.after) if o is not None and id(o) in position]
        insert_at.setdefault(max(anchors), []).extend(rw.new_ops)
    ops, defined = [], set(outer) | {v.name for v in block.inputs}
    in_order = True

    def place(op: Op) -> None:
        nonlocal in_order
        new = rewire(op, subst)
        in_order = in_order and all(n in defined for n in _free_names(new))
        ops.append(new)
        defined.update(v.name for v in new.outputs)

    for i, op in enumerate(block.ops):
        if id(op) not in removed:
            place(op)
        for new_op in insert_at.get(i, ()):
            place(new_op)
    if not in_order:
        ops = _topo_sort(block.inputs, ops, outer)
    return Block.make(block.inputs, ops, tuple(_resolve(subst, v) for v in block.outputs))


# ---- the sweep ----------------------------------------------------------------

def _sweep_block(block: Block, patterns, ctx: RewriteContext, outer: set) -> Block:
    inner_outer = outer | {v.name for v in block.inputs} | {v.name for op in block.ops for v in op.outputs}
    ops = list(block.ops)
    nested_changed = False
    for i, op in enumerate(ops):
        if op.blocks:
            nb = tuple(_sweep_block(b, patterns, ctx, inner_outer) for b in op.blocks)
            if any(a is not b for a, b in zip(nb, op.blocks)):
                ops[i] = op.replace(blocks=nb)
                nested_changed = True
    if nested_changed:
        block = Block.make(block.inputs, ops, block.outputs)
    claimed: set = set()
    rewrites = []
    ctx.block = block
    for op in block.ops:
        if id(op) in claimed:
            continue
        for pat in patterns:
            m = pat.match(op, ctx)
            if m is None:
                continue
            rw = pat.rewrite(m, ctx)
            if rw is None or any(id(o) in claimed for o in rw.claims):
                continue
            claimed.update(id(o) for o in rw.claims)
            rewrites.append(rw)
            break
    return _apply(block, rewrites, outer) if rewrites else block


def sweep_function(fn: Function, patterns) -> Function:
    ctx = RewriteContext(fn, use_def(fn), set())
    block = _sweep_block(fn.block, patterns, ctx, set())
    return fn if block is fn.block else fn.replace(block=block)


def map_functions(program: Program, transform: Callable) -> Program:
    """Apply Function -> Function to every function; the same program when none changed."""
    # IR nodes are immutable and acyclic, so reference counting frees them, while each full
    # collection would traverse the whole (large) program and make a pass superlinear in its size
    with gc_paused():
        new = {name: transform(f) for name, f in program.functions.items()}
    if all(new[n] is program.functions[n] for n in new):
        return program
    return Program.make(new, program.attrs)


def rewrite_program(program: Program, patterns, max_sweeps: int = 64) -> Program:
    """Sweep until no pattern matches (at most max_sweeps sweeps per function)."""
    patterns = tuple(patterns)

    def to_fixed_point(fn: Function) -> Function:
        for _ in range(max_sweeps):
            new = sweep_function(fn, patterns)
            if new is fn:
                break
            fn = new
        return fn

    return map_functions(program, to_fixed_point)


def replace_all_uses(fn: Function, subst: dict) -> Function:
    """Rename uses of vars everywhere in a function (a helper for whole-function stages)."""
    block = rewire_block(fn.block, subst)
    return fn if block is fn.block else fn.replace(block=block)


__all__ = ["Pattern", "Rewrite", "RewriteContext", "rewrite_program", "sweep_function",
           "map_functions", "rewire", "rewire_block", "replace_all_uses"]
