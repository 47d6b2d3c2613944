"""Importance-weighted clipping search for an affine grid: per block, the scale that minimises
sum_i a_i (w_i - q(w_i))^2 among shrunken versions of the data-free scale.

The data-free grid spans each block's whole range, so one outlier stretches the step for every
other value. Shrinking the range by a ratio r (the scale times r, the zero point unchanged:
that is the grid of the range [r a, r b] in both modes, since the zero point formula is
invariant to scaling the range) clips the outliers and refines the step for the rest. With
a_i = E[x_c^2] of the value's input channel, the cost is the diagonal of the output error
tr(dW H dW^T) (llama.cpp's importance-weighted quantization and NNCF's scale estimation do the
same kind of search). Candidates: ratios 1, 0.95, ..., 0.5; ties keep the larger scale, so
r = 1 (the data-free grid) wins unless shrinking strictly helps.
"""
from __future__ import annotations

import numpy as np

from stages.compression.numeric.affine import expand_blocks

RATIOS = tuple(np.round(np.arange(1.0, 0.499, -0.05), 2))


def _block_sum(e: np.ndarray, block_shape) -> np.ndarray:
    shape = []
    for d, b in zip(e.shape, block_shape):
        shape += [b, d // b]
    return e.reshape(shape).sum(axis=tuple(range(1, 2 * e.ndim, 2)))


def search_scales(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, lo: int, hi: int,
                  importance: np.ndarray, ratios=RATIOS) -> tuple:
    """(scales in the block layout of `scale` and its dtype, the ratio chosen per block).

    w: the weight; scale / zero_point: the data-free grid (block layout: the weight's rank,
    blocks per axis); importance: per-element weights broadcastable to w."""
    w64 = np.asarray(w, np.float64)
    z = expand_blocks(np.asarray(zero_point, np.float64), w.shape)
    a = np.broadcast_to(np.asarray(importance, np.float64), w.shape)
    best_err = best_scale = best_ratio = None
    for r in ratios:
        s_blocks = (np.asarray(scale, np.float64) * r).astype(scale.dtype)
        s_blocks = np.where(s_blocks > 0, s_blocks, scale)  # never a zero step
        s = expand_blocks(s_blocks.astype(np.float64), w.shape)
        q = np.clip(np.rint(w64 / s) + z, lo, hi)
        err = _block_sum(a * (w64 - (q - z) * s) ** 2, scale.shape)
        if best_err is None:
            best_err, best_scale, best_ratio = err, s_blocks, np.full(err.shape, r)
            continue
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, s_blocks, best_scale)
        best_ratio = np.where(better, r, best_ratio)
    return best_scale.astype(scale.dtype), best_ratio
