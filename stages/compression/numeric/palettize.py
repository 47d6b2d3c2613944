"""LUT palettization: every weight element (or vector) is replaced by an index into a small table.

Layout (iOS18 ``constexpr_lut_to_dense``):

* ``lut``: rank(weight) + 2 dims.  For each weight axis the number of LUTs along it (1, or
  the number of channel groups on ``channel_axis``), then ``2**nbits`` entries, then
  ``cluster_dim``.  Weight dtype.
* ``indices``: the weight's shape (``channel_axis`` divided by ``cluster_dim`` for vector
  palettization), values < 2**nbits, uint8 storage.
* ``vector_axis``: ``channel_axis`` for vector palettization, else None.
* ``per_channel_scale`` (``enable_per_channel_scale``): max|w| of each output channel,
  weight's rank with every axis but ``channel_axis`` of size 1, weight dtype; 0 -> 1.
  The dense weight is ``lut_to_dense(params) * per_channel_scale``.

Modes: ``kmeans`` (1-D k-means: provably optimal (the DP inside a Lloyd bracket) at every size
when numba compiles it, else on small problems, with a banded DP that is not guaranteed optimal
on large ones; see ``kmeans1d``), ``uniform`` (2**nbits evenly
spaced values from min to max), ``unique`` (the distinct values; smallest nbits that holds
them; ``None`` when there are more than 256), ``custom`` (``lut_function``, validated).

Limits: vector palettization (``cluster_dim > 1``) runs Lloyd with k-means++ seeding (not
provably optimal; d-dimensional k-means is NP-hard) and loops over groups in Python.
fp32/fp64 weights are sorted per group (slower, several copies of memory).

fp16 weights never have their floats sorted: each group is histogrammed on its 65,536 bit
patterns (positive patterns ascend in value, negative ones descend, so the value order
needs no reordering; short groups sort their 16-bit keys instead), the nearest LUT entry of
every element is read from a 65,536-entry table per group (a step function of the bit
pattern), and ``palettize_with_error`` gives the error sums of the result from the same
histograms (no pass over the elements).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

from ir.ops.quant import blockwise_shift_scale, lut_to_dense as ir_lut_to_dense

from . import kmeans1d as km
from ._checks import choice, float_weight, normalize_axis
from ._floatkeys import FP16_KEY, FP16_VALUE, ceil_to_dtype, sortable_key
from .errors import CompressionError, NotCompressible, message

NBITS = (1, 2, 3, 4, 6, 8)
MODES = ("kmeans", "uniform", "unique", "custom")
GRANULARITIES = ("per_tensor", "per_grouped_channel")
METHODS = ("auto", "exact", "fast")
# auto: the provably optimal solver (DP in a Lloyd bracket) always when it runs compiled (numba),
# else while (histogram positions) * k stays under this (per batch), the banded DP beyond.
EXACT_BUDGET = 1 << 22
_CHUNK = 1 << 20  # elements per pass in the histogram / assignment loops (bounds temporaries)
_BATCH = 1 << 22  # elements per k-means batch of groups (bounds histogram + DP memory)


class LutParams(NamedTuple):
    lut: np.ndarray
    indices: np.ndarray
    nbits: int
    vector_axis: Optional[int] = None
    per_channel_scale: Optional[np.ndarray] = None


class GroupedRows(NamedTuple):
    """The weight as (groups, elements per group) rows plus how to undo it."""
    rows: np.ndarray
    moved_shape: tuple
    channel_axis: int


def _to_rows(w: np.ndarray, channel_axis: int, groups: int) -> GroupedRows:
    moved = np.moveaxis(w, channel_axis, 0)
    return GroupedRows(np.ascontiguousarray(moved).reshape(groups, -1), moved.shape, channel_axis)


def _from_rows(flat: np.ndarray, g: GroupedRows) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(flat.reshape(g.moved_shape), 0, g.channel_axis))


def _lut_shape(rank: int, channel_axis: int, groups: int, entries: int, cluster_dim: int):
    shape = [1] * rank + [entries, cluster_dim]
    shape[channel_axis] = groups
    return shape


# ---------------------------------------------------------------- fp16 histograms

class Fp16Histograms(NamedTuple):
    """Per-row histograms of fp16 rows, in value order; -0 is counted as +0.

    Row g's distinct values are positions [offsets[g], offsets[g+1]) of ``keys`` (their
    sortable keys, see _floatkeys: ascending key = ascending value) and ``counts``.
    """
    keys: np.ndarray     # uint16
    counts: np.ndarray   # > 0; uint32 (int64 for rows of 2**32 elements or more: never in practice)
    offsets: np.ndarray  # int64, G + 1 entries


def _count_dtype(row_length: int):
    return np.uint32 if row_length < 1 << 32 else np.int64


_SIGN = 0x8000  # sign bit of an fp16 pattern; also the sortable key of +0
_MERGED_KEY = FP16_KEY.copy()
_MERGED_KEY[_SIGN] = _SIGN  # -0 takes +0's key
_MERGED_KEY.flags.writeable = False
# Rows shorter than these pay more for a 65,536-bin histogram / index table than for the row
# itself: they are sorted / searched instead (crossovers measured on 8M elements).  Sorts of
# rows from _RADIX_FROM elements use numpy's radix sort (kind 'stable' on 16-bit keys),
# shorter ones its quicksort.
_BINCOUNT_FROM = 1 << 14
_TABLE_FROM = 1 << 10
_RADIX_FROM = 1 << 10


def _fp16_histograms(rows: np.ndarray) -> Fp16Histograms:
    """Histograms of every row of a (G, m) fp16 array on the 65,536 bit patterns (no float sort)."""
    bits = rows.view(np.uint16)
    if rows.shape[1] < _BINCOUNT_FROM:
        per = max(1, _CHUNK // rows.shape[1])
        return _concat([_histograms_by_sort(bits[g:g + per]) for g in range(0, len(bits), per)])
    return _concat([_row_histogram(row) for row in bits])


def _concat(parts) -> Fp16Histograms:
    """One Fp16Histograms of the rows of several, in order."""
    lengths = np.concatenate([np.diff(p.offsets) for p in parts])
    return Fp16Histograms(np.concatenate([p.keys for p in parts]), np.concatenate([p.counts for p in parts]),
                          np.concatenate(([0], np.cumsum(lengths))))


def _row_histogram(bits: np.ndarray) -> Fp16Histograms:
    """The histogram of one row of fp16 bit patterns.

    Counting in bit-pattern order needs no reordering of the elements: positive patterns
    0x0000..0x7BFF already ascend in value and negative ones 0x8001..0xFBFF descend, so the
    value order of the patterns present is the negative ones reversed, then the positive ones.
    """
    hist = np.bincount(bits[:_CHUNK], minlength=1 << 16)
    for i in range(_CHUNK, bits.size, _CHUNK):
        hist += np.bincount(bits[i:i + _CHUNK], minlength=1 << 16)
    hist[0] += hist[_SIGN]  # -0 and +0 are one value
    hist[_SIGN] = 0
    present = np.flatnonzero(hist != 0)  # a bool mask: several times faster than on int64
    split = int(np.searchsorted(present, _SIGN))
    negative, positive = present[split:][::-1], present[:split]
    patterns = np.concatenate((negative, positive))
    keys = np.concatenate(((0xFFFF - negative), positive | _SIGN)).astype(np.uint16)
    return Fp16Histograms(keys, hist[patterns].astype(_count_dtype(bits.size)), np.array([0, len(keys)]))


def _histograms_by_sort(bits: np.ndarray) -> Fp16Histograms:
    """Histograms of a block of short rows, by sorting their keys."""
    G, m = bits.shape
    keys = _gather(_MERGED_KEY, bits.ravel(), np.empty(bits.size, np.uint16)).reshape(G, m)
    keys.sort(axis=1, kind="stable" if m >= _RADIX_FROM else "quicksort")
    flat = keys.ravel()
    new = np.empty(flat.size, bool)
    np.not_equal(flat[1:], flat[:-1], out=new[1:])
    new[::m] = True  # every row starts a run, so no run spans two rows
    first = np.flatnonzero(new)
    counts = np.diff(first, append=flat.size).astype(_count_dtype(m))
    return Fp16Histograms(flat[first], counts, np.searchsorted(first, np.arange(G + 1) * m))


def _segments_of(hist: Fp16Histograms):
    """Per-row fp16 histograms as k-means Segments (float64 values and counts)."""
    return km.Segments(_values(hist.keys), hist.counts.astype(np.float64), hist.offsets)


def _values(keys: np.ndarray) -> np.ndarray:
    """float64 values of fp16 sortable keys."""
    return _gather(FP16_VALUE, keys, np.empty(keys.size))


def _sorted_segments(rows: np.ndarray):
    """Per-row histograms by sorting (fp32/fp64)."""
    G, m = rows.shape
    srt = np.sort(rows, axis=1)
    new = np.ones(srt.shape, bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    flat_new = new.ravel()
    pos = np.flatnonzero(flat_new)
    counts = np.diff(np.append(pos, srt.size)).astype(np.float64)
    offsets = np.concatenate(([0], np.cumsum(new.sum(axis=1))))
    return km.Segments(srt.ravel()[pos].astype(np.float64), counts, offsets)


# ---------------------------------------------------------------- 1-D k-means over rows

def _kmeans_rows(rows: np.ndarray, k: int, method: str, hist: Fp16Histograms | None) -> np.ndarray:
    """Sorted centroids (G, k) float64; rows with < k distinct values repeat their largest.

    ``hist``: the rows' histograms when they are fp16 (the caller takes them once for k-means,
    the unique count and the error sums); None for fp32/fp64 rows, which are sorted per batch.

    Groups are solved in batches of about ``_BATCH`` elements: the histograms, prefix sums and
    DP temporaries of one batch are all that is alive at once (peak memory ~1-2x the weight
    instead of ~9x for 256 groups at once), and the smaller arrays stay in cache (faster too).
    """
    per = max(1, _BATCH // max(1, rows.shape[1]))
    return np.concatenate([_kmeans_batch(rows[g:g + per], k, method,
                                         None if hist is None else _histogram_rows(hist, g, g + per))
                           for g in range(0, rows.shape[0], per)])


def _kmeans_batch(rows: np.ndarray, k: int, method: str, hist: Fp16Histograms | None) -> np.ndarray:
    seg = _segments_of(hist) if hist is not None else _sorted_segments(rows)
    distinct = np.diff(seg.offsets)
    out = np.zeros((rows.shape[0], k))
    few = distinct <= k
    for g in np.flatnonzero(few):  # already exact: the distinct values themselves
        out[g, :distinct[g]] = seg.values[seg.offsets[g]:seg.offsets[g + 1]]
        out[g, distinct[g]:] = out[g, distinct[g] - 1]  # padding keeps the LUT sorted
    many = np.flatnonzero(~few)
    if len(many):
        if len(many) < len(distinct):
            sel = np.concatenate([np.arange(seg.offsets[g], seg.offsets[g + 1]) for g in many])
            seg = km.Segments(seg.values[sel], seg.weights[sel],
                              np.concatenate(([0], np.cumsum(distinct[many]))))
        p = km.prefix_sums(seg)
        solve = km.bracketed_boundaries if _exact(method, len(seg.values), k) else km.banded_exact_boundaries
        b = solve(seg, p, k)
        out[many] = km.centroids(p, b)
    return out


def _exact(method: str, positions: int, k: int) -> bool:
    """Whether a batch gets the provably optimal solver (see METHODS and EXACT_BUDGET)."""
    return method == "exact" or (method == "auto" and (km.jit_enabled() or positions * k <= EXACT_BUDGET))


def _assign_rows(rows: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Index of the nearest LUT entry (LUT rows sorted ascending) for every element, uint8.

    Nearest = the number of midpoints between consecutive entries that are <= the value
    (a value exactly halfway goes to the upper entry; fp16 -0 counts as just below +0, as its
    sortable key does: it takes the lower entry of a midpoint at exactly 0, with the same error).
    """
    a, b = lut[:, :-1].astype(np.float64), lut[:, 1:].astype(np.float64)
    with np.errstate(over="ignore"):
        mids = 0.5 * (a + b)
    mids = np.where(np.isfinite(mids), mids, 0.5 * a + 0.5 * b)  # fp64 entries near +-1.8e308
    if rows.dtype == np.float16:
        return _assign_fp16(rows, mids)
    G, m = rows.shape
    out = np.empty(rows.shape, np.uint8)
    for g in range(G):
        for i in range(0, m, _CHUNK):
            out[g, i:i + _CHUNK] = np.searchsorted(mids[g], rows[g, i:i + _CHUNK], side="right")
    return out


