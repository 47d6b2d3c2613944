"""A stage built on the shared rewrite driver reports what its patterns did.

`rewrite_stage(program, patterns)` runs `ir.rewrite.rewrite_program_counted` and
returns StageResult(program, {"patterns": {name: {"matched", "rewritten"}}});
the program is the input object itself when nothing matched.
"""
from __future__ import annotations

from pyrsistent import pmap

from ir.rewrite import rewrite_program_counted
from stages.base import StageResult


def rewrite_stage(program, patterns, max_sweeps: int = 64) -> StageResult:
    new, counts = rewrite_program_counted(program, patterns, max_sweeps)
    return StageResult(new, pmap({"patterns": counts}))


__all__ = ["rewrite_stage"]
