"""The one pattern-rewrite driver every stage shares.

A pattern is a pair of pure functions (plus, optionally, the op types its match
can accept):

    match(op, ctx)   -> a match value, or None
    rewrite(m, ctx)  -> Rewrite(claims, new_ops, replace), or None (declined)

Contract (what every caller may rely on):

- Sweeps. A sweep offers ops, in block order, to each pattern in turn; the
  first pattern whose match and rewrite both succeed claims the ops its rewrite
  names, and an op already claimed in this sweep is offered no further; a
  rewrite whose claims overlap an earlier one's is dropped and its op offered
  again next sweep. Every match of a sweep sees the program as it was when the
  sweep began; the sweep's rewrites are then applied together. Sweeps repeat
  until one changes nothing (`rewrite_program`, at most `max_sweeps`, through
  `ir.fixpoint.fixed_point`: stopping at the cap warns FixedPointNotReached)
  or run once (`sweep_function`).
- Incremental. The first sweep offers the ops whose type some pattern accepts
  (`Pattern.op_types`; None: any op). Later sweeps offer only the ops whose
  match could now answer differently: new ops, ops whose inputs were renamed,
  ops whose match was dropped for a claim conflict, and every op whose match or
  rewrite asked the context (producer, consumers, single_consumer,
  is_block_output) about a value a rewrite then touched. So a match may depend
  only on its op and on what it asks the context; a pattern that reads
  `ctx.block`, `ctx.function` or `ctx.ud` directly gets every op offered again
  the next sweep. The use-def index is built once, on first use, and updated by
  each sweep's rewrites; the op list is rebuilt by copying the untouched spans
  between edits (few edits) or by one pass that keeps each untouched op object
  as it is (many edits): only ops reading a replaced value are rewired and
  checked for order. Functions holding nested blocks (cond / loop bodies) are
  swept whole each time, nested blocks first, as they need block-scoped
  placement (the driver of the seed stages before the incremental one).
- Pure and deterministic: inputs are never mutated; the same program and
  patterns give the same result; when nothing matched, the input object itself
  is returned.
- Counted: `rewrite_program_counted` also returns, per pattern name,
  {"matched": sites where match() returned a value, "rewritten": rewrites
  applied}, summed over sweeps (a declined rewrite or a claim conflict counts as
  matched, not rewritten).
"""
from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from typing import Callable, Iterable, Mapping, NamedTuple, Optional

from pyrsistent import PMap, pmap

from ir.analysis import use_def
from ir.core import EMPTY_MAP, Block, Function, InvalidProgram, Op, Program, Var, gc_paused
from ir.fixpoint import fixed_point


class Pattern(NamedTuple):
    name: str
    match: Callable  # (op, ctx) -> match | None
    rewrite: Callable  # (match, ctx) -> Rewrite | None
    op_types: Optional[frozenset] = None  # the op types match() can accept; None: any op


class Rewrite(NamedTuple):
    """What a rewrite does (a tuple: one is made per rewritten site, and a NamedTuple is
    the cheapest immutable record)."""
    claims: tuple = ()  # ops this rewrite removes
    new_ops: tuple = ()  # ops inserted where the last claimed (or `after`) op stood
    replace: Mapping = EMPTY_MAP  # old var name -> new Var, for every later use
    after: Optional[Op] = None  # anchor when nothing is claimed


class RewriteContext:
    """What match / rewrite functions may ask about the function being rewritten."""

    def __init__(self, fn: Function, ud, taken: set, block: Optional[Block] = None):
        self._function = fn
        self.opset = fn.opset
        self._ud = ud
        self._taken = taken
        self._block = fn.block if block is None else block  # the block being swept
        self._block_ids = (None, frozenset())
        self._next_suffix: dict = {}

    # what the driver sets; a subclass may build them lazily
    @property
    def function(self) -> Function:
        return self._function

    @property
    def block(self) -> Block:
        return self._block

    @block.setter
    def block(self, block: Block) -> None:
        self._block = block

    @property
    def ud(self):
        return self._ud

    def producer(self, var: Optional[Var]) -> Optional[Op]:
        return None if var is None else self._ud.producer(var)

    def consumers(self, var: Var) -> tuple:
        return self._ud.consumers_of(var)

    def is_block_output(self, var: Var) -> bool:
        return self._ud.is_block_output(var)

    def single_consumer(self, var: Var) -> Optional[Op]:
        """The only op reading var, when var is read once and is no block output."""
        cs = self.consumers(var)
        if len(cs) == 1 and not self.is_block_output(var):
            return cs[0]
        return None

    def in_block(self, op: Op) -> bool:
        """Whether op sits directly in the block being swept (consumers may live in nested blocks)."""
        if self._block_ids[0] is not self._block:
            self._block_ids = (self._block, frozenset(id(o) for o in self._block.ops))
        return id(op) in self._block_ids[1]

    def _name_taken(self, name: str) -> bool:
        return name in self._ud.names

    def fresh_name(self, hint: str) -> str:
        # remember where each hint's numbering stopped: rewrites that all ask for the same
        # hint (e.g. an op type) would otherwise rescan name_1, name_2, ... every time
        i = self._next_suffix.get(hint, 0)
        name = hint if i == 0 else f"{hint}_{i}"
        while self._name_taken(name) or name in self._taken:
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


