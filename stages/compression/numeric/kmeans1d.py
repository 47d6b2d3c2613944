"""Weighted 1-D k-means on many independent segments at once.

Input is a histogram: per segment, values sorted ascending with positive weights (counts).
In 1-D an optimal k-means partition is contiguous in sorted order, so a solution is just
k+1 boundary positions per segment: cluster j holds positions [b[j], b[j+1]).

Two solvers share this representation:

* ``exact_boundaries``: the optimal partition by dynamic programming (as in Ckmeans.1d.dp),
  D_c[i] = min_j D_{c-1}[j-1] + cost(j, i), where the optimal j is monotone in i so each layer
  is solved by divide and conquer.  The divide-and-conquer runs level by level with every
  interval of every segment evaluated in one ragged numpy batch, so a layer costs
  O(log n) numpy passes over O(n) candidates.  O(k n log n) work: used for small inputs and
  as the reference the tests hold the fast path to.
* ``lloyd_boundaries``: Lloyd's iterations where one step costs O(k log n) instead of O(n):
  centroids come from prefix sums and the new boundaries from one searchsorted of the
  midpoints.  It starts from equal-mass (quantile) bins and runs until the boundaries stop
  moving.  Lloyd only guarantees a local optimum; for the unimodal, log-concave-like weight
  distributions of real models the fixed point is unique in the continuous limit and the
  tests check it reaches the DP's cost on such data.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Segments(NamedTuple):
    """Concatenated sorted histograms; segment g is positions [offsets[g], offsets[g+1])."""
    values: np.ndarray   # float64, sorted within each segment
    weights: np.ndarray  # float64 > 0
    offsets: np.ndarray  # intp, G + 1 entries


class Prefix(NamedTuple):
    """Prefix sums with a leading 0, over values centred per segment (less cancellation)."""
    w: np.ndarray   # sum of weights
    s: np.ndarray   # sum of w * (v - shift)
    q: np.ndarray   # sum of w * (v - shift)**2
    shift: np.ndarray  # per-segment shift (its weighted mean)


def prefix_sums(seg: Segments) -> Prefix:
    lengths = np.diff(seg.offsets)
    cw = np.concatenate(([0.0], np.cumsum(seg.weights)))
    cs_raw = np.concatenate(([0.0], np.cumsum(seg.weights * seg.values)))
    seg_w = cw[seg.offsets[1:]] - cw[seg.offsets[:-1]]
    shift = (cs_raw[seg.offsets[1:]] - cs_raw[seg.offsets[:-1]]) / seg_w
    centred = seg.values - np.repeat(shift, lengths)
    wc = seg.weights * centred
    return Prefix(cw, np.concatenate(([0.0], np.cumsum(wc))),
                  np.concatenate(([0.0], np.cumsum(wc * centred))), shift)


def _cluster_sums(p: Prefix, b: np.ndarray):
    lo, hi = b[..., :-1], b[..., 1:]
    return p.w[hi] - p.w[lo], p.s[hi] - p.s[lo], p.q[hi] - p.q[lo]


def centroids(p: Prefix, b: np.ndarray) -> np.ndarray:
    """(G, k) cluster means for boundaries b (G, k+1); empty clusters give NaN."""
    w, s, _ = _cluster_sums(p, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / w + p.shift[:, None]


def cost(p: Prefix, b: np.ndarray) -> np.ndarray:
    """(G,) weighted sum of squared errors of the partition b."""
    w, s, q = _cluster_sums(p, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(w > 0, q - s * s / np.where(w > 0, w, 1.0), 0.0)
    return np.maximum(within, 0.0).sum(axis=1)


def _make_valid(b: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move boundaries the least needed so every cluster holds at least one position."""
    k = b.shape[1] - 1
    steps = np.arange(k + 1)
    start, end = offsets[:-1, None], offsets[1:, None]
    b = np.clip(b, start + steps, end - k + steps)
    # strictly increasing  <=>  b - steps non-decreasing
    return np.maximum.accumulate(b - steps, axis=1) + steps


Searcher = Callable[[np.ndarray], np.ndarray]


def lloyd_boundaries(seg: Segments, p: Prefix, k: int, search: Searcher, max_iter: int = 2000,
                     start_b: np.ndarray | None = None) -> np.ndarray:
    """Boundaries (G, k+1) of Lloyd's fixed point from an equal-mass start.

    ``search(midpoints (G, k-1))`` returns, per segment, the first position whose value is
    >= the midpoint.  Every segment must hold at least k positions.
    """
    G = len(seg.offsets) - 1
    start, end = seg.offsets[:-1], seg.offsets[1:]
    if k == 1:
        return np.column_stack([start, end])
    total = p.w[end] - p.w[start]
    targets = p.w[start, None] + total[:, None] * (np.arange(1, k) / k)
    inner = np.searchsorted(p.w, targets, side="left")
    b = _make_valid(np.column_stack([start, inner, end]), seg.offsets) if start_b is None else start_b
    for _ in range(max_iter):
        c = centroids(p, b)
        mid = 0.5 * (c[:, :-1] + c[:, 1:])
        nb = _make_valid(np.column_stack([start, search(mid).reshape(G, k - 1), end]), seg.offsets)
        if np.array_equal(nb, b):
            break
        b = nb
    return b


