"""Checking parameters from text (specs, recipes) against a stage's signature.

The expected type of a parameter is the type of its default; a default of
None accepts anything. Integers are accepted where floats are expected,
lists where tuples are, and nothing else is converted.
"""
from __future__ import annotations

from typing import Callable

# expected default type -> the value types accepted for it
_ACCEPTS = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
    tuple: (list, tuple),
    list: (list, tuple),
    dict: (dict,),
}


def _type_name(value) -> str:
    return type(value).__name__


def type_problem(default, value) -> str | None:
    """Why value does not fit a parameter whose default is `default` (None when it fits)."""
    if default is None or value is None:
        return None
    accepted = _ACCEPTS.get(type(default))
    if accepted is None:
        return None  # an exotic default (an enum, a callable): leave it to the stage
    if isinstance(value, bool) and bool not in accepted:
        return f"expected {_type_name(default)}, got bool"
    if not isinstance(value, accepted):
        return f"expected {_type_name(default)}, got {_type_name(value)}"
    return None


def check_params(stage, params: dict, fail: Callable[[str, str], Exception]) -> None:
    """Raise fail(key, reason) for the first unknown or wrongly typed parameter."""
    known = stage.defaults
    for key, value in params.items():
        if key not in known:
            raise fail(key, f"unknown parameter {key!r} for stage {stage.name!r}; "
                            f"known: {', '.join(sorted(known)) or '(none)'}")
        problem = type_problem(known[key], value)
        if problem:
            raise fail(key, f"parameter {key!r} of stage {stage.name!r}: {problem}")