# ---- counting -------------------------------------------------------------------

def _new_counts(patterns) -> dict:
    return {p.name: [0, 0] for p in patterns}


def _frozen_counts(counts: dict):
    # (pmaps built directly: pyrsistent's recursive freeze was a fixed cost per stage call
    # large enough to show in the per-op figures of small graphs)
    return pmap({name: pmap({"matched": m, "rewritten": r}) for name, (m, r) in counts.items()})


def merge_counts(*many):
    """Per-pattern counts summed (what a stage reports when it runs the driver several times)."""
    if len(many) == 1 and isinstance(many[0], PMap):
        return many[0]  # already frozen counts: their sum is themselves
    total: dict = {}
    for counts in many:
        for name, c in counts.items():
            m, r = total.get(name, (0, 0))
            total[name] = (m + c["matched"], r + c["rewritten"])
    return _frozen_counts(total)


def _by_op_type(patterns, counts: dict) -> tuple:
    """(op type -> what to try on it, in pattern order; what to try on any other op type),
    each entry (match, rewrite, the pattern's [matched, rewritten] counter)."""
    def entry(p):
        return (p.match, p.rewrite, counts[p.name])
    anyop = tuple(entry(p) for p in patterns if p.op_types is None)
    types = {t for p in patterns if p.op_types is not None for t in p.op_types}
    table = {t: tuple(entry(p) for p in patterns if p.op_types is None or t in p.op_types) for t in sorted(types)}
    return table, anyop


def _offer(ops, table: dict, anyop: tuple, ctx) -> tuple:
    """One sweep's matching: ([(op, rewrite)] in order, [ops dropped for a claim conflict])."""
    claimed: set = set()
    claim = claimed.add
    rewrites, retry = [], []
    to_try = table.get
    for op in ops:
        pats = to_try(op.op_type, anyop)
        if not pats or id(op) in claimed:
            continue
        ctx._current = op
        for match, rewrite, counter in pats:
            m = match(op, ctx)
            if m is None:
                continue
            counter[0] += 1
            rw = rewrite(m, ctx)
            if rw is None:
                continue
            claims = rw.claims
            if len(claims) == 1:  # the common case, without building a list
                k = id(claims[0])
                if k in claimed:
                    retry.append(op)
                    continue
                claim(k)
            elif claims:
                ids = [id(o) for o in claims]
                if not claimed.isdisjoint(ids):
                    retry.append(op)
                    continue
                claimed.update(ids)
            rewrites.append((op, rw))
            counter[1] += 1
            break
    return rewrites, retry


# ---- functions holding nested blocks: whole sweeps, nested blocks first ----------------

def _sweep_block(block: Block, table, anyop, ctx: RewriteContext, outer: set) -> Block:
    inner_outer = outer | {v.name for v in block.inputs} | {v.name for op in block.ops for v in op.outputs}
    ops = list(block.ops)
    nested_changed = False
    for i, op in enumerate(ops):
        if op.blocks:
            nb = tuple(_sweep_block(b, table, anyop, ctx, inner_outer) for b in op.blocks)
            if any(a is not b for a, b in zip(nb, op.blocks)):
                ops[i] = op.replace(blocks=nb)
                nested_changed = True
    if nested_changed:
        block = Block.make(block.inputs, ops, block.outputs)
    ctx.block = block
    rewrites, _ = _offer(block.ops, table, anyop, ctx)
    return _apply(block, [rw for _, rw in rewrites], outer) if rewrites else block


