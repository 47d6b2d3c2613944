"""Checking parameters from text (specs, recipes) against a stage's typed options.

The options and their types live on the Stage (stages.base.Option: the
annotation's type, else the default's; a default of None accepts anything;
ints are accepted where floats are expected, lists where tuples are). This
module only turns the first problem into the caller's error.
"""
from __future__ import annotations

from typing import Callable

from stages.base import Option


def type_problem(default, value) -> str | None:
    """Why value does not fit a parameter whose default is `default` (None when it fits)."""
    return Option("?", default, type(default) if default is not None else None).problem(value)


def check_params(stage, params: dict, fail: Callable[[str, str], Exception]) -> None:
    """Raise fail(key, reason) for the first unknown or wrongly typed parameter."""
    for key, value in params.items():
        problem = stage.problem(key, value)
        if problem:
            raise fail(key, problem)