def _midpoint_keys(mids: np.ndarray) -> np.ndarray:
    """Sorted sortable keys of the midpoints rounded up to fp16: for an fp16 value v (but -0),
    v >= mid  <=>  v >= ceil_fp16(mid)  <=>  key(v) >= key(ceil_fp16(mid))."""
    with np.errstate(over="ignore"):  # nextafter(65504, inf), computed for 65504 but not taken
        keys = sortable_key(ceil_to_dtype(mids, np.float16)).astype(np.int64)
    return np.sort(keys, axis=1)  # already sorted but for a -0 midpoint after a +0 one


def _assign_fp16(rows: np.ndarray, mids: np.ndarray) -> np.ndarray:
    """fp16 rows: the index is a step function of the value, so of the bit pattern; long rows
    read it from a 65,536-entry table per row (one gather), short rows search their keys."""
    bits = rows.view(np.uint16)
    mid_keys = _midpoint_keys(mids)
    out = np.empty(rows.shape, np.uint8)
    if rows.shape[1] < _TABLE_FROM:
        keys = _gather(FP16_KEY, bits.ravel(), np.empty(bits.size, np.uint16)).reshape(bits.shape)
        per = max(1, _CHUNK // rows.shape[1])
        for g in range(0, rows.shape[0], per):
            out[g:g + per] = _search_keys(keys[g:g + per], mid_keys[g:g + per])
        return out
    entries, runs = _index_table_runs(mid_keys)
    for g, row in enumerate(bits):
        _gather(np.repeat(entries, runs[g]), row, out[g])  # the row's index table, then one gather
    return out


def _search_keys(keys: np.ndarray, mid_keys: np.ndarray) -> np.ndarray:
    """[g, i] -> #(mid_keys[g] <= keys[g, i]) for a block of rows, one searchsorted for all
    (the row number in the high bits keeps each row's keys and midpoints apart)."""
    row = np.arange(keys.shape[0], dtype=np.int64)[:, None]
    found = np.searchsorted((mid_keys | row << 16).ravel(), keys | row << 16, side="right")
    return found - row * mid_keys.shape[1]


_ENTRY = np.arange(256, dtype=np.uint8)
_ENTRY.flags.writeable = False


def _index_table_runs(mid_keys: np.ndarray):
    """(entries, runs (G, 2k)): np.repeat(entries, runs[g]) is row g's LUT index of every fp16
    bit pattern.  Positive patterns 0x0000..0x7FFF have keys 0x8000.. ascending, negative ones
    0x8000..0xFFFF keys 0x7FFF.. descending: the index runs up through the entries, then down."""
    G, k = mid_keys.shape[0], mid_keys.shape[1] + 1
    edges = np.concatenate([np.zeros((G, 1), np.int64), mid_keys, np.full((G, 1), 1 << 16)], axis=1)
    up = np.diff(np.clip(edges, _SIGN, 1 << 16), axis=1)
    down = np.diff(np.clip(edges, 0, _SIGN), axis=1)[:, ::-1]
    return np.concatenate([_ENTRY[:k], _ENTRY[k - 1::-1]]), np.concatenate([up, down], axis=1)


def _gather(table: np.ndarray, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[i] = table[indices[i]] (1-D, indices in range), in cache-sized chunks: np.take
    converts each chunk of indices to intp first.  (With out= and mode='clip': without them
    np.take of narrow indices is several times slower, and fancy indexing ~2x.)"""
    for i in range(0, indices.size, _CHUNK):
        np.take(table, indices[i:i + _CHUNK], out=out[i:i + _CHUNK], mode="clip")
    return out


# ---------------------------------------------------------------- error sums from histograms

_SUMS_BLOCK = 1 << 17  # histogram positions per block of rows: 1 MB float64 temporaries, in L2


class ErrorSums(NamedTuple):
    """What the error figures of a reconstruction r of w are made of."""
    err2: float   # sum (w - r)^2
    sig2: float   # sum w^2
    worst: float  # max |w - r|
    count: int    # elements


def _fp16_error_sums(hist: Fp16Histograms, lut: np.ndarray) -> ErrorSums:
    """Error sums of fp16 rows against their nearest LUT entries (as _assign_rows picks them),
    from the rows' histograms: the reconstruction depends on (row, value) only, so each
    distinct value's error is counted as often as the value occurs (-0, counted as +0 here,
    may take the other entry of a midpoint at exactly 0: the same error).  float64 throughout:
    differences and squares of fp16 values are exact; only the sums round.
    """
    lut = lut.astype(np.float64)
    mid_keys = _midpoint_keys(0.5 * (lut[:, :-1] + lut[:, 1:]))
    err2 = sig2 = worst = 0.0
    for g0, g1 in _row_blocks(hist.offsets, _SUMS_BLOCK):
        e2, s2, big = _block_error_sums(_histogram_rows(hist, g0, g1), lut[g0:g1], mid_keys[g0:g1])
        err2, sig2, worst = err2 + e2, sig2 + s2, max(worst, big)
    return ErrorSums(err2, sig2, worst, int(hist.counts.sum()))


def _row_blocks(offsets: np.ndarray, positions: int):
    """(g0, g1) ranges of consecutive rows holding about `positions` histogram positions each."""
    cuts = np.unique(np.searchsorted(offsets, np.arange(0, offsets[-1], positions), side="right") - 1)
    bounds = np.append(cuts, len(offsets) - 1)
    return zip(bounds[:-1].tolist(), bounds[1:].tolist())


def _histogram_rows(hist: Fp16Histograms, g0: int, g1: int) -> Fp16Histograms:
    """Rows g0..g1-1 of the histograms (g1 past the last row: to the end)."""
    g1 = min(g1, len(hist.offsets) - 1)
    a, b = hist.offsets[g0], hist.offsets[g1]
    return Fp16Histograms(hist.keys[a:b], hist.counts[a:b], hist.offsets[g0:g1 + 1] - a)


def _block_error_sums(hist: Fp16Histograms, lut: np.ndarray, mid_keys: np.ndarray):
    G, k = lut.shape
    # Where each entry's values begin among each row's sorted keys: one search for the block,
    # the row number in the high bits keeping the rows apart.
    row = np.arange(G, dtype=np.int64)[:, None] << 16
    keyed = hist.keys | np.repeat(row.ravel(), np.diff(hist.offsets))
    starts = np.searchsorted(keyed, (mid_keys | row).ravel()).reshape(G, k - 1)
    ends = np.column_stack((hist.offsets[:-1], starts, hist.offsets[1:]))
    values = _values(hist.keys)
    err = values - np.repeat(lut.ravel(), np.diff(ends, axis=1).ravel())
    counts = hist.counts.astype(np.float64)
    return float(np.sum(counts * err * err)), float(np.sum(counts * values * values)), float(np.max(np.abs(err)))


# ---------------------------------------------------------------- vector k-means

def _vector_kmeans(x: np.ndarray, k: int, seed: int = 0, max_iter: int = 300):
    """(centroids (k, d), labels) for rows of x: Lloyd from weighted k-means++ on distinct rows."""
    uniq, inverse, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    if len(uniq) <= k:
        cent = np.concatenate([uniq, np.repeat(uniq[-1:], k - len(uniq), axis=0)])
        return cent, inverse
    rng = np.random.default_rng(seed)
    pts, wts = uniq.astype(np.float64), counts.astype(np.float64)
    cent = [pts[rng.choice(len(pts), p=wts / wts.sum())]]
    d2 = ((pts - cent[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: next seed with probability ~ weight * squared distance
        prob = wts * d2
        nxt = pts[rng.choice(len(pts), p=prob / prob.sum())] if prob.sum() > 0 else pts[int(np.argmax(d2))]
        cent.append(nxt)
        d2 = np.minimum(d2, ((pts - nxt) ** 2).sum(1))
    cent = np.array(cent)
    labels = None
    for _ in range(max_iter):
        new = np.concatenate([np.argmin(((pts[i:i + 65536, None, :] - cent[None]) ** 2).sum(-1), axis=1)
                              for i in range(0, len(pts), 65536)])
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        mass = np.bincount(labels, weights=wts, minlength=k)
        sums = np.stack([np.bincount(labels, weights=wts * pts[:, j], minlength=k) for j in range(pts.shape[1])], 1)
        cent = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], cent)  # empty: keep
    return cent, labels[inverse]


def _vector_rows(rows: np.ndarray, cluster_dim: int, group_channels: int):
    """Rows (G, gs*R) -> per-group vectors (G, gs/cd * R, cd) along the channel direction."""
    G = rows.shape[0]
    r = rows.reshape(G, group_channels // cluster_dim, cluster_dim, -1)
    return np.ascontiguousarray(r.transpose(0, 1, 3, 2)).reshape(G, -1, cluster_dim)


# ---------------------------------------------------------------- modes on rows

def _nbits_for(count: int) -> Optional[int]:
    return next((n for n in NBITS if count <= (1 << n)), None)


def _distinct_per_row(rows: np.ndarray) -> np.ndarray:
    return np.array([len(np.unique(r)) for r in rows])


def _scalar_rows(rows, nbits, mode, method, with_error=False):
    """(lut (G, k, 1), indices (G, m), nbits, ErrorSums or None), or None (too many unique values).

    fp16 rows: their histograms are taken once for the unique count and the error sums."""
    hist = _fp16_histograms(rows) if rows.dtype == np.float16 and (with_error or mode != "uniform") else None
    if mode == "unique":
        distinct = np.diff(hist.offsets) if hist is not None else _distinct_per_row(rows)
        need = _nbits_for(int(distinct.max()))
        if need is None or (nbits is not None and need > nbits):
            return None
        nbits = nbits or need
    k = 1 << nbits
    if mode == "uniform":
        lo = rows.min(axis=1).astype(np.float64)[:, None]
        hi = rows.max(axis=1).astype(np.float64)[:, None]
        t = np.arange(k) / (k - 1)
        with np.errstate(over="ignore", invalid="ignore"):
            cent = lo + (hi - lo) * t
        if not np.all(np.isfinite(cent)):  # fp64 ranges wider than float64 holds
            cent = lo * (1 - t) + hi * t
    else:  # kmeans, or unique (k >= distinct values, so k-means returns exactly those values)
        cent = _kmeans_rows(rows, k, method, hist)
    lut = cent.astype(rows.dtype)
    error = _fp16_error_sums(hist, lut) if with_error and hist is not None else None
    return lut[:, :, None], _assign_rows(rows, lut), nbits, error


def _vector_rows_mode(rows, nbits, mode, cluster_dim, group_channels):
    vecs = _vector_rows(rows, cluster_dim, group_channels)
    if mode == "uniform":
        raise CompressionError("vector palettization (cluster_dim > 1) does not support mode 'uniform'")
    if mode == "unique":
        need = _nbits_for(max(len(np.unique(v, axis=0)) for v in vecs))
        if need is None or (nbits is not None and need > nbits):
            return None
        nbits = nbits or need
    luts, idx = zip(*(_vector_kmeans(v.astype(np.float64), 1 << nbits) for v in vecs))
    # Indices come back in (gs/cd, R) order per group, i.e. rows of the moved layout.
    return np.stack(luts).astype(rows.dtype), np.stack(idx).astype(np.uint8), nbits


# ---------------------------------------------------------------- custom

def _validate_custom(lut, indices, expected_size: int, dtype, name) -> tuple[np.ndarray, np.ndarray, int]:
    def fail(reason):
        raise CompressionError(message(f"lut_function returned {reason}", name))
    lut, indices = np.asarray(lut), np.asarray(indices)
    if lut.ndim == 0 or lut.dtype.kind not in "fiu":
        fail(f"a non-numeric or scalar LUT (dtype {lut.dtype}, shape {lut.shape})")
    entries = lut.shape[0]
    if lut.ndim > 2 or entries < 2 or entries > 256 or entries & (entries - 1):
        fail(f"a LUT of shape {lut.shape}; need 2**nbits entries (2..256), optionally x cluster_dim")
    if not np.all(np.isfinite(lut)):
        fail("a LUT with NaN or Inf")
    if indices.dtype.kind not in "iu":
        fail(f"indices of dtype {indices.dtype}; need integers")
    if indices.size != expected_size:
        fail(f"{indices.size} indices for {expected_size} elements")
    if indices.size and (indices.min() < 0 or indices.max() >= entries):
        fail(f"indices outside [0, {entries})")
    return lut.reshape(entries, -1).astype(dtype), indices.astype(np.uint8), entries.bit_length() - 1


def custom_lut(weight: np.ndarray, lut_function: Callable, *, name: str | None = None) -> LutParams:
    """Per-tensor LUT from a user ``lut_function(weight) -> (lut, indices)``, validated."""
    w = float_weight(weight, name=name)
    if not callable(lut_function):
        raise CompressionError(message("mode 'custom' needs a callable lut_function", name))
    lut, idx, nbits = _validate_custom(*_call(lut_function, w, name), w.size, w.dtype, name)
    if lut.shape[1] != 1:
        raise CompressionError(message("lut_function returned a vector LUT; only scalar LUTs are supported", name))
    return LutParams(lut.reshape([1] * w.ndim + list(lut.shape)), idx.reshape(w.shape), nbits)


def _call(fn, w, name):
    out = fn(w)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CompressionError(message("lut_function must return a (lut, indices) pair", name))
    return out


# ---------------------------------------------------------------- public entry points

def palettize(weight: np.ndarray, nbits: int | None = None, *, mode: str = "kmeans",
              granularity: str = "per_tensor", group_size: int | None = None, channel_axis: int = 0,
              cluster_dim: int = 1, enable_per_channel_scale: bool = False,
              lut_function: Callable | None = None, method: str = "auto",
              name: str | None = None) -> Optional[LutParams]:
    """Palettize ``weight``; see the module docstring for layouts.

    Returns None when ``mode='unique'`` finds more distinct values than 256 (or than
    ``2**nbits`` when nbits is given).  Raises NotCompressible when ``group_size`` or
    ``cluster_dim`` does not divide the channel axis (coremltools skips those weights).
    ``method``: 'exact' (the optimum: DP in a Lloyd bracket, compiled when numba is installed),
    'fast' (numpy DP in bands around a coarse optimum; not guaranteed optimal, see kmeans1d) or
    'auto' (exact when compiled; else exact while histogram positions * k <= EXACT_BUDGET per
    batch of groups, fast beyond).
    """
    return _palettize(with_error=False, **locals())[0]


def palettize_with_error(weight: np.ndarray, nbits: int | None = None, *, mode: str = "kmeans",
                         granularity: str = "per_tensor", group_size: int | None = None, channel_axis: int = 0,
                         cluster_dim: int = 1, enable_per_channel_scale: bool = False,
                         lut_function: Callable | None = None, method: str = "auto",
                         name: str | None = None) -> tuple[Optional[LutParams], Optional[ErrorSums]]:
    """``(palettize(...), error sums of lut_to_dense(params) against weight)``.

    The sums come from the fp16 histograms the kernel takes anyway (no pass over the
    elements), so only for fp16 weights with scalar modes kmeans / uniform / unique and no
    per-channel scale; otherwise (and when params is None) they are None: compute the figures
    from the reconstruction.
    """
    return _palettize(with_error=True, **locals())


def _palettize(weight, nbits, mode, granularity, group_size, channel_axis, cluster_dim,
               enable_per_channel_scale, lut_function, method, name, with_error):
    w = float_weight(weight, name=name)
    choice(mode, MODES, what="mode", name=name)
    choice(granularity, GRANULARITIES, what="granularity", name=name)
    choice(method, METHODS, what="method", name=name)
    axis = normalize_axis(channel_axis, w.ndim, what="channel_axis", name=name)
    if mode in ("kmeans", "uniform") or nbits is not None:
        if mode == "custom":
            raise CompressionError(message("mode 'custom' takes its nbits from lut_function", name))
        choice(nbits, NBITS, what="nbits", name=name)
    if mode == "custom" and granularity == "per_tensor" and cluster_dim == 1:
        return _with_scale(lambda v: (custom_lut(v, lut_function, name=name), None), w, axis,
                           enable_per_channel_scale)
    channels = w.shape[axis]
    group = channels if granularity == "per_tensor" else (group_size or 0)
    if group <= 0:
        raise CompressionError(message("per_grouped_channel needs a positive group_size", name))
    if channels % group:
        raise NotCompressible(message(f"{channels} channels not divisible by group_size {group}", name))
    if not isinstance(cluster_dim, (int, np.integer)) or cluster_dim < 1:
        raise CompressionError(message(f"invalid cluster_dim {cluster_dim!r}", name))
    if group % cluster_dim:
        raise NotCompressible(message(f"group of {group} channels not divisible by cluster_dim {cluster_dim}", name))
    if mode == "custom":
        raise CompressionError(message("mode 'custom' supports per_tensor scalar LUTs only", name))
    groups = channels // group

    def run(v):  # -> (LutParams or None, ErrorSums or None)
        rows = _to_rows(v, axis, groups)
        if cluster_dim == 1:
            res = _scalar_rows(rows.rows, nbits, mode, method, with_error and not enable_per_channel_scale)
        else:
            res = _vector_rows_mode(rows.rows, nbits, mode, cluster_dim, group)
            res = None if res is None else res + (None,)  # no error sums for vectors
        if res is None:
            return None, None
        lut, idx, nb, error = res
        if cluster_dim == 1:
            indices = _from_rows(idx, rows)
        else:
            moved = (rows.moved_shape[0] // cluster_dim,) + rows.moved_shape[1:]
            indices = np.ascontiguousarray(np.moveaxis(idx.reshape(moved), 0, axis))
        return LutParams(lut.reshape(_lut_shape(v.ndim, axis, groups, 1 << nb, cluster_dim)), indices, nb,
                         axis if cluster_dim > 1 else None), error
    return _with_scale(run, w, axis, enable_per_channel_scale)


def _with_scale(run, w, axis, enabled):
    """run(weight) -> (params, error); with the per-channel scale the weight is normalized first
    (the error sums, of the normalized weight, are then not the caller's: dropped)."""
    if not enabled:
        return run(w)
    others = tuple(a for a in range(w.ndim) if a != axis)
    scale = np.max(np.abs(w), axis=others, keepdims=True)
    scale = np.where(scale == 0, np.array(1, w.dtype), scale)
    work = np.float64 if w.dtype == np.float64 else np.float32
    params, _ = run((w.astype(work) / scale.astype(work)).astype(w.dtype))
    return (None if params is None else params._replace(per_channel_scale=scale)), None


def lut_to_dense(params: LutParams) -> np.ndarray:
    """Reconstruct the weight (times ``per_channel_scale`` when present): the kernels of the ops
    the stage emits (ir/ops/quant.py), ``constexpr_lut_to_dense`` then, for the scale,
    ``constexpr_blockwise_shift_scale``."""
    out = ir_lut_to_dense(params.indices, params.lut, params.vector_axis)
    if params.per_channel_scale is not None:
        out = blockwise_shift_scale(out, params.per_channel_scale.astype(params.lut.dtype), None)
    return out


def to_ios16(params: LutParams) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Flat iOS16 form of a per-tensor scalar LUT: (lut (2**nbits,), indices (size,) uint8, shape)."""
    lut = params.lut
    if lut.shape[-1] != 1 or any(n != 1 for n in lut.shape[:-2]) or params.per_channel_scale is not None:
        raise CompressionError("the iOS16 flat form holds per-tensor scalar LUTs without per-channel scale only")
    return lut.reshape(-1), np.asarray(params.indices, np.uint8).reshape(-1), params.indices.shape
