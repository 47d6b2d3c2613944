"""Error and size figures for a compressed weight."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class ErrorFigures(NamedTuple):
    snr_db: float         # 10 log10(sum w^2 / sum (w - r)^2); inf when exact
    max_abs_error: float
    mse: float


def snr_db(weight: np.ndarray, reconstruction: np.ndarray) -> float:
    w = np.asarray(weight, np.float64)
    err = float(np.sum((w - np.asarray(reconstruction, np.float64)) ** 2))
    sig = float(np.sum(w * w))
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def max_abs_error(weight: np.ndarray, reconstruction: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(weight, np.float64) - np.asarray(reconstruction, np.float64))))


def error_figures(weight: np.ndarray, reconstruction: np.ndarray) -> ErrorFigures:
    if np.shape(weight) != np.shape(reconstruction):
        raise ValueError(f"shape mismatch {np.shape(weight)} vs {np.shape(reconstruction)}")
    diff = np.asarray(weight, np.float64) - np.asarray(reconstruction, np.float64)
    return ErrorFigures(snr_db(weight, reconstruction), float(np.max(np.abs(diff))), float(np.mean(diff * diff)))


def packed_nbytes(num_elements: int, bits: int) -> int:
    """Bytes to store ``num_elements`` values of ``bits`` bits each, bit-packed."""
    return (int(num_elements) * int(bits) + 7) // 8


def total_nbytes(*parts) -> int:
    """Sum of packed sizes; each part is an array (its itemsize) or (num_elements, bits)."""
    total = 0
    for p in parts:
        total += p.nbytes if isinstance(p, np.ndarray) else packed_nbytes(*p)
    return total