class _WholeRun:
    """Sweeps of a function with nested blocks: each sweep walks it all (use-def recomputed)."""

    def __init__(self, fn: Function, patterns, counts: dict):
        self.fn, self.counts = fn, counts
        self.table, self.anyop = _by_op_type(patterns, counts)
        self.changed = False

    def sweep(self) -> "_WholeRun":
        fn = self.fn
        ctx = RewriteContext(fn, use_def(fn), set())
        block = _sweep_block(fn.block, self.table, self.anyop, ctx, set())
        self.changed = block is not fn.block
        if self.changed:
            self.fn = fn.replace(block=block)
        return self

    def function(self) -> Function:
        return self.fn


# ---- flat functions: incremental sweeps ---------------------------------------------------

class _LiveIndex:
    """The use-def index of a flat function while the driver rewrites it: producers,
    consumers (in block order, as `ir.analysis.use_def` lists them), block outputs and
    every name in use (counted, so that a name a rewrite frees can be handed out again,
    as a recomputed index would allow). Private to one run; updated by each sweep."""

    __slots__ = ("producers", "consumers", "block_outputs", "_names", "_source")

    def __init__(self, inputs: tuple, ops: list, outputs: tuple):
        producers, consumers = {}, {}
        for op in ops:
            for v in op.inputs.values():
                if v.__class__ is tuple:
                    for x in v:
                        consumers.setdefault(x.name, []).append(op)
                else:
                    consumers.setdefault(v.name, []).append(op)
            for v in op.outputs:
                producers[v.name] = op
        self.producers, self.consumers = producers, consumers
        self.block_outputs = frozenset(v.name for v in outputs)
        self._names: Optional[dict] = None  # counted on first use (only fresh_name asks)
        self._source = (inputs, ops)

    @property
    def names(self) -> dict:
        if self._names is None:
            inputs, ops = self._source
            names: dict = {}
            for v in inputs:
                names[v.name] = names.get(v.name, 0) + 1
            for op in ops:
                names[op.name] = names.get(op.name, 0) + 1
                for v in op.outputs:
                    names[v.name] = names.get(v.name, 0) + 1
            self._names = names
        return self._names

    def follow(self, inputs: tuple, ops: list) -> None:
        """The block now holds these ops (names not yet counted are counted from them)."""
        self._source = (inputs, ops)

    # the UseDef interface
    def producer(self, var: Var) -> Optional[Op]:
        return self.producers.get(var.name)

    def consumers_of(self, var: Var) -> tuple:
        return tuple(self.consumers.get(var.name, ()))

    def is_block_output(self, var: Var) -> bool:
        return var.name in self.block_outputs

    def drop(self, op: Op) -> None:
        cons, names = self.consumers, self._names
        for v in op.inputs.values():
            for x in (v if v.__class__ is tuple else (v,)):
                lst = cons.get(x.name)
                if lst is not None:
                    try:
                        lst.remove(op)  # Op compares by identity
                    except ValueError:
                        pass
        if names is not None:
            for n in (op.name, *(v.name for v in op.outputs)):
                left = names.get(n, 0) - 1
                if left > 0:
                    names[n] = left
                else:
                    names.pop(n, None)
        for v in op.outputs:
            if self.producers.get(v.name) is op:
                del self.producers[v.name]

    def swap(self, old: Op, new: Op, order: Callable) -> None:
        """new takes old's place (same position and outputs, some inputs renamed)."""
        cons = self.consumers
        old_names = [v.name for v in old.input_vars()]
        new_names = [v.name for v in new.input_vars()]
        for n in set(old_names) | set(new_names):
            lst = cons.setdefault(n, [])
            kept = min(old_names.count(n), new_names.count(n))
            for i, o in enumerate(lst):  # the entries still read: old -> new in place
                if kept == 0:
                    break
                if o is old:
                    lst[i] = new
                    kept -= 1
            for _ in range(old_names.count(n) - new_names.count(n)):
                lst.remove(old)
            for _ in range(new_names.count(n) - old_names.count(n)):
                insort(lst, new, key=order)
        for v in new.outputs:
            self.producers[v.name] = new

    def add(self, op: Op, order: Callable) -> None:
        cons, names = self.consumers, self._names
        for v in op.input_vars():
            insort(cons.setdefault(v.name, []), op, key=order)
        for v in op.outputs:
            self.producers[v.name] = op
        if names is not None:
            for n in (op.name, *(v.name for v in op.outputs)):
                names[n] = names.get(n, 0) + 1


