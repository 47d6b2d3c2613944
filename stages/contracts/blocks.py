"""The arithmetic the weight bounds share: tensors seen as blocks, parameters at full rank,
units in the last place, the documented largest-divisor rule."""
from __future__ import annotations

import numpy as np


def _blocked(values: np.ndarray, param_shape) -> np.ndarray:
    """values [d0, d1, ...] as [p0, d0/p0, p1, d1/p1, ...] (blocks on even axes)."""
    shape = []
    for d, p in zip(values.shape, param_shape):
        shape += [p, d // p]
    return values.reshape(shape)


def _block_reduce(values: np.ndarray, param_shape, fn) -> np.ndarray:
    b = _blocked(values, param_shape)
    return fn(b, axis=tuple(range(1, b.ndim, 2)))


def _full_rank(param, rank: int, axis) -> np.ndarray:
    """A scalar / per-axis / per-block parameter with the data's rank."""
    p = np.asarray(param)
    if p.ndim == rank:
        return p
    shape = [1] * rank
    if p.ndim == 1 and rank:
        shape[int(axis or 0) % rank] = p.size
    return p.reshape(shape)


def _ulp(x: np.ndarray, dtype) -> np.ndarray:
    """One unit in the last place of x in `dtype` (inf beyond its range)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.spacing(np.abs(np.asarray(x, np.float64)).astype(dtype)).astype(np.float64)


def _largest_divisor(n: int, at_most: int, multiple_of: int = 1):
    """The largest g <= at_most dividing n and a multiple of `multiple_of` (None if none)."""
    return next((g for g in range(min(at_most, n), 0, -1) if n % g == 0 and g % multiple_of == 0), None)
