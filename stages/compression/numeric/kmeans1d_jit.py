"""The provably optimal 1-D k-means of ``kmeans1d.bracketed_boundaries``, compiled by numba.

Same algorithm, same arithmetic, same answer (tests compare the two boundary for boundary):
per segment, Lloyd's map climbed from the lowest and from the highest boundaries gives bands
that hold every optimal partition, and the DP by divide and conquer inside the bands picks the
optimum.  Only the execution differs.  In numpy every DP candidate passes through ~18 array
operations (15-30 ns each) and every Lloyd step through a batched binary search; compiled, a
candidate is a handful of instructions, a Lloyd step walks each boundary from where it was
(boundaries only move one way on each side of the bracket), and segments are shared out over
the cores.  On the 256 groups of a 4096x4096 fp16 weight (group 16): ~0.07 s against ~1.5 s.

The kernels hold no GIL and the cores are used through plain Python threads, not numba's
``parallel=True``: numba's OpenMP layer kills a process that forks after using it, and its
workqueue layer one that calls it from two threads at once; a library cannot forbid either.
One hazard remains, the one of any lazy import: a process that forks while another of its
threads is loading the engine (its first use: importing numba, ~0.15 s, and loading the kernels,
~0.3 s, or ~3 s to compile them on a machine's first use) can leave the child waiting on a lock
held by a thread that does not exist there.  A fork-time lock of ours around loading was tried
and removed: it deadlocks against logging's own fork-time lock.  Use the engine once before
forking from a threaded process, or the 'spawn' / 'forkserver' start methods.

numba is optional (``pip install weightpress[fast]``); without it, or with WEIGHTPRESS_JIT=0
in the environment, ``kmeans1d`` runs its numpy twin.  ``kmeans1d`` imports this module (and
numba, ~0.15 s) only on first use; kernels compile on a machine's first use (~3 s), then load
from numba's disk cache.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - exercised by installs without the [fast] extra
    njit = None

AVAILABLE = njit is not None
MAX_THREADS = 8


def bracketed_boundaries(seg, p, k: int, max_steps: int) -> np.ndarray:
    """(G, k+1) optimal boundaries; arguments as ``kmeans1d.bracketed_boundaries``."""
    offsets = _plain(seg.offsets, np.int64)
    arrays = tuple(_plain(x, np.float64) for x in (seg.values, p.w, p.s, p.q, p.shift, p.scale)) + (offsets,)
    G = len(offsets) - 1
    out = np.empty((G, k + 1), np.int64)
    # Segments shared out in runs of about equal histogram positions, one run per thread.
    threads = max(1, min(os.cpu_count() or 1, MAX_THREADS, G))
    cuts = np.unique(np.searchsorted(offsets, np.linspace(0, offsets[-1], threads + 1)[1:-1]))
    runs = list(zip(np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [G])).tolist()))
    solve = lambda run: _solve_range(*arrays, int(k), int(max_steps), run[0], run[1], out)
    if len(runs) == 1:
        solve(runs[0])
    else:
        with ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(solve, runs))
    return out


def _plain(x: np.ndarray, dtype) -> np.ndarray:
    """Contiguous, of ``dtype`` and writable: numba compiles a separate version (seconds) for
    each array type, and read-only is a type of its own (the IR's arrays are read-only)."""
    x = np.ascontiguousarray(x, dtype)
    return x if x.flags.writeable else x.copy()


def load_kernels() -> None:
    """Compile the kernels for the argument types ``bracketed_boundaries`` passes, or load them
    from numba's disk cache (``kmeans1d`` calls this once, on first use)."""
    one = np.arange(3.0)
    _solve_range(one, one.copy(), one.copy(), one.copy(), np.zeros(1), np.ones(1),
                 np.array([0, 2], np.int64), 1, 1, 0, 1, np.empty((1, 2), np.int64))


if AVAILABLE:

    @njit(cache=True, nogil=True, inline="always")
    def _cell_mean(values, pw, ps, shift, scale, lo, hi, last):
        # As kmeans1d._lloyd_midpoints: clamped into the cell's value range, and an empty
        # cell [i, i) counts as the value at i, so the mean is monotone in the boundaries.
        w = pw[hi] - pw[lo]
        s = ps[hi] - ps[lo]
        first = values[min(lo, last)]
        final = values[min(max(hi - 1, lo), last)]
        mean = s / (w if w > 0 else 1.0) * scale + shift
        return min(max(mean, first), final)

    @njit(cache=True, nogil=True)
    def _climb(values, pw, ps, shift, scale, start, end, k, up, max_steps, b):
        """Lloyd's map from all boundaries at the start (up) or the end, into b (k+1,)."""
        last = end - 1
        means = np.empty(k)
        b[0], b[k] = start, end
        for c in range(1, k):
            b[c] = start if up else end
        for _ in range(max_steps):
            for c in range(k):  # Jacobi: every mean from the previous boundaries
                means[c] = _cell_mean(values, pw, ps, shift, scale, b[c], b[c + 1], last)
            moved = False
            if up:
                # A value on a midpoint goes up: the boundary is the first value >= midpoint.
                # Iterates only rise, so walk up from the old boundary (that also applies the
                # numpy twin's max(new, old)); min with the boundary above keeps them sorted.
                above = end
                for c in range(k - 1, 0, -1):
                    mid = 0.5 * (means[c - 1] + means[c])
                    t = b[c]
                    while t < end and values[t] < mid:
                        t += 1
                    t = min(t, above)
                    moved |= t != b[c]
                    b[c] = above = t
            else:
                below = start
                for c in range(1, k):
                    mid = 0.5 * (means[c - 1] + means[c])
                    t = b[c]
                    while t > start and values[t - 1] > mid:
                        t -= 1
                    t = max(t, below)
                    moved |= t != b[c]
                    b[c] = below = t
            if not moved:
                return

    @njit(cache=True, nogil=True)
    def _layer(E, newD, pw, ps, pw1, ps1, pq1, ilo, ihi, jlo, jhi, choice, choice_at):
        """newD[i] = pq1[i] + min_j E[j] - (ps1[i] - ps[j])**2 / (pw1[i] - pw[j]) for i in
        [ilo, ihi], j in [jlo, min(jhi, i)]; the first best j goes to choice[choice_at + i].
        E holds j = jlo.. from index 0, newD i = ilo.. from index 0 (band-sized buffers).

        Divide and conquer on i (the best j is monotone in i) with an explicit stack; each
        midpoint searches between its neighbours' best j's, as the numpy twin's levels do.
        """
        e0, d0 = jlo, ilo
        ilo = max(ilo, jlo)  # a cluster j..i needs i >= j (the ends below stay +inf)
        if ilo > ihi:
            return
        stack = np.empty((64, 4), np.int64)  # one pending sibling per level: depth <= log2(n)
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = ilo, ihi, jlo, jhi
        top = 1
        while top:
            top -= 1
            a, z, jl, jh = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            mid = (a + z) >> 1
            jtop = min(jh, mid)
            wi, si = pw1[mid], ps1[mid]
            best, bj = np.inf, min(jl, jtop)
            for j in range(bj, jtop + 1):
                s = si - ps[j]
                v = E[j - e0] - s * s / (wi - pw[j])
                if v < best:
                    best, bj = v, j
            newD[mid - d0] = best + pq1[mid]
            choice[choice_at + mid] = bj
            if mid < z:
                stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mid + 1, z, bj, jh
                top += 1
            if a < mid:
                stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = a, mid - 1, jl, bj
                top += 1

    @njit(cache=True, nogil=True)
    def _solve_segment(values, pw, ps, pq, shift, scale, start, end, k, max_steps, out):
        n = end - start
        lo = np.empty(k + 1, np.int64)
        hi = np.empty(k + 1, np.int64)
        _climb(values, pw, ps, shift, scale, start, end, k, True, max_steps, lo)
        _climb(values, pw, ps, shift, scale, start, end, k, False, max_steps, hi)
        for c in range(k + 1):  # clipped to the feasible positions, made segment-relative
            lo[c] = max(lo[c], start + c) - start
            hi[c] = min(hi[c], end - k + c) - start
        pwl, psl, pql = pw[start:end + 1], ps[start:end + 1], pq[start:end + 1]
        pw1, ps1, pq1 = pwl[1:], psl[1:], pql[1:]
        # Layer c (its best costs D and choices) is kept only over boundary c's band, ends
        # i = lo[c]-1 .. hi[c]-1: memory in the bands' width, not in the segment's length.
        width = np.maximum(hi - lo + 1, 0)
        choice_at = np.zeros(k + 2, np.int64)
        for c in range(1, k + 1):
            choice_at[c + 1] = choice_at[c] + width[c]
        choice = np.empty(choice_at[k + 1], np.int64)
        D = np.empty(width[1])
        for x in range(width[1]):  # one cluster [0, i], i = lo[1] - 1 + x
            i = lo[1] - 1 + x
            w, s, q = pw1[i] - pwl[0], ps1[i] - psl[0], pq1[i] - pql[0]
            D[x] = max(q - s * s / w, 0.0) if w > 0 else 0.0
        for c in range(2, k + 1):
            # E[j] = D[j - 1] - pq[j] over boundary c-1's band j = lo[c-1] + x: D's index x too
            E = np.empty(width[c - 1])
            for x in range(width[c - 1]):
                E[x] = D[x] - pql[lo[c - 1] + x]
            D = np.full(width[c], np.inf)
            _layer(E, D, pwl, psl, pw1, ps1, pq1, lo[c] - 1, hi[c] - 1, lo[c - 1], hi[c - 1],
                   choice, choice_at[c] - (lo[c] - 1))
        out[0], out[k] = start, end
        last = n - 1
        for c in range(k, 1, -1):  # walk back: the last cluster of the best c-prefix
            j = choice[choice_at[c] - (lo[c] - 1) + last]
            out[c - 1] = start + j
            last = j - 1

    @njit(cache=True, nogil=True)
    def _solve_range(values, pw, ps, pq, shift, scale, offsets, k, max_steps, g0, g1, out):
        for g in range(g0, g1):
            _solve_segment(values, pw, ps, pq, shift[g], scale[g], offsets[g], offsets[g + 1],
                           k, max_steps, out[g])