class _LiveContext(RewriteContext):
    """The context of one incremental sweep: answers from the live index and records,
    per value asked about, which offered op asked (so a rewrite touching that value
    offers the op again)."""

    def __init__(self, run: "_FlatRun"):
        self._run = run
        self.opset = run.fn.opset
        self._taken = set()
        self._next_suffix = {}
        self._current = None
        self._deps = run.deps

    @property
    def function(self) -> Function:
        self._run.opaque = True
        return self._run.function()

    @property
    def block(self) -> Block:
        self._run.opaque = True
        return self._run.block()

    @property
    def ud(self):
        self._run.opaque = True
        return self._run.live_index()

    def _asked(self, name: str) -> None:
        d = self._deps.get(name)
        if d is None:
            self._deps[name] = [self._current]
        else:
            d.append(self._current)

    def producer(self, var: Optional[Var]) -> Optional[Op]:
        if var is None:
            return None
        self._asked(var.name)
        return self._run.live_index().producers.get(var.name)

    def consumers(self, var: Var) -> tuple:
        self._asked(var.name)
        return tuple(self._run.live_index().consumers.get(var.name, ()))

    def is_block_output(self, var: Var) -> bool:
        self._asked(var.name)
        return var.name in self._run.live_index().block_outputs

    def single_consumer(self, var: Var) -> Optional[Op]:
        name = var.name
        self._asked(name)
        ix = self._run.live_index()
        cs = ix.consumers.get(name)
        if cs is not None and len(cs) == 1 and name not in ix.block_outputs:
            return cs[0]
        return None

    def in_block(self, op: Op) -> bool:
        return id(op) in self._run.positions()

    def _name_taken(self, name: str) -> bool:
        return name in self._run.live_index().names


