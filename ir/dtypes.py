"""The IR's element types, as one table.

Sub-byte types (int4, uint1..uint6) live unpacked in memory: each element
takes a whole byte of its numpy *storage* dtype, and the IR dtype records the
true width. They are bit-packed only when serialized.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DType(NamedTuple):
    name: str
    storage: np.dtype  # numpy dtype the values live in
    bits: int
    kind: str  # "float", "int", "uint", "bool", "string"

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_integer(self) -> bool:
        return self.kind in ("int", "uint")

    @property
    def is_subbyte(self) -> bool:
        return self.kind in ("int", "uint") and self.bits < 8

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.kind == "int" else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.kind == "int" else (1 << self.bits) - 1


_TABLE = [
    DType("fp32", np.dtype(np.float32), 32, "float"),
    DType("fp16", np.dtype(np.float16), 16, "float"),
    DType("fp64", np.dtype(np.float64), 64, "float"),
    DType("int8", np.dtype(np.int8), 8, "int"),
    DType("uint8", np.dtype(np.uint8), 8, "uint"),
    DType("int16", np.dtype(np.int16), 16, "int"),
    DType("uint16", np.dtype(np.uint16), 16, "uint"),
    DType("int32", np.dtype(np.int32), 32, "int"),
    DType("uint32", np.dtype(np.uint32), 32, "uint"),
    DType("int64", np.dtype(np.int64), 64, "int"),
    DType("uint64", np.dtype(np.uint64), 64, "uint"),
    DType("bool", np.dtype(np.bool_), 1, "bool"),
    DType("int4", np.dtype(np.int8), 4, "int"),
    DType("uint1", np.dtype(np.uint8), 1, "uint"),
    DType("uint2", np.dtype(np.uint8), 2, "uint"),
    DType("uint3", np.dtype(np.uint8), 3, "uint"),
    DType("uint4", np.dtype(np.uint8), 4, "uint"),
    DType("uint6", np.dtype(np.uint8), 6, "uint"),
    DType("string", np.dtype(object), 0, "string"),
]


class _Table(dict):
    """name -> DType. bf16 joins on first use: numpy has no bfloat16, ml_dtypes provides one
    when installed, and importing it costs about a second (more than numpy itself), which a
    program without bf16 values should not pay."""

    def __missing__(self, key):
        if key == "bf16" and _add_bf16():
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or (key == "bf16" and _add_bf16())


DTYPES: dict[str, DType] = _Table((d.name, d) for d in _TABLE)

# numpy dtype -> the IR dtype a plain array of it means (full-width types only)
_FROM_NUMPY = {d.storage: d.name for d in _TABLE if not d.is_subbyte and d.kind != "string"}
_FROM_NUMPY[np.dtype(np.bool_)] = "bool"

# spellings users bring from numpy / coremltools
_ALIASES = {"float32": "fp32", "float16": "fp16", "float64": "fp64", "bfloat16": "bf16",
            "str": "string"}


class UnknownDType(ValueError):
    pass


def _add_bf16() -> bool:
    """Register bf16 (once); False when ml_dtypes is not installed."""
    if dict.__contains__(DTYPES, "bf16"):
        return True
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    storage = np.dtype(ml_dtypes.bfloat16)
    dict.__setitem__(DTYPES, "bf16", DType("bf16", storage, 16, "float"))
    _FROM_NUMPY[storage] = "bf16"
    return True


def dtype(name) -> DType:
    """Look up an IR dtype by name, alias, numpy dtype or numpy type."""
    if isinstance(name, DType):
        return name
    if isinstance(name, str):
        key = _ALIASES.get(name, name)
        if key in DTYPES:
            return DTYPES[key]
        raise UnknownDType(f"unknown dtype {name!r}; known: {', '.join(sorted(DTYPES))}")
    try:
        np_dtype = np.dtype(name)
        if np_dtype.name == "bfloat16":  # made by ml_dtypes, so it is imported already
            _add_bf16()
        return DTYPES[_FROM_NUMPY[np_dtype]]
    except (KeyError, TypeError):
        raise UnknownDType(f"no IR dtype for numpy dtype {name!r}") from None


def from_numpy(arr: np.ndarray) -> DType:
    """The IR dtype a numpy array's own dtype stands for."""
    found = _FROM_NUMPY.get(arr.dtype)  # the common case, one lookup
    if found is not None:
        return DTYPES[found]
    if arr.dtype.kind in ("U", "S", "O"):
        return DTYPES["string"]
    return dtype(arr.dtype)


def fits(values: np.ndarray, dt: DType) -> bool:
    """True when every value lies in the dtype's range (used for sub-byte data)."""
    if not dt.is_integer or values.size == 0:
        return True
    return bool(values.min() >= dt.min and values.max() <= dt.max)
