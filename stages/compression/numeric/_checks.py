"""Input validation shared by every kernel (kept apart so each kernel stays short)."""
from __future__ import annotations

import numpy as np

from .errors import CompressionError, message

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# Exponent-field masks: a float is NaN/Inf exactly when all its exponent bits are set.
# Testing the bits on an unsigned view is several times faster than np.isfinite on fp16.
_EXPONENT_MASK = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}


def float_weight(weight, *, name: str | None = None) -> np.ndarray:
    """Return ``weight`` as a non-empty, finite float ndarray (never copied, never written)."""
    if not isinstance(weight, np.ndarray):
        raise CompressionError(message(f"expected a numpy array, got {type(weight).__name__}", name))
    if weight.dtype not in FLOAT_DTYPES:
        raise CompressionError(message(f"unsupported dtype {weight.dtype}; expected float16/32/64", name))
    if weight.size == 0:
        raise CompressionError(message("empty weight", name))
    if not all_finite(weight):
        raise CompressionError(message("weight contains NaN or Inf", name))
    return weight


_CHUNK = 1 << 16  # elements per test: the temporaries stay in cache, none is weight-sized


def all_finite(arr: np.ndarray) -> bool:
    uint, mask = _EXPONENT_MASK[arr.dtype.itemsize]
    bits = np.ascontiguousarray(arr).view(uint).reshape(-1)
    mask, buf = uint(mask), np.empty(min(bits.size, _CHUNK), uint)
    for i in range(0, bits.size, _CHUNK):
        part = buf[:min(_CHUNK, bits.size - i)]
        np.bitwise_and(bits[i:i + _CHUNK], mask, out=part)
        if np.any(part == mask):
            return False
    return True


def normalize_axis(axis: int, rank: int, *, what: str = "axis", name: str | None = None) -> int:
    if not isinstance(axis, (int, np.integer)) or not -rank <= axis < rank:
        raise CompressionError(message(f"{what} {axis!r} out of range for rank {rank}", name))
    return int(axis) % rank


def choice(value, allowed, *, what: str, name: str | None = None):
    if value not in allowed:
        raise CompressionError(message(f"unsupported {what} {value!r}; expected one of {sorted(allowed)}", name))
    return value