class _FlatRun:
    """Sweeps of a function without nested blocks, each offering only the ops it must.

    Working state (private to the run, never visible outside it): the op list, each
    op's order key (a tuple: original ops (i,), ops inserted after the op keyed K in
    sweep r are K + (-r, j), so they sort right after K and before ops inserted there
    by earlier sweeps, as a rebuilt list would place them), the live use-def index,
    and which offered ops asked about which value."""

    def __init__(self, fn: Function, patterns, counts: dict):
        self.fn, self.counts = fn, counts
        self.table, self.anyop = _by_op_type(patterns, counts)
        self.inputs, self.ops, self.outputs = fn.block.inputs, fn.block.ops, fn.block.outputs
        self.pos: Optional[dict] = None  # id(op) -> order key, built on first need
        self.index: Optional[_LiveIndex] = None  # built on first need
        self.deps: dict = {}  # value name -> ops whose match / rewrite asked about it
        self.candidates = None  # the ops the next sweep offers (None: every op)
        self.sweeps = 0
        self.changed = self.ever_changed = self.opaque = False
        self._block: Optional[Block] = None
        self._maybe: Optional[list] = None  # ops the last sweep may have made match again

    # -- lazily built views -------------------------------------------------------------
    def positions(self) -> dict:
        if self.pos is None:
            self.pos = {id(op): (i,) for i, op in enumerate(self.ops)}
        return self.pos

    def live_index(self) -> _LiveIndex:
        if self.index is None:
            self.index = _LiveIndex(self.inputs, self.ops, self.outputs)
        return self.index

    def block(self) -> Block:
        if not self.ever_changed:
            return self.fn.block
        if self._block is None:
            self._block = Block.make(self.inputs, self.ops, self.outputs)
        return self._block

    def function(self) -> Function:
        return self.fn if not self.ever_changed else self.fn.replace(block=self.block())

    # -- one sweep ----------------------------------------------------------------------
    def sweep(self) -> "_FlatRun":
        self.sweeps += 1
        self.opaque = False
        if self._maybe is not None:  # what the last sweep touched, now in block order
            self.candidates, self._maybe = _current(self._maybe, self.positions()), None
        offered = self.ops if self.candidates is None else self.candidates
        rewrites, retry = _offer(offered, self.table, self.anyop, _LiveContext(self))
        self.changed = bool(rewrites)
        if rewrites:
            self._apply(rewrites, retry)
            self.ever_changed = True
            self._block = None
        else:
            self.candidates = ()
        return self

    def _apply(self, rewrites: list, retry: list) -> None:
        # order keys are only needed to place new ops or rename uses (and once made, kept)
        need_pos = self.pos is not None or any(rw.new_ops or rw.replace for _, rw in rewrites)
        pos = self.positions() if need_pos else None
        sweep = self.sweeps
        subst: dict = {}
        removed: dict = {}  # id -> op
        inserts: dict = {}  # anchor key -> new ops, in rewrite order
        for _, rw in rewrites:
            if rw.replace:
                subst.update(rw.replace)
            for o in rw.claims:
                if pos is None or id(o) in pos:
                    removed[id(o)] = o
            if rw.new_ops:
                anchors = [(pos[id(o)], o) for o in (*rw.claims, rw.after) if o is not None and id(o) in pos]
                key, anchor = max(anchors, key=_first)
                inserts.setdefault(key, (anchor, []))[1].extend(rw.new_ops)

        ix = self.index
        if ix is None and (subst or inserts):
            ix = self.live_index()
        rewired: dict = {}  # id(old) -> (old, new): ops reading a replaced value
        if subst:
            for name in subst:
                for c in ix.consumers.get(name, ()):
                    k = id(c)
                    if k not in removed and k not in rewired:
                        new = rewire(c, subst)
                        if new is not c:
                            rewired[k] = (c, new)
            inserts = {k: (a, [rewire(n, subst) for n in news]) for k, (a, news) in inserts.items()}

        # the new op list: few edits copy the untouched spans between them (found by
        # bisection on the order keys); many edits make one pass over the list instead
        ops = self.ops

        def order(o):
            return pos[id(o)]

        n_edits = len(removed) + len(rewired) + len(inserts)
        if pos is not None and n_edits * max(1, len(ops).bit_length()) * 4 < len(ops):
            out = _spliced(ops, order, pos, removed, rewired, inserts, sweep)
        else:
            out = _rebuilt(ops, removed, rewired, inserts)

        # order keys and the index follow the edits
        if ix is not None:
            for o in removed.values():
                ix.drop(o)
        if pos is not None:
            for k in removed:
                del pos[k]
        for k, (_, new) in rewired.items():
            pos[id(new)] = pos[k]  # (the old op's key stays until the index lists hold new)
        for key, (_, news) in inserts.items():
            for j, n in enumerate(news):
                pos[id(n)] = key + (-sweep, j)
        placed = [n for _, news in inserts.values() for n in news]
        if ix is not None:
            for old, new in rewired.values():
                ix.swap(old, new, order)
            for n in placed:
                ix.add(n, order)
        for k in rewired:
            del pos[k]
        placed = [new for _, new in rewired.values()] + placed
        outputs = tuple(_resolve(subst, v) for v in self.outputs) if subst else self.outputs
        if ix is not None and any(a is not b for a, b in zip(outputs, self.outputs)):
            ix.block_outputs = frozenset(v.name for v in outputs)
        self.ops, self.outputs = out, outputs
        if ix is not None:
            ix.follow(self.inputs, out)

        in_order = self._in_order(placed)
        if not in_order:  # a rewrite placed an op before a value it reads: sort the block again
            self.ops = _topo_sort(self.inputs, out, set())
            self.pos, self.index = None, None

        # what the next sweep offers (put in block order when it starts)
        self.candidates = None
        if not (self.opaque or not in_order or self.deps):
            self._maybe = placed + retry + [op for op, _ in rewrites]
            return
        touched = set(subst)
        touched.update(v.name for v in subst.values())
        for o in (*removed.values(), *(old for old, _ in rewired.values()), *placed):
            _add_names(o, touched)
        if self.opaque or not in_order:
            return  # every op
        deps = self.deps
        maybe = [o for name in touched for o in deps.pop(name, ())]
        maybe += placed
        maybe += retry
        maybe += [op for op, _ in rewrites]
        self._maybe = maybe

    def _in_order(self, placed: list) -> bool:
        """Every placed op reads only block inputs and values defined before it."""
        if not placed:
            return True
        pos, producers = self.pos, self.index.producers
        inputs = {v.name for v in self.inputs}
        for o in placed:
            key = pos[id(o)]
            for v in o.input_vars():
                p = producers.get(v.name)
                if p is None:
                    if v.name not in inputs:
                        return False
                elif pos[id(p)] >= key:
                    return False
        return True


def _add_names(op: Op, names: set) -> None:
    """Add the names of every value op reads or defines (inline loops: called per edit)."""
    add = names.add
    for v in op.inputs.values():
        if v.__class__ is tuple:
            for x in v:
                add(x.name)
        else:
            add(v.name)
    for v in op.outputs:
        add(v.name)


def _first(pair):
    return pair[0]


def _current(ops: list, pos: dict) -> list:
    """The ops still in the block, each once, in block order."""
    seen: set = set()
    out = []
    for o in ops:
        k = id(o)
        if k not in seen and k in pos:
            seen.add(k)
            out.append(o)
    out.sort(key=lambda o: pos[id(o)])
    return out


