"""Weighted 1-D k-means on many independent segments at once.

Input is a histogram: per segment, values sorted ascending with positive weights (counts).
In 1-D an optimal k-means partition is contiguous in sorted order, so a solution is just
k+1 boundary positions per segment: cluster j holds positions [b[j], b[j+1]).

Three solvers share this representation (the first also runs compiled: ``kmeans1d_jit``):

* ``bracketed_boundaries``: the optimum, proven, usually several times faster than the full
  DP below.  Lloyd's map is monotone in 1-D (raising the boundaries raises every cell's mean,
  hence every midpoint, hence every new boundary), and the optimum is one of its fixed points:
  no point of an optimal cluster is strictly nearer the next cluster's mean.  By Tarski's
  theorem, Lloyd's iterates from the lowest possible boundaries stay below every fixed point
  (ties broken downwards), and those from the highest stay above (ties broken upwards), at
  every step, converged or not.  The DP restricted to the bands between the two is therefore
  the global optimum; an iteration cap only widens the bands, it never costs optimality.
  On a 4096x4096 normal fp16 weight the bands hold 9,000 of 23,500 histogram positions, most
  of them around the middle boundary near 0: ~1,200 cheap Lloyd steps plus the DP in the
  bands take 20 ms against 77 ms for the full DP.
* ``exact_boundaries``: the optimal partition by dynamic programming (as in Ckmeans.1d.dp),
  D_c[i] = min_j D_{c-1}[j-1] + cost(j, i), where the optimal j is monotone in i so each layer
  is solved by divide and conquer.  The divide-and-conquer runs level by level with every
  interval of every segment evaluated in one ragged numpy batch, so a layer costs
  O(log n) numpy passes over O(n) candidates: O(k n log n) work in all.
* ``banded_exact_boundaries``: the same DP with each boundary restricted to a band around
  the optimum of a coarsened histogram, bands widened until no boundary sits on an edge.
  Much less work on big batches (per-group palettization).  Lloyd's iterations were tried
  first and rejected: on small noisy groups they stall in local optima 1e-4..5e-2 above the
  DP's cost.  NOT a proof of optimality: "no boundary on a band edge" only shows the result
  is optimal within the bands.  On the benchmark weight (4096x4096 normal fp16, group 16)
  3 of 256 groups end 1e-4..9e-4 above the optimum (the coarse DP picks the wrong one of two
  near-equal basins whose middle boundaries are ~2,000 positions apart near 0); see the
  strict xfail in tests/compression_numeric/test_kmeans.py.

Also measured and not adopted (2026-11): a coarse-to-fine dense DP (16-32 candidates per
boundary, forward + backward through-costs, keep candidates whose through-cost is within a
margin of the best).  With margins derived from snapping-error bounds summed over all
boundaries the hulls shrink only ~2x per level and never around the middle boundary (near 0
the fp16 grid is so dense that thousands of positions cost almost the same); with per-boundary
margins they shrink ~5x per level but lose the optimum in 180 of 256 groups (the through-cost
profile is noisy with the other boundaries' snapping error).  Through-costs of the 128-run
coarse DP with a sound-looking margin (coarse minus fine cost) do contain every optimum of
the benchmark, but the bands they give average 700 positions (4,000 at the middle boundary):
slower than the full DP.

Without numba, the Lloyd bracket is not used for big batches of groups: on the 256 groups of the benchmark
it is exact and the DP inside it costs 0.34 s (the bands hold ~5,600 of ~13,300 positions per
group), but the ~1,400 vectorized Lloyd steps per batch of 64 noisy groups (a binary search per
group and boundary each step) cost ~1.1 s in all, against ~0.75 s for the whole banded solver.
Also measured in 2026-11 and not adopted, for the banded solver: a windowed (rows x width)
layout of the DP layer with sliding-window gathers (no faster: numpy's per-row gather cost
replaces the ragged bookkeeping); a three-level coarse -> medium (runs of 4-16 positions) ->
fine banding (half the time, but 12-30 of 256 groups land in a worse basin); red-black
ordering of the Lloyd steps (fewer sweeps, more work); two threads over batches (1.2-1.3x).
Soundness of the bracket is up to the rounding of the cell means: they are clamped into their
cells' value ranges and the iterates kept monotone and sorted, so rounding can only move a band
edge past a value lying within rounding of a midpoint, where either side costs the same.
"""
from __future__ import annotations

