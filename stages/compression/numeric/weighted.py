"""Weighted 1-D k-means LUTs: each weight value counts in proportion to how much its error
costs at the output (SqueezeLLM's sensitivity-weighted k-means, with E[x_c^2] of the value's
input channel as the weight, or an embedding row's lookup frequency).

The minimised cost per group is sum_i a_i (w_i - lut[idx_i])^2 with a_i > 0, the diagonal
of the output-error proxy tr(dW H dW^T) (a_i = H_cc for an element in input column c). It
is solved by the same exact 1-D k-means as palettize_weights (kmeans1d: histograms with real
weights instead of counts; equal values merge, their weights add): the optimum, proven, over
every partition of the group's values.

Large groups (more than ``BIN_ABOVE`` values, such as an embedding table's 11.7M) are first
reduced to ``BINS`` equal-width bins of their range, each bin one point at the weighted mean of
its values with their summed weight: the solver then finds the optimum over partitions whose
boundaries fall between bins (a cluster's entry is still the exact weighted mean of every value
in it, clipped into the group's range against rounding), in O(values) instead of a sort and a DP
over millions of distinct values. With 65536 bins the cost is within ~1e-6 of the exact optimum's
on such groups (tests compare the two); the exact path stays for everything smaller.

``weighted_luts(m, nbits, groups, weights, dtype)``: m [rows, cols], rows split into
``groups`` equal consecutive groups (one LUT each), element weights broadcast against m
(None: all 1). Returns the LUTs [groups, 2**nbits]
in ``dtype`` (sorted; a group with fewer distinct values than entries repeats its largest),
and the index of each element's nearest LUT entry (ties to the lower entry), [rows, cols].
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import kmeans1d as km


def weighted_segments(rows: np.ndarray, weights: np.ndarray) -> km.Segments:
    """Per-row sorted histograms of `rows` [G, n] with the element weights summed per value."""
    G, n = rows.shape
    order = np.argsort(rows, axis=1, kind="stable")
    srt = np.take_along_axis(rows, order, axis=1)
    wts = np.take_along_axis(weights, order, axis=1)
    new = np.ones(srt.shape, bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    flat = new.ravel()
    pos = np.flatnonzero(flat)
    summed = np.add.reduceat(wts.ravel(), pos) if pos.size else np.zeros(0)
    offsets = np.concatenate(([0], np.cumsum(new.sum(axis=1))))
    return km.Segments(srt.ravel()[pos].astype(np.float64), summed.astype(np.float64), offsets)


BIN_ABOVE = 1 << 18
BINS = 1 << 16


def binned_segments(rows: np.ndarray, weights: np.ndarray, bins: int = BINS) -> km.Segments:
    """Per-row histograms of `rows` [G, n] over `bins` equal-width bins of each row's range: one
    point per non-empty bin at the weighted mean of its values, with their summed weight
    (sorted, since the bins are disjoint intervals in order)."""
    G, n = rows.shape
    lo, hi = rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    idx = np.minimum(((rows - lo) / width).astype(np.int64), bins - 1) + np.arange(G)[:, None] * bins
    wsum = np.bincount(idx.ravel(), weights.ravel(), minlength=G * bins)
    vsum = np.bincount(idx.ravel(), (weights * rows).ravel(), minlength=G * bins)
    keep = wsum > 0
    means = np.clip(vsum[keep] / wsum[keep], np.repeat(lo.ravel(), keep.reshape(G, bins).sum(1)),
                    np.repeat(hi.ravel(), keep.reshape(G, bins).sum(1)))
    offsets = np.concatenate(([0], np.cumsum(keep.reshape(G, bins).sum(axis=1))))
    return km.Segments(means, wsum[keep], offsets)


def weighted_centroids(rows: np.ndarray, weights: np.ndarray, k: int, bins: Optional[int] = None) -> np.ndarray:
    """Sorted optimal weighted k-means centroids per row [G, k] (float64); a row with at most
    k distinct values gets them, its largest repeated. Rows of more than BIN_ABOVE values are
    binned first (module docstring); with ``bins``, rows of more than ``bins`` values are binned
    into that many."""
    rows, weights = np.asarray(rows, np.float64), np.asarray(weights, np.float64)
    above, count = (BIN_ABOVE, BINS) if bins is None else (bins, bins)
    if rows.shape[1] > above:
        seg = binned_segments(rows, weights, count)
        if np.all(np.diff(seg.offsets) > k):
            p = km.prefix_sums(seg)
            cents = km.centroids(p, km.bracketed_boundaries(seg, p, k))
            return np.clip(cents, rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True))
    seg = weighted_segments(rows, weights)
    distinct = np.diff(seg.offsets)
    out = np.zeros((rows.shape[0], k))
    few = distinct <= k
    for g in np.flatnonzero(few):
        vals = seg.values[seg.offsets[g]:seg.offsets[g + 1]]
        out[g, :len(vals)] = vals
        out[g, len(vals):] = vals[-1] if len(vals) else 0.0
    many = np.flatnonzero(~few)
    if len(many):
        sel = np.concatenate([np.arange(seg.offsets[g], seg.offsets[g + 1]) for g in many])
        sub = km.Segments(seg.values[sel], seg.weights[sel], np.concatenate(([0], np.cumsum(distinct[many]))))
        p = km.prefix_sums(sub)
        out[many] = km.centroids(p, km.bracketed_boundaries(sub, p, k))
    return out


def nearest(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted 1-D lut for each value (ties to the lower entry)."""
    mids = (lut[1:].astype(np.float64) + lut[:-1].astype(np.float64)) / 2
    return np.searchsorted(mids, np.asarray(values, np.float64), side="left")


def weighted_luts(m: np.ndarray, nbits: int, groups: int, weights: Optional[np.ndarray] = None,
                  dtype=np.float32, bins: Optional[int] = None) -> tuple:
    """(LUTs [groups, 2**nbits] in dtype, nearest indices [rows, cols] uint8) (module docstring);
    ``weights`` broadcasts against m (None: every element 1); ``bins`` as weighted_centroids'."""
    m = np.asarray(m)
    rows, cols = m.shape
    per = rows // groups
    a = np.ones((rows, cols)) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), m.shape)
    cents = weighted_centroids(np.asarray(m, np.float64).reshape(groups, per * cols),
                               np.ascontiguousarray(a).reshape(groups, per * cols), 1 << nbits, bins)
    luts = np.sort(cents.astype(dtype), axis=1)
    idx = np.empty((rows, cols), np.uint8)
    for g in range(groups):
        sl = slice(g * per, (g + 1) * per)
        idx[sl] = nearest(m[sl], luts[g])
    return luts, idx


def weighted_cost(values: np.ndarray, weights: np.ndarray, lut: np.ndarray, idx: np.ndarray) -> float:
    """sum a_i (w_i - lut[idx_i])^2."""
    d = np.asarray(values, np.float64) - np.asarray(lut, np.float64)[idx]
    return float(np.sum(np.asarray(weights, np.float64) * d * d))
