"""Compression stages check their parameters when they are bound.

`palettize_weights(nbits=5)` raises at once (a ParameterError naming the
parameter) rather than minutes later in the middle of a pipeline: the stage's
`check(params)` runs at every bind over the parameters given so far (the
Stage object in stages.base owns that), and the stage function repeats the
full check (with the per-weight config merged in) when it runs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from stages.base import Stage, stage
from stages.compression.numeric.errors import CompressionError

# a compression stage is a Stage with a check; the name stays for code that imported it
CheckedStage = Stage


class ParameterError(CompressionError):
    """A compression parameter with a value the stage cannot use; the message names it."""


def compression_stage(name: str, check: Callable, version: str = "1", contract: object = None):
    """Like stages.base.stage, for a stage whose parameters are checked at bind time."""
    return stage(name, version=version, contract=contract, check=check)


def one_of(params: dict, key: str, allowed) -> None:
    if key in params and params[key] is not None and params[key] not in allowed:
        raise ParameterError(f"{key}={params[key]!r} is not supported; expected one of {list(allowed)}")


def positive_int(params: dict, key: str) -> None:
    v = params.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0):
        raise ParameterError(f"{key}={v!r} must be a positive integer")


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
