"""dead_code_elimination: remove ops whose results nothing uses.

An op is live when one of its outputs is a block output or is read by a live
op (in its block or in a nested block). Liveness flows backwards, so it is an
analysis (`ir.analysis.dead_ops`: one reverse pass, dead chains of any length
at once); the removal is a pattern on the shared rewrite driver: match a dead
op, claim it. One sweep per function; linear in the number of ops.

A function without nested blocks skips the per-op offering: one sweep whose
only pattern claims exactly the dead ops (no new ops, no renamed uses) leaves
the live ops in their order, which the liveness pass lists directly
(`ir.analysis.live_ops`); the result and the counts are the driver's
(tests/stages/test_cleanup.py checks both paths agree). Offering each op to a
Python match function was most of the stage's time.

Function inputs are never removed: they are the function's signature.
"""
from __future__ import annotations

from operator import attrgetter

from pyrsistent import pmap

from ir.analysis import dead_ops, live_ops
from ir.core import Block, Function
from ir.rewrite import Pattern, Rewrite, map_functions, merge_counts, sweep_function_counted, sweep_function
from stages.base import DEFAULT_CONTEXT, StageResult, stage

PATTERN_NAME = "dead_op"
from stages.contracts import exact


def _claim(op, ctx) -> Rewrite:
    return Rewrite(claims=(op,))


_blocks_of = attrgetter("blocks")


def _counts(n: int):
    return merge_counts({PATTERN_NAME: {"matched": n, "rewritten": n}})


def eliminate_dead_code_counted(fn: Function) -> tuple:
    """(fn without its dead ops, or fn itself; the driver's per-pattern counts)."""
    block = fn.block
    if not any(map(_blocks_of, block.ops)):  # (C-level scan: no generator per op)
        kept, n_dead = live_ops(block)
        if not n_dead:
            return fn, _counts(0)
        return fn.replace(block=Block.make(block.inputs, kept, block.outputs)), _counts(n_dead)
    return eliminate_dead_code_by_sweep(fn)


def eliminate_dead_code_by_sweep(fn: Function) -> tuple:
    """The same on the driver: one sweep, a pattern claiming each dead op (the path of
    functions with nested blocks; any function may take it)."""
    dead = dead_ops(fn)
    if not dead:
        return fn, _counts(0)
    # a live op whose nested block lost dead ops is rebuilt by the driver: a new object,
    # hence never in `dead`; ops inside a dead op were not marked and leave with it
    pattern = Pattern(PATTERN_NAME, lambda op, ctx: op if id(op) in dead else None, _claim)
    return sweep_function_counted(fn, (pattern,))


def eliminate_dead_code(fn: Function) -> Function:
    return eliminate_dead_code_counted(fn)[0]


@stage("dead_code_elimination", contract=exact())
def dead_code_elimination(program, *, context=DEFAULT_CONTEXT):
    counts = []

    def one(fn):
        new, c = eliminate_dead_code_counted(fn)
        counts.append(c)
        return new

    new = map_functions(program, one)
    return StageResult(new, pmap({"patterns": merge_counts(*counts)}))
