"""dead_code_elimination: remove ops whose results nothing uses.

An op is live when one of its outputs is a block output or is read by a live
op (in its block or in a nested block). Liveness flows backwards, so it is an
analysis (`ir.analysis.dead_ops`: one reverse pass, dead chains of any length
at once); the removal is a pattern on the shared rewrite driver: match a dead
op, claim it. One sweep per function; linear in the number of ops.

Function inputs are never removed: they are the function's signature.
"""
from __future__ import annotations

from ir.analysis import dead_ops
from ir.core import Function
from ir.rewrite import Pattern, Rewrite, map_functions, sweep_function
from stages.base import DEFAULT_CONTEXT, stage
from stages.contracts import exact


def _claim(op, ctx) -> Rewrite:
    return Rewrite(claims=(op,))


def eliminate_dead_code(fn: Function) -> Function:
    dead = dead_ops(fn)
    if not dead:
        return fn
    # a live op whose nested block lost dead ops is rebuilt by the driver: a new object,
    # hence never in `dead`; ops inside a dead op were not marked and leave with it
    pattern = Pattern("dead_op", lambda op, ctx: op if id(op) in dead else None, _claim)
    return sweep_function(fn, (pattern,))


@stage("dead_code_elimination", contract=exact())
def dead_code_elimination(program, *, context=DEFAULT_CONTEXT):
    return map_functions(program, eliminate_dead_code)
