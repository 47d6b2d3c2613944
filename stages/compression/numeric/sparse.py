"""Sparsification masks.  ``mask`` is True where a value is kept (and nonzero).

* threshold: |w| <= threshold becomes 0 (coremltools 9.0 ``compress_by_threshold``).
* percentile: exactly floor(size * target_percentile) smallest-magnitude elements become 0, ties
  broken by row-major position (the seed's definition; coremltools 9.0 instead zeros
  |w| <= np.percentile(|w|, 100 p), which can zero one element more and all tied values).
* n:m: in each run of m consecutive elements along ``axis``, the n smallest magnitudes
  (earliest first on ties) become 0.  A tail shorter than m is treated like coremltools:
  padded with zeros that count as the smallest, so only max(0, n - (m - tail)) real
  elements of the tail are zeroed.  coremltools refuses m > axis length / 2
  (NotCompressible here too).

Elements that are already 0 are never kept: ``mask = (sparsified != 0)``, and
``nonzero_data = w[mask]`` in row-major order (the iOS18 ``constexpr_sparse_to_dense`` form).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ir.ops.quant import sparse_to_dense as ir_sparse_to_dense

from ._checks import float_weight, normalize_axis
from .errors import CompressionError, NotCompressible, message


class SparseParams(NamedTuple):
    mask: np.ndarray          # bool, weight's shape
    nonzero_data: np.ndarray  # 1-D, weight's dtype, row-major


def _finish(w: np.ndarray, zero: np.ndarray) -> SparseParams:
    mask = ~zero & (w != 0)
    return SparseParams(mask, w[mask])


def threshold_mask(weight, threshold: float, *, name=None) -> SparseParams:
    w = float_weight(weight, name=name)
    if not np.isfinite(threshold) or threshold < 0:
        raise CompressionError(message(f"threshold must be finite and >= 0, got {threshold!r}", name))
    return _finish(w, np.abs(w) <= threshold)


def percentile_mask(weight, target_percentile: float, *, name=None) -> SparseParams:
    w = float_weight(weight, name=name)
    if not 0.0 <= target_percentile <= 1.0:
        raise CompressionError(message(f"target_percentile must be in [0, 1], got {target_percentile!r}", name))
    count = int(np.floor(w.size * target_percentile))
    flat = np.abs(w).ravel()
    zero = np.zeros(w.size, bool)
    if count:
        kth = np.partition(flat, count - 1)[count - 1]  # the count-th smallest magnitude
        zero = flat < kth
        ties = np.flatnonzero(flat == kth)[: count - int(zero.sum())]
        zero[ties] = True
    return _finish(w, zero.reshape(w.shape))


def nm_mask(weight, n: int, m: int, *, axis: int = 1, name=None) -> SparseParams:
    w = float_weight(weight, name=name)
    axis = normalize_axis(axis, w.ndim, name=name)
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer)) and 0 <= n <= m and m >= 1):
        raise CompressionError(message(f"need integers 0 <= n <= m, m >= 1; got n={n!r}, m={m!r}", name))
    length = w.shape[axis]
    if m > length / 2:
        raise NotCompressible(message(f"m={m} > half the axis length {length}", name))
    mag = np.moveaxis(np.abs(w), axis, -1)
    pad = -length % m
    # Padding with -1 makes the pads the smallest magnitudes, taken before any real element,
    # the same effect as coremltools' zero padding with its stable small sort.
    padded = np.concatenate([mag, np.full(mag.shape[:-1] + (pad,), -1.0, mag.dtype)], axis=-1)
    runs = padded.reshape(-1, m)
    order = np.argsort(runs, axis=1, kind="stable")[:, :n]
    zero = np.zeros(runs.shape, bool)
    np.put_along_axis(zero, order, True, axis=1)
    zero = zero.reshape(padded.shape)[..., :length]
    return _finish(w, np.moveaxis(zero, -1, axis))


def sparsify(weight, mode: str = "threshold_based", *, threshold: float = 1e-3,
             target_percentile: float = 1.0, n_m: tuple[int, int] | None = None, axis: int = 1,
             name=None) -> SparseParams:
    """Dispatch by mode: 'threshold_based', 'percentile_based' or 'n_m' (needs ``n_m=(n, m)``)."""
    modes = {
        "threshold_based": lambda: threshold_mask(weight, threshold, name=name),
        "percentile_based": lambda: percentile_mask(weight, target_percentile, name=name),
        "n_m": lambda: nm_mask(weight, *(n_m or (None, None)), axis=axis, name=name),
    }
    if mode not in modes:
        raise CompressionError(message(f"unsupported sparsity mode {mode!r}; expected one of {sorted(modes)}", name))
    return modes[mode]()


def sparse_to_dense(mask: np.ndarray, nonzero_data: np.ndarray) -> np.ndarray:
    """The dense weight: the kernel of ``constexpr_sparse_to_dense`` (ir/ops/quant.py)."""
    return ir_sparse_to_dense(nonzero_data, mask)