import os
from functools import cache
from importlib.util import find_spec
from typing import NamedTuple

import numpy as np

# The compiled engine (kmeans1d_jit) is imported on first use: numba's import alone costs more
# than the rest of the package's.
_NUMBA = find_spec("numba") is not None


def jit_enabled() -> bool:
    """True when the compiled engine is installed (numba) and not switched off (WEIGHTPRESS_JIT=0)."""
    return _NUMBA and os.environ.get("WEIGHTPRESS_JIT", "1") != "0"


@cache
def _jit():
    """The compiled engine, its kernels compiled for the argument types it passes (or loaded from
    numba's disk cache) on first use."""
    from . import kmeans1d_jit
    kmeans1d_jit.load_kernels()
    return kmeans1d_jit


class Segments(NamedTuple):
    """Concatenated sorted histograms; segment g is positions [offsets[g], offsets[g+1])."""
    values: np.ndarray   # float64, sorted within each segment
    weights: np.ndarray  # float64 > 0
    offsets: np.ndarray  # intp, G + 1 entries


class Prefix(NamedTuple):
    """Prefix sums with a leading 0 over values centred and scaled, and weights scaled, per segment.

    Centring at the segment's weighted mean, dividing values by a power of two near the largest
    deviation and weights by one near the segment's total weight keeps every segment's sums on
    the same footing: one segment of huge values or huge weights cannot swamp the rounding of
    the small segments batched after it (the sums run over the whole batch, and each segment
    adds at most ~1 to them).  Costs in these units differ from the true ones by
    scale**2 * mass per segment, which no argmin within a segment notices (nor a mean, a ratio
    of two sums); ``cost`` and ``centroids`` undo it.
    """
    w: np.ndarray   # sum of weights / mass
    s: np.ndarray   # sum of w / mass * u, u = (v - shift) / scale
    q: np.ndarray   # sum of w / mass * u**2
    shift: np.ndarray  # per-segment shift (its weighted mean)
    scale: np.ndarray  # per-segment power of two >= max |v - shift| (1 for a constant segment)
    mass: np.ndarray   # per-segment power of two > its total weight (1 for an empty segment)


def prefix_sums(seg: Segments) -> Prefix:
    lengths = np.diff(seg.offsets)
    firsts = np.minimum(seg.offsets[:-1], max(len(seg.values) - 1, 0))
    nonempty = lengths > 0
    per_segment = lambda ufunc, x, empty: (np.where(nonempty, ufunc.reduceat(x, firsts), empty)
                                           if len(x) else np.full(len(lengths), empty))
    total = per_segment(np.add, seg.weights, 1.0)
    shift = per_segment(np.add, seg.weights * seg.values, 0.0) / total
    centred = seg.values - np.repeat(shift, lengths)
    spread = per_segment(np.maximum, np.abs(centred), 0.0)
    scale = _power_of_two_above(spread)
    if not (np.isfinite(shift).all() and np.isfinite(scale).all()):
        # e.g. values near +-1.8e308: their weighted mean or spread overflows float64
        raise ValueError("1-D k-means: values too large for float64 sums (weighted mean or spread overflows)")
    centred /= np.repeat(scale, lengths)
    mass = _power_of_two_above(total)
    weights = seg.weights / np.repeat(mass, lengths)
    wc = weights * centred
    ps = _running_sum(wc)
    wc *= centred  # now w * u**2
    return Prefix(_running_sum(weights), ps, _running_sum(wc), shift, scale, mass)