def _spliced(ops: list, order: Callable, pos: dict, removed: dict, rewired: dict, inserts: dict,
             sweep: int) -> list:
    """The edited op list from slices of the old one (few edits: each found by bisection)."""
    edits = [(bisect_left(ops, pos[k], key=order), 1, None) for k in removed]
    edits += [(bisect_left(ops, pos[k], key=order), 1, new) for k, (_, new) in rewired.items()]
    edits += [(bisect_left(ops, key + (-sweep, 0), key=order), 0, news) for key, (_, news) in inserts.items()]
    edits.sort(key=lambda e: (e[0], e[1]))
    out, prev = [], 0
    for i, kind, payload in edits:
        out.extend(ops[prev:i])
        if kind == 0:
            out.extend(payload)
            prev = i
        else:
            if payload is not None:
                out.append(payload)
            prev = i + 1
    out.extend(ops[prev:])
    return out


def _rebuilt(ops: list, removed: dict, rewired: dict, inserts: dict) -> list:
    """The edited op list in one pass (many edits)."""
    swap = dict.fromkeys(removed)
    swap.update((k, new) for k, (_, new) in rewired.items())
    after = {id(anchor): news for anchor, news in inserts.values()}
    out = []
    append, extend = out.append, out.extend
    for op in ops:
        k = id(op)
        if k in swap:
            new = swap[k]
            if new is not None:
                append(new)
        else:
            append(op)
        if k in after:
            extend(after[k])
    return out


def _run_for(fn: Function, patterns, counts: dict):
    nested = any(op.blocks for op in fn.block.ops)
    return (_WholeRun if nested else _FlatRun)(fn, patterns, counts)


def _sweep_once(run):
    return run.sweep()


def _nothing_changed(_old, run) -> bool:
    return not run.changed


# ---- entry points ------------------------------------------------------------------------

def sweep_function_counted(fn: Function, patterns) -> tuple:
    """One sweep over fn: (the new function, or fn itself; per-pattern counts)."""
    patterns = tuple(patterns)
    counts = _new_counts(patterns)
    run = _run_for(fn, patterns, counts)
    run.sweep()
    return run.function(), _frozen_counts(counts)


def sweep_function(fn: Function, patterns) -> Function:
    return sweep_function_counted(fn, patterns)[0]


def map_functions(program: Program, transform: Callable) -> Program:
    """Apply Function -> Function to every function; the same program when none changed."""
    # IR nodes are immutable and acyclic, so reference counting frees them, while each full
    # collection would traverse the whole (large) program and make a pass superlinear in its size
    with gc_paused():
        new = {name: transform(f) for name, f in program.functions.items()}
    if all(new[n] is program.functions[n] for n in new):
        return program
    return Program.make(new, program.attrs)


def rewrite_program_counted(program: Program, patterns, max_sweeps: int = 64) -> tuple:
    """Sweep each function until no pattern applies: (program, per-pattern counts).

    At most max_sweeps sweeps per function; stopping there with a sweep that still
    changed something warns FixedPointNotReached, except for max_sweeps=1, which asks
    for exactly one sweep (no fixed point is claimed)."""
    patterns = tuple(patterns)
    counts = _new_counts(patterns)
    what = f"rewrite_program({', '.join(p.name for p in patterns)})"

    def to_fixed_point(fn: Function) -> Function:
        run = _run_for(fn, patterns, counts)
        fixed_point(_sweep_once, run, max_sweeps, what=f"{what} on function {fn.name!r}",
                    settled=_nothing_changed, warn=max_sweeps > 1, stacklevel=4)
        return run.function()

    return map_functions(program, to_fixed_point), _frozen_counts(counts)


def rewrite_program(program: Program, patterns, max_sweeps: int = 64) -> Program:
    """Sweep until no pattern matches (at most max_sweeps sweeps per function)."""
    return rewrite_program_counted(program, patterns, max_sweeps)[0]


def replace_all_uses(fn: Function, subst: dict) -> Function:
    """Rename uses of vars everywhere in a function (a helper for whole-function stages)."""
    block = rewire_block(fn.block, subst)
    return fn if block is fn.block else fn.replace(block=block)


__all__ = ["Pattern", "Rewrite", "RewriteContext", "rewrite_program", "rewrite_program_counted",
           "sweep_function", "sweep_function_counted", "merge_counts", "map_functions", "rewire",
           "rewire_block", "replace_all_uses"]
