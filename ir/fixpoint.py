"""The one fixed-point loop: apply a step until it settles, at most N times.

    fixed_point(step, start, max_rounds, what="...") -> FixedPoint(result, rounds, converged)

`step` is applied to `start`, then to its own result, until `settled(old, new)`
holds (by default `new is old`: a pure step that changed nothing returns its
input object) or `max_rounds` steps have run. `rounds` counts the steps run,
the settling one included; `converged` says whether the last step settled.
When it did not, a `FixedPointNotReached` warning names `what` (the rewrite
driver, the quantization preset and `repeat_until_fixed_point` all loop here,
so a loop that gives up is never silent).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple


class FixedPointNotReached(RuntimeWarning):
    """A fixed-point loop stopped at its round limit while its step still changed things."""


class FixedPoint(NamedTuple):
    result: Any
    rounds: int
    converged: bool


def _is_same(old, new) -> bool:
    return new is old


def fixed_point(step: Callable, start, max_rounds: int, *, what: str = "fixed point",
                settled: Callable = _is_same, warn: bool = True, stacklevel: int = 2) -> FixedPoint:
    """Run step to a fixed point; warn (FixedPointNotReached) when max_rounds is not enough."""
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise ValueError(f"{what}: max_rounds must be a positive int, got {max_rounds!r}")
    current = start
    for n in range(1, max_rounds + 1):
        new = step(current)
        if settled(current, new):
            return FixedPoint(new, n, True)
        current = new
    if warn:
        warnings.warn(f"{what}: no fixed point after {max_rounds} rounds (the last round still "
                      f"changed the program)", FixedPointNotReached, stacklevel=stacklevel + 1)
    return FixedPoint(current, max_rounds, False)


__all__ = ["FixedPoint", "FixedPointNotReached", "fixed_point"]
