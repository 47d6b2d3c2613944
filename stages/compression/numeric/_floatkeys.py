"""Order-preserving integer keys for floats.

Mapping a float's bit pattern to an unsigned integer that sorts like the float lets us
(a) histogram fp16 weights on their 65,536 bit patterns instead of sorting floats and
(b) prefix a group id in the high bits so one ``np.searchsorted`` serves every group.
"""
from __future__ import annotations

import numpy as np

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def sortable_key(arr: np.ndarray) -> np.ndarray:
    """Unsigned keys with ``key(a) < key(b)`` iff ``a < b`` (-0 sorts just below +0)."""
    uint = _UINT[arr.dtype.itemsize]
    bits = np.ascontiguousarray(arr).view(uint)
    sign = uint(1) << uint(8 * arr.dtype.itemsize - 1)
    # Positive floats: set the sign bit so they sort above negatives.
    # Negative floats: flip every bit so larger magnitudes sort lower.
    return np.where(bits & sign, ~bits, bits | sign)


def ceil_to_dtype(x: np.ndarray, dtype) -> np.ndarray:
    """Smallest value of ``dtype`` that is >= x (x finite and inside dtype's range)."""
    y = np.asarray(x).astype(dtype)
    low = y.astype(np.float64) < x
    return np.where(low, np.nextafter(y, np.array(np.inf, dtype)), y)


def _fp16_tables():
    patterns = np.arange(1 << 16, dtype=np.uint16)
    keys = sortable_key(patterns.view(np.float16))
    key_to_value = np.empty(1 << 16, np.float64)
    key_to_value[keys] = patterns.view(np.float16).astype(np.float64)
    return keys, key_to_value


# FP16_KEY[bit pattern] -> key, FP16_VALUE[key] -> value (NaN for NaN keys, never produced
# from validated weights).
FP16_KEY, FP16_VALUE = _fp16_tables()