def _power_of_two_above(x: np.ndarray) -> np.ndarray:
    """Per entry a power of two > x (1 where x is 0; inf past 2**1023): dividing by it is exact."""
    with np.errstate(over="ignore"):  # the caller refuses an inf
        return np.where(x > 0, np.ldexp(1.0, np.frexp(x)[1]), 1.0)


def _running_sum(x: np.ndarray) -> np.ndarray:
    """[0, x0, x0 + x1, ...], summed straight into place (no concatenated copy: on a 16M-value
    fp32 histogram each copy is 128 MB)."""
    out = np.empty(len(x) + 1)
    out[0] = 0.0
    np.cumsum(x, out=out[1:])
    return out


def _cluster_sums(p: Prefix, b: np.ndarray):
    lo, hi = b[..., :-1], b[..., 1:]
    return p.w[hi] - p.w[lo], p.s[hi] - p.s[lo], p.q[hi] - p.q[lo]


def _within(p: Prefix, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Scaled SSE of the clusters [lo, hi) about their means; 0 for an empty one."""
    w, s, q = p.w[hi] - p.w[lo], p.s[hi] - p.s[lo], p.q[hi] - p.q[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(np.where(w > 0, q - s * s / np.where(w > 0, w, 1.0), 0.0), 0.0)


def centroids(p: Prefix, b: np.ndarray) -> np.ndarray:
    """(G, k) cluster means for boundaries b (G, k+1); empty clusters give NaN."""
    w, s, _ = _cluster_sums(p, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / w * p.scale[:, None] + p.shift[:, None]


def cost(p: Prefix, b: np.ndarray) -> np.ndarray:
    """(G,) weighted sum of squared errors of the partition b."""
    return _within(p, b[..., :-1], b[..., 1:]).sum(axis=1) * p.scale ** 2 * p.mass


def _make_valid(b: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move boundaries the least needed so every cluster holds at least one position."""
    k = b.shape[1] - 1
    steps = np.arange(k + 1)
    start, end = offsets[:-1, None], offsets[1:, None]
    b = np.clip(b, start + steps, end - k + steps)
    # strictly increasing  <=>  b - steps non-decreasing
    return np.maximum.accumulate(b - steps, axis=1) + steps


def exact_boundaries(seg: Segments, p: Prefix, k: int, bands: tuple | None = None) -> np.ndarray:
    """Optimal boundaries (G, k+1) by the divide-and-conquer DP.  Segments need >= k positions.

    ``bands=(lo, hi)``, each (G, k+1), restricts boundary c to positions [lo[:, c], hi[:, c]]
    (the optimum under that restriction); None searches every feasible position.
    """
    n = len(seg.values)
    start, end = seg.offsets[:-1], seg.offsets[1:]
    steps = np.arange(k + 1)
    lo, hi = start[:, None] + steps, end[:, None] - k + steps  # feasible positions of each boundary
    if bands is not None:
        lo, hi = np.maximum(lo, bands[0]), np.minimum(hi, bands[1])
    # Prefix sums shifted by one so that a cluster j..i (inclusive) is pw1[i] - pw[j].
    pw, ps, pq = p.w, p.s, p.q
    pw1, ps1, pq1 = pw[1:], ps[1:], pq[1:]
    # Layer 1 (one cluster from the segment's start) only where layer 2 reads it: boundary 1's band.
    first, seg_of = _ranges(lo[:, 1] - 1, hi[:, 1] - 1)
    D = np.full(n, np.inf)
    D[first] = _within(p, start[seg_of], first + 1)
    # choice[c - 2][i]: start of the last cluster of the best c-cluster split of positions ..i
    index = np.int32 if n < 2 ** 31 else np.int64
    # Two layer buffers used in turn.  Entries a layer does not write must read as +inf (a
    # split ending below the band's lowest start is infeasible), so after a layer is consumed
    # only the entries it wrote are reset: filling all n entries per layer was a third of the
    # banded solver's time.
    buffers = [np.full(n, np.inf), D]
    written = [None, first]
    # E[j] = D[j-1] - pq[j]: the part of "best split before j, then a cluster j..i" that does not
    # depend on i, taken once per position of the band instead of once per candidate pair.
    E = np.empty(n)
    choices = []
    for c in range(2, k + 1):
        out = buffers[c % 2]
        if written[c % 2] is not None:
            out[written[c % 2]] = np.inf
        j, _ = _ranges(lo[:, c - 1], hi[:, c - 1])
        E[j] = D[j - 1] - pq[j]
        choice = np.empty(n, index)  # read back only where _dc_layer wrote
        written[c % 2] = _dc_layer(E, out, pw, ps, pw1, ps1, pq1, lo[:, c] - 1, hi[:, c] - 1,
                                   lo[:, c - 1], hi[:, c - 1], choice)
        D = out
        choices.append(choice)
    b = np.empty((len(start), k + 1), np.int64)
    b[:, 0], b[:, k] = start, end
    last = end - 1
    for c in range(k, 1, -1):  # walk back: the last cluster of the best c-prefix starts at choice
        b[:, c - 1] = choices[c - 2][last]
        last = b[:, c - 1] - 1
    return b


def _ranges(lo: np.ndarray, hi: np.ndarray):
    """The positions lo[g]..hi[g] of every segment concatenated, and the segment of each."""
    count = np.maximum(hi - lo + 1, 0)
    seg_of = np.repeat(np.arange(len(lo)), count)
    return np.arange(count.sum()) + np.repeat(lo - np.cumsum(count) + count, count), seg_of


def _dc_layer(E, newD, pw, ps, pw1, ps1, pq1, ilo, ihi, jlo, jhi, choice):
    """One DP layer: newD[i] = min_j D[j-1] + cost(j..i) for i in [ilo, ihi], j in [jlo, min(jhi, i)].

    With E[j] = D[j-1] - pq[j] (read only for j in [jlo, jhi]), D[j-1] + cost(j..i) is
    pq1[i] + E[j] - (ps1[i] - ps[j])**2 / (pw1[i] - pw[j]).  The best j is monotone in i, so the
    i-ranges are halved level by level (every range of every segment in one ragged batch) and
    each midpoint searches only between the best j's of its neighbours.  Writes the best
    (smallest) j of each i into ``choice``; returns the i's written.
    """
    mids = []
    # A cluster j..i needs i >= j: ends below the band's lowest start stay +inf (unwritten).
    # This also keeps every midpoint's j-range inside the band (jlo <= ilo holds all the way
    # down), so only entries the previous layer wrote are ever read.
    ilo = np.maximum(ilo, jlo)
    ok = ilo <= ihi
    ilo, ihi, jlo, jhi = ilo[ok], ihi[ok], jlo[ok].copy(), jhi[ok].copy()
    while len(ilo):
        mid = (ilo + ihi) >> 1
        jtop = np.minimum(jhi, mid)
        jbot = np.minimum(jlo, jtop)
        length = jtop - jbot + 1
        first = np.cumsum(length) - length
        j = np.arange(first[-1] + length[-1]) - np.repeat(first - jbot, length)
        w = np.repeat(pw1[mid], length) - pw[j]
        s = np.repeat(ps1[mid], length) - ps[j]
        s *= s
        s /= w
        val = E[j]
        val -= s
        best = np.minimum.reduceat(val, first)
        # the first candidate reaching the minimum of each midpoint
        hits = np.flatnonzero(val <= np.repeat(best, length))
        bj = j[hits[np.searchsorted(hits, first)]]
        newD[mid] = best + pq1[mid]
        choice[mid] = bj
        mids.append(mid)
        left, right = ilo < mid, mid < ihi
        ilo, ihi, jlo, jhi = (np.concatenate(x) for x in (
            (ilo[left], mid[right] + 1), (mid[left] - 1, ihi[right]),
            (jlo[left], bj[right]), (bj[left], jhi[right])))
    return np.concatenate(mids) if mids else np.zeros(0, np.intp)


def banded_exact_boundaries(seg: Segments, p: Prefix, k: int, max_rounds: int = 8) -> np.ndarray:
    """Exact DP restricted to bands around the coarse optimum, widened until no boundary
    lands on a band edge (then no single-boundary move outside the bands can help).

    Costs O(k * band * log band) per segment instead of O(k n log n).  Optimal within the final
    bands only: it can miss a better partition in another basin (see the module docstring).
    """
    b, near_lo, near_hi = coarse_exact_start(seg, p, k)  # bands: two coarse runs either side
    lengths = np.diff(seg.offsets)
    radius = np.maximum(np.maximum(b - near_lo, near_hi - b), 8)
    steps = np.arange(k + 1)
    feas_lo = seg.offsets[:-1, None] + steps
    feas_hi = seg.offsets[1:, None] - k + steps
    active = np.ones(len(lengths), bool)
    for _ in range(max_rounds):
        lo, hi = np.maximum(b - radius, feas_lo), np.minimum(b + radius, feas_hi)
        # Segments already settled keep their boundaries (a band of one position: no work).
        lo, hi = np.where(active[:, None], lo, b), np.where(active[:, None], hi, b)
        b = exact_boundaries(seg, p, k, (lo, hi))
        edge = ((b == lo) & (lo > feas_lo)) | ((b == hi) & (hi < feas_hi))
        active = active & edge.any(axis=1)
        if not active.any():
            break
        radius = np.where(active[:, None], radius * 4, radius)  # widen only where needed
    return b


# Lloyd steps per side of the bracket: enough for smooth histograms to converge (~600 on
# 16M normal fp16 weights); a capped bracket is still sound, only wider.
BRACKET_STEPS = 4096


def bracketed_boundaries(seg: Segments, p: Prefix, k: int, max_steps: int = BRACKET_STEPS,
                         engine: str = "auto") -> np.ndarray:
    """Optimal boundaries (G, k+1): the DP inside the Lloyd bracket (see the module docstring).

    Segments need more than k positions.  ``engine``: "numpy", "jit" (the compiled twin in
    ``kmeans1d_jit``, same answer, ~20x faster on many groups) or "auto" (jit when available).
    """
    if engine == "jit" or (engine == "auto" and jit_enabled()):
        return _jit().bracketed_boundaries(seg, p, k, max_steps)
    return exact_boundaries(seg, p, k, lloyd_bracket(seg, p, k, max_steps))


def lloyd_bracket(seg: Segments, p: Prefix, k: int, max_steps: int = BRACKET_STEPS):
    """(lo, hi), each (G, k+1): every optimal partition has lo <= b <= hi, boundary by boundary.

    lo: Lloyd's iterates from all boundaries at the segment's start, a value on a midpoint
    going to the upper cell; hi: from all at the end, a value on a midpoint going to the lower.
    """
    search = _segment_search(seg)
    start, end = seg.offsets[:-1], seg.offsets[1:]
    return (_climb(seg, p, k, start, "left", search, max_steps),
            _climb(seg, p, k, end, "right", search, max_steps))


def _segment_search(seg: Segments):
    """search(mids (G', k-1), segment ids (G',), side) -> positions: per-segment searchsorted."""
    if len(seg.offsets) == 2:
        return lambda mids, g, side: np.searchsorted(seg.values, mids, side=side)
    # Complex numbers compare lexicographically (real part first): segment id, then value,
    # so one binary search over all segments stays exact.
    keys = np.repeat(np.arange(len(seg.offsets) - 1), np.diff(seg.offsets)) + 1j * seg.values
    return lambda mids, g, side: np.searchsorted(keys, g[:, None] + 1j * mids, side=side)


def _climb(seg, p, k, init, side, search, max_steps):
    """Lloyd's map iterated from boundaries all at ``init`` until it stops moving (or the cap)."""
    start, end = seg.offsets[:-1], seg.offsets[1:]
    out = np.repeat(init[:, None], k + 1, axis=1)
    out[:, 0], out[:, k] = start, end
    up = side == "left"  # climbing up from the starts (else down from the ends)
    live, b = np.arange(len(start)), out.copy()
    for step in range(max_steps):
        old = b[:, 1:-1]
        inner = search(_lloyd_midpoints(seg, p, b, end[live] - 1, live), live, side)
        # In exact arithmetic the iterates move one way and stay sorted; these two lines only
        # undo what rounding of the means could do, and only ever towards the safe side.
        inner = np.maximum(inner, old) if up else np.minimum(inner, old)
        inner = np.minimum.accumulate(inner[:, ::-1], axis=1)[:, ::-1] if up else np.maximum.accumulate(inner, axis=1)
        moved = (inner != old).any(axis=1)
        b[:, 1:-1] = inner
        # Settled segments are dropped now and then, not every step: a settled segment is a
        # fixed point, so stepping it again is harmless, and the bookkeeping costs more.
        if step % 16 == 15 or not moved.any():
            out[live] = b
            live, b = live[moved], b[moved]
            if not len(live):
                return out
    out[live] = b
    return out


def _lloyd_midpoints(seg, p, b, last, g):
    """Midpoints between consecutive cell means.

    A mean is clamped into its cell's value range (rounding can push the mean of a one-value
    cell past the value), and an empty cell [i, i) counts as the value at i (the last value
    past the end): every mean is then monotone in the boundaries.
    """
    lo, hi = b[:, :-1], b[:, 1:]
    pw, ps = p.w[b], p.s[b]
    w, s = pw[:, 1:] - pw[:, :-1], ps[:, 1:] - ps[:, :-1]
    first = seg.values[np.minimum(lo, last[:, None])]
    final = seg.values[np.minimum(np.maximum(hi - 1, lo), last[:, None])]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.clip(s / np.where(w > 0, w, 1.0) * p.scale[g][:, None] + p.shift[g][:, None], first, final)
    return 0.5 * (mean[:, 1:] + mean[:, :-1])


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
    b = bracketed_boundaries(seg, p, k) if method == "exact" else banded_exact_boundaries(seg, p, k)
    labels_u = np.repeat(np.arange(k), np.diff(b[0]))
    return centroids(p, b)[0], labels_u[remap[inverse]], float(cost(p, b)[0])


def coarse_exact_start(seg: Segments, p: Prefix, k: int, bins: int = 128) -> np.ndarray:
    """Boundaries from the exact DP on a coarsened histogram (the bands' centres).

    Each segment is cut into about ``bins`` runs of consecutive positions, equally spaced in
    a measure that mixes mass and value span (so neither the dense fp16 grid near zero nor
    the sparse tails hog the bins).  The DP is solved on the runs' (mean, mass) points and
    its boundaries mapped back to positions.
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
    coarse = Segments(cs / cw * np.repeat(p.scale, runs) + np.repeat(p.shift, runs), cw,
                      np.concatenate(([0], np.cumsum(runs))))
    kk = min(k, int(runs.min()))
    cb = exact_boundaries(coarse, prefix_sums(coarse), kk)
    run_start = np.concatenate((lo, [len(seg.values)]))
    last = len(run_start) - 1
    b, near_lo, near_hi = run_start[cb], run_start[np.maximum(cb - 2, 0)], run_start[np.minimum(cb + 2, last)]
    if kk < k:  # too few runs somewhere: a band over the whole segment
        pad = lambda x: np.column_stack([x[:, :-1], np.repeat(x[:, -1:], k - kk, axis=1), x[:, -1:]])
        b = pad(b)
        near_lo = np.repeat(start[:, None], k + 1, axis=1)
        near_hi = np.repeat(end[:, None], k + 1, axis=1)
    return _make_valid(b, seg.offsets), near_lo, near_hi
