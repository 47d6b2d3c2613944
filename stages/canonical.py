"""Parameter values in a stable, JSON-able form: what a stage's cache key hashes.

Callables take part by qualified name and source; a value with no stable form
(a lambda without source, an arbitrary object) raises Uncacheable instead of
being guessed at.
"""
from __future__ import annotations

import hashlib
import inspect
from typing import Any

import numpy as np

from ir.digest import tensor_digest


class Uncacheable(Exception):
    """A parameter cannot be turned into a stable key (e.g. a lambda with no source)."""


def _callable_key(fn) -> dict:
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        raise Uncacheable(f"callable {name} has no source to key it by") from None
    return {"callable": name, "source_sha256": hashlib.sha256(src.encode()).hexdigest()}


def canonical(value) -> Any:
    """A JSON-able, order-independent form of a parameter value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"ndarray": tensor_digest(value)}
    if isinstance(value, type):
        return {"type": f"{value.__module__}.{value.__qualname__}"}
    if isinstance(value, np.dtype):
        return {"dtype": value.name}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "items"):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if hasattr(value, "to_dict"):
        return canonical(value.to_dict())
    if callable(value):
        return _callable_key(value)
    raise Uncacheable(f"parameter of type {type(value).__name__} has no stable key")
