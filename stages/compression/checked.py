"""Compression stages check their parameters when they are bound.

`palettize_weights(nbits=5)` raises at once (a CompressionError naming the
parameter) rather than minutes later in the middle of a pipeline. A
CheckedStage is a Stage whose `bind` also runs a `check(params)` over the
parameters given so far; the stage function repeats the full check (with the
per-weight config merged in) when it runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from stages.base import REGISTRY, Stage
from stages.compression.numeric.errors import CompressionError


class ParameterError(CompressionError):
    """A compression parameter with a value the stage cannot use; the message names it."""


@dataclass(frozen=True)
class CheckedStage(Stage):
    check: Optional[Callable] = None  # check(params: dict) raises ParameterError

    def bind(self, **params) -> "CheckedStage":
        plain = Stage.bind(self, **params)  # unknown names are reported by the base class
        if self.check is not None:
            self.check({k: v for k, v in plain.params.items()})
        return CheckedStage(plain.name, plain.fn, plain.version, plain.params, self.contract, self.check)


def compression_stage(name: str, check: Callable, version: str = "1", contract=None):
    """Like stages.base.stage, for a stage whose parameters are checked at bind time."""

    def wrap(fn: Callable) -> CheckedStage:
        st = CheckedStage(name, fn, version, contract=contract, check=check)
        st.defaults  # fail early on a bad signature
        REGISTRY[name] = st
        return st

    return wrap


def one_of(params: dict, key: str, allowed) -> None:
    if key in params and params[key] is not None and params[key] not in allowed:
        raise ParameterError(f"{key}={params[key]!r} is not supported; expected one of {list(allowed)}")


# numpy types and dtypes users pass (as in coremltools' dtype=np.int8) -> IR dtype names
_NUMPY_DTYPES = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}


def dtype_name(value) -> str:
    """'int8' | 'uint8' | 'int4' | 'uint4' from a name, a numpy type or a numpy dtype."""
    if isinstance(value, str):
        return value.lower()
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt in _NUMPY_DTYPES:
        return _NUMPY_DTYPES[dt]
    name = getattr(value, "__name__", None)  # coremltools' types.int8 / types.uint4 classes
    if isinstance(name, str):
        return name.lower()
    raise ParameterError(f"dtype={value!r} is not a quantization dtype; expected int8, uint8, int4 or uint4")
