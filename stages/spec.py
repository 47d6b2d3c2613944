"""The one printer of stage spec text: `name{key=value,...}`.

Values print as compact JSON with sorted keys, so a spec is stable and
`pipeline.spec.parse` reads it back to equal parameters. A value that is
spec text itself (a Pipeline given to a combinator) prints as that text, a
callable without a stable key as `"<qualname>"` (such a stage runs uncached
and its spec is for people, not for parsing).
"""
from __future__ import annotations

import json

from stages.canonical import Uncacheable, canonical


def printable(value):
    """A parameter value as a spec prints it (JSON-able)."""
    spec = getattr(value, "spec", None)
    if callable(spec) and not isinstance(value, type):  # a Pipeline: its own spec text
        return spec()
    try:
        return canonical(value)
    except Uncacheable:
        return f"<{getattr(value, '__qualname__', type(value).__name__)}>"


def format_value(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def format_step(name: str, params: dict) -> str:
    if not params:
        return name
    return name + "{" + ",".join(f"{k}={format_value(printable(v))}" for k, v in sorted(params.items())) + "}"
