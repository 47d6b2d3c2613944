"""Stage-like combinators over pipelines.

`repeat_until_fixed_point(p, max_rounds=10)` is itself a Stage: it applies
`p` again and again until a round returns its input object unchanged
(`new is old`), or gives up after max_rounds with a warning (the loop is
`ir.fixpoint.fixed_point`, the one every fixed point in the code runs on).
Its cache key covers every inner stage's name, version and parameters.
"""
from __future__ import annotations

from pyrsistent import pmap

from ir.fixpoint import fixed_point
from stages.base import DEFAULT_CONTEXT, Stage, StageResult


def _as_pipeline(steps):
    from pipeline.core import Pipeline

    if steps is None:
        raise ValueError("repeat_until_fixed_point: no steps given")
    return steps if isinstance(steps, Pipeline) else Pipeline.coerce(steps)


def _fixed_point(program, *, steps=None, max_rounds=10, context=DEFAULT_CONTEXT):
    pipe = _as_pipeline(steps)
    done = fixed_point(lambda p: pipe.apply(p, context), program, max_rounds,
                       what=f"repeat_until_fixed_point({pipe.spec()})", stacklevel=3)
    return StageResult(done.result, pmap({"rounds": done.rounds, "converged": done.converged}))


FIXED_POINT = Stage("repeat_until_fixed_point", _fixed_point, "1")


def repeat_until_fixed_point(steps=None, max_rounds: int = 10) -> Stage:
    """A stage that runs `steps` (a Pipeline, a Stage, a list of them or a spec) to a fixed point."""
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise ValueError(f"repeat_until_fixed_point: max_rounds must be a positive int, got {max_rounds!r}")
    return FIXED_POINT.bind(steps=_as_pipeline(steps), max_rounds=max_rounds)


# name -> factory taking the step's parameters; consulted before the stage registry
COMBINATORS = {"repeat_until_fixed_point": repeat_until_fixed_point}