def exact_boundaries(seg: Segments, p: Prefix, k: int) -> np.ndarray:
    """Optimal boundaries (G, k+1) by the divide-and-conquer DP.  Segments need >= k positions."""
    n = len(seg.values)
    start, end = seg.offsets[:-1], seg.offsets[1:]
    seg_start = np.repeat(start, np.diff(seg.offsets))

    def interval_cost(j, i):  # cluster = positions j..i inclusive
        w = p.w[i + 1] - p.w[j]
        s = p.s[i + 1] - p.s[j]
        return np.maximum(p.q[i + 1] - p.q[j] - s * s / w, 0.0)

    D = interval_cost(seg_start, np.arange(n))
    choices = []
    for c in range(2, k + 1):
        newD = np.full(n, np.inf)
        opt = np.zeros(n, np.int64)
        # Only prefixes that leave one position for each later cluster are needed.
        ilo, ihi = start + c - 1, end - 1 - (k - c)
        jlo, jhi = ilo.copy(), ihi.copy()
        while len(ilo):
            mid = (ilo + ihi) // 2
            jtop = np.minimum(jhi, mid)
            length = jtop - jlo + 1
            first = np.cumsum(length) - length
            task = np.repeat(np.arange(len(mid)), length)
            j = np.arange(length.sum()) - np.repeat(first - jlo, length)
            val = D[j - 1] + interval_cost(j, mid[task])
            best = np.minimum.reduceat(val, first)
            bj = np.minimum.reduceat(np.where(val <= best[task], j, n), first)
            newD[mid], opt[mid] = best, bj
            left, right = ilo <= mid - 1, mid + 1 <= ihi
            ilo, ihi, jlo, jhi = (np.concatenate(x) for x in (
                (ilo[left], mid[right] + 1), (mid[left] - 1, ihi[right]),
                (jlo[left], bj[right]), (bj[left], jhi[right])))
        D = newD
        choices.append(opt)
    b = np.empty((len(start), k + 1), np.int64)
    b[:, 0], b[:, k] = start, end
    last = end - 1
    for c in range(k, 1, -1):  # walk back: the last cluster of the best c-prefix starts at opt
        b[:, c - 1] = choices[c - 2][last]
        last = b[:, c - 1] - 1
    return b


def kmeans_1d(values: np.ndarray, k: int, weights: np.ndarray | None = None,
              method: str = "exact") -> tuple[np.ndarray, np.ndarray, float]:
    """Convenience single-array form: (sorted centroids, labels per input, weighted SSE).

    Duplicates are merged first; if there are at most k distinct values they are the centroids.
    """
    values = np.asarray(values, np.float64).ravel()
    weights = np.ones_like(values) if weights is None else np.asarray(weights, np.float64).ravel()
    uniq, inverse = np.unique(values, return_inverse=True)
    counts = np.bincount(inverse, weights=weights)
    keep = counts > 0
    uniq, counts = uniq[keep], counts[keep]
    remap = np.cumsum(keep) - 1
    if len(uniq) <= k:
        return uniq, remap[inverse], 0.0
    seg = Segments(uniq, counts, np.array([0, len(uniq)]))
    p = prefix_sums(seg)
    if method == "exact":
        b = exact_boundaries(seg, p, k)
    else:
        b = lloyd_boundaries(seg, p, k, lambda m: np.searchsorted(uniq, m, side="left"))
    labels_u = np.repeat(np.arange(k), np.diff(b[0]))
    return centroids(p, b)[0], labels_u[remap[inverse]], float(cost(p, b)[0])


def coarse_exact_start(seg: Segments, p: Prefix, k: int, bins: int = 128) -> np.ndarray:
    """Boundaries from the exact DP on a coarsened histogram, a start point for Lloyd.

    Each segment is cut into about ``bins`` runs of consecutive positions, equally spaced in
    a measure that mixes mass and value span (so neither the dense fp16 grid near zero nor
    the sparse tails hog the bins).  The DP is solved on the runs' (mean, mass) points and
    its boundaries mapped back to positions.  Lloyd then only has a fraction of a run to go,
    which it covers without stalling on the grid.
    """
    G = len(seg.offsets) - 1
    start, end = seg.offsets[:-1], seg.offsets[1:]
    lengths = end - start
    gid = np.repeat(np.arange(G), lengths)
    lo_v, hi_v = seg.values[start], seg.values[end - 1]
    span = np.where(hi_v > lo_v, hi_v - lo_v, 1.0)
    mass = (p.w[1:] - p.w[start][gid]) / (p.w[end] - p.w[start])[gid]
    u = 0.5 * mass + 0.5 * (seg.values - lo_v[gid]) / span[gid] + 2.0 * gid  # global, increasing
    targets = 2.0 * np.arange(G)[:, None] + np.arange(1, bins) / bins
    edges = np.searchsorted(u, targets, side="left")
    edges = np.column_stack([start, np.clip(edges, start[:, None], end[:, None]), end])
    edges = np.maximum.accumulate(edges, axis=1)
    keep = np.diff(edges, axis=1) > 0
    lo, hi = edges[:, :-1][keep], edges[:, 1:][keep]      # non-empty runs, segment order
    runs = keep.sum(axis=1)
    cw, cs = p.w[hi] - p.w[lo], p.s[hi] - p.s[lo]
    coarse = Segments(cs / cw + np.repeat(p.shift, runs), cw,
                      np.concatenate(([0], np.cumsum(runs))))
    kk = min(k, int(runs.min()))
    cb = exact_boundaries(coarse, prefix_sums(coarse), kk)
    run_start = np.concatenate((lo, [len(seg.values)]))
    b = run_start[cb]
    if kk < k:  # too few runs somewhere: pad with equal-mass cuts, fixed up below
        b = np.column_stack([b[:, :-1], np.repeat(b[:, -1:], k - kk, axis=1), b[:, -1:]])
    return _make_valid(b, seg.offsets)
