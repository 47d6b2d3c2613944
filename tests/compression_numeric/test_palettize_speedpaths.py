"""The fp16 fast paths of palettization against the straightforward computations they replace:
bit-pattern histograms vs np.unique, index tables / key searches vs a float64 midpoint search,
error sums from histograms vs a float64 pass over the reconstruction."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stages.compression.numeric import lut_to_dense, palettize
from stages.compression.numeric.palettize import palettize_with_error

P = sys.modules["stages.compression.numeric.palettize"]  # the module (the package exports a function of that name)

TINY = 2.0 ** -24  # the smallest fp16 subnormal
EDGES = [0.0, -0.0, TINY, -TINY, 2.0 ** -14, -(2.0 ** -14), 65504.0, -65504.0, 1.0, -1.0]
fp16_values = st.one_of(st.sampled_from(EDGES), st.floats(width=16, allow_nan=False, allow_infinity=False))


def fp16_rows(max_rows=5, max_cols=40):
    shapes = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return shapes.flatmap(lambda s: hnp.arrays(np.float16, s, elements=fp16_values))


def sorted_luts(rows: int, entries: int):
    """Sorted fp16 LUT rows; entries mirrored (midpoints at exactly 0) and repeated ones included."""
    half = hnp.arrays(np.float16, (rows, entries // 2), elements=fp16_values)
    return st.tuples(half, st.booleans()).map(
        lambda t: np.sort(np.concatenate([t[0], -t[0] if t[1] else t[0]], axis=1), axis=1))


# ---- references ---------------------------------------------------------------------------

def reference_histogram(row: np.ndarray):
    """Distinct values (float64, -0 merged into +0) and their counts."""
    return np.unique(row.astype(np.float64) + 0.0, return_counts=True)  # -0.0 + 0.0 == +0.0


def reference_indices(rows: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Per row: the number of midpoints <= the value (ties go to the upper entry), except that
    -0 stays below a +0 midpoint (the fp16 sortable key puts -0 just below +0)."""
    out = np.empty(rows.shape, np.uint8)
    for g, (row, entries) in enumerate(zip(rows.astype(np.float64), lut.astype(np.float64))):
        mids = 0.5 * (entries[:-1] + entries[1:])
        idx = np.searchsorted(mids, row, side="right")
        negative_zero = (row == 0) & np.signbit(row)
        idx[negative_zero] -= np.count_nonzero((mids == 0) & ~np.signbit(mids))
        out[g] = idx
    return out


def reference_sums(rows: np.ndarray, lut: np.ndarray):
    w = rows.astype(np.float64)
    r = np.take_along_axis(lut.astype(np.float64), reference_indices(rows, lut).astype(np.int64), axis=1)
    e = w - r
    return math.fsum((e * e).ravel()), math.fsum((w * w).ravel()), float(np.max(np.abs(e))), w.size


def assert_histograms_match(hist, rows):
    assert hist.keys.dtype == np.uint16 and len(hist.offsets) == rows.shape[0] + 1
    for g, row in enumerate(rows):
        a, b = hist.offsets[g], hist.offsets[g + 1]
        values, counts = reference_histogram(row)
        np.testing.assert_array_equal(P.FP16_VALUE[hist.keys[a:b]], values)
        np.testing.assert_array_equal(hist.counts[a:b], counts)


# ---- histograms -----------------------------------------------------------------------------

@given(fp16_rows(), st.sampled_from([(0, 0), (1 << 30, 0), (1 << 30, 1 << 30)]))
def test_histograms_are_unique_with_counts(rows, thresholds):
    # every row through the 65,536-bin bincount, or sorted by numpy's radix sort, or its quicksort
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "_BINCOUNT_FROM", thresholds[0])
        mp.setattr(P, "_RADIX_FROM", thresholds[1])
        assert_histograms_match(P._fp16_histograms(rows), rows)


# Finite fp16 bit patterns drawn as integers: 600 float elements per example made hypothesis's
# float strategy filter too much (a FailedHealthCheck in CI).
finite_fp16_patterns = st.one_of(st.integers(0, 0x7BFF), st.integers(0x8000, 0xFBFF))


@given(hnp.arrays(np.uint16, (2, 300), elements=finite_fp16_patterns).map(lambda a: a.view(np.float16)))
def test_histograms_of_rows_longer_than_a_chunk_add_the_chunks_up(rows):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "_CHUNK", 64)  # rows of 300 elements: bincount in 5 chunks; sorting 1 row per block
        mp.setattr(P, "_BINCOUNT_FROM", 0)
        assert_histograms_match(P._fp16_histograms(rows), rows)
        mp.setattr(P, "_BINCOUNT_FROM", 1 << 30)
        assert_histograms_match(P._fp16_histograms(rows), rows)


def test_histogram_of_every_finite_fp16_value_by_hand():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)][None]  # 63,490 patterns: 63,489 values (-0 is +0)
    hist = P._fp16_histograms(finite)
    assert len(hist.keys) == 2 * 0x7BFF + 1
    assert np.all(np.diff(P.FP16_VALUE[hist.keys]) > 0)
    assert hist.counts[hist.keys == 0x8000].tolist() == [2] and hist.counts.sum() == finite.size


def test_segments_for_kmeans_are_the_histograms_in_float64():
    rows = np.array([[1.0, -0.0, 0.0, -2.0, 1.0], [3.0, 3.0, 3.0, 3.0, -65504.0]], np.float16)
    seg = P._segments_of(P._fp16_histograms(rows))
    assert seg.values.tolist() == [-2.0, 0.0, 1.0, -65504.0, 3.0]
    assert seg.weights.tolist() == [1.0, 2.0, 2.0, 1.0, 4.0] and seg.offsets.tolist() == [0, 3, 5]


# ---- assignment -----------------------------------------------------------------------------

@given(st.data(), st.sampled_from([2, 4, 16]), st.sampled_from([0, 1 << 30]))
def test_assignment_is_the_nearest_entry_ties_as_before(data, entries, table_from):
    # table_from 0: every row through its 65,536-entry index table; 1 << 30: every row searched
    rows = data.draw(fp16_rows())
    lut = data.draw(sorted_luts(rows.shape[0], entries))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "_TABLE_FROM", table_from)
        got = P._assign_rows(rows, lut)
    assert got.dtype == np.uint8 and got.shape == rows.shape
    np.testing.assert_array_equal(got, reference_indices(rows, lut))
    w, lut64 = rows.astype(np.float64), lut.astype(np.float64)  # and it is a nearest entry
    chosen = np.abs(w - np.take_along_axis(lut64, got.astype(np.int64), axis=1))
    assert np.all(chosen <= np.abs(w[:, :, None] - lut64[:, None, :]).min(axis=2))


def test_assignment_by_hand():
    lut = np.array([[-1.0, 1.0, 3.0, 3.0]], np.float16)  # midpoints 0, 2, 3
    rows = np.array([[-0.0, 0.0, -5.0, 1.99, 2.0, 3.0, 65504.0]], np.float16)
    for table_from in (0, 1 << 30):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(P, "_TABLE_FROM", table_from)
            assert P._assign_rows(rows, lut).tolist() == [[0, 1, 0, 1, 2, 3, 3]]


def test_assignment_counts_a_minus_zero_midpoint_after_plus_zero_ones():
    # equal entries in the order +0, +0, -0, -0: midpoints +0, +0, -0 (keys not ascending)
    lut = np.array([[0.0, 0.0, -0.0, -0.0]], np.float16)
    rows = np.array([[-0.0, 0.0, -1.0, 1.0]], np.float16)
    for table_from in (0, 1 << 30):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(P, "_TABLE_FROM", table_from)
            got = P._assign_rows(rows, lut)
        assert got.tolist() == reference_indices(rows, lut).tolist() == [[1, 3, 0, 3]]


def test_index_table_reads_positive_patterns_up_and_negative_ones_down():
    entries, runs = P._index_table_runs(P._midpoint_keys(np.array([[-1.5, 0.25]])))
    table = np.repeat(entries, runs[0])
    value_of = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.isfinite(value_of)
    expected = (value_of >= -1.5).astype(int) + (value_of >= 0.25)
    np.testing.assert_array_equal(table[finite], expected[finite])


# ---- error sums -----------------------------------------------------------------------------

@given(st.data(), st.sampled_from([2, 16]), st.sampled_from([4, 1 << 16]))
def test_error_sums_from_histograms_are_those_of_the_reconstruction(data, entries, block):
    rows = data.draw(fp16_rows())
    lut = data.draw(sorted_luts(rows.shape[0], entries))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "_SUMS_BLOCK", block)  # 4: blocks of a row or so; 65,536: one block
        got = P._fp16_error_sums(P._fp16_histograms(rows), lut)
    err2, sig2, worst, count = reference_sums(rows, lut)
    assert got.count == count and got.worst == worst  # differences of fp16 values are exact in float64
    assert got.err2 == pytest.approx(err2, rel=1e-12, abs=0)
    assert got.sig2 == pytest.approx(sig2, rel=1e-12, abs=0)


def test_error_sums_by_hand():
    rows = np.array([[1.0, 2.0, 2.0, 4.0], [-0.0, 0.0, 8.0, 8.0]], np.float16)
    lut = np.array([[1.0, 3.0], [0.0, 8.0]], np.float16)  # row 0 errors 0, 1, 1, 1
    got = P._fp16_error_sums(P._fp16_histograms(rows), lut)
    assert got == (3.0, 1 + 4 + 4 + 16 + 64 + 64, 1.0, 8)


# ---- the kernel's entry point -------------------------------------------------------------

CASES = [dict(nbits=2), dict(nbits=3, granularity="per_grouped_channel", group_size=1),
         dict(nbits=4, mode="uniform"), dict(mode="unique"), dict(nbits=2, channel_axis=1),
         dict(nbits=4, granularity="per_grouped_channel", group_size=2, method="fast")]


@pytest.mark.parametrize("kw", CASES)
@given(w=hnp.arrays(np.float16, st.tuples(st.sampled_from([2, 4]), st.integers(1, 30)), elements=fp16_values))
def test_palettize_with_error_is_palettize_plus_the_figures_sums(kw, w):
    params, sums = palettize_with_error(w, **kw)
    plain = palettize(w, **kw)
    if plain is None:  # unique: too many values
        assert params is None and sums is None
        return
    np.testing.assert_array_equal(params.lut, plain.lut)
    np.testing.assert_array_equal(params.indices, plain.indices)
    dense = lut_to_dense(params).astype(np.float64)
    e = w.astype(np.float64) - dense
    assert sums.count == w.size and sums.worst == float(np.max(np.abs(e)))
    assert sums.err2 == pytest.approx(math.fsum((e * e).ravel()), rel=1e-12, abs=0)
    assert sums.sig2 == pytest.approx(math.fsum((w.astype(np.float64) ** 2).ravel()), rel=1e-12, abs=0)


@pytest.mark.parametrize("w, kw", [
    (np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), dict(nbits=2)),  # fp32: no histograms
    (np.linspace(-1, 1, 64).astype(np.float16).reshape(8, 8), dict(nbits=2, enable_per_channel_scale=True)),
    (np.linspace(-1, 1, 64).astype(np.float16).reshape(8, 8), dict(nbits=2, cluster_dim=2)),
    (np.linspace(-1, 1, 64).astype(np.float16).reshape(8, 8),
     dict(mode="custom", lut_function=lambda v: (np.array([-1.0, 1.0]), (v >= 0).astype(np.uint8).ravel()))),
])
def test_no_sums_where_the_histograms_do_not_give_them(w, kw):
    params, sums = palettize_with_error(w, **kw)
    assert params is not None and sums is None


def test_unique_counts_minus_zero_as_zero_with_or_without_sums():
    w = np.array([[-0.0, 0.0], [1.0, 2.0]], np.float16)
    params, sums = palettize_with_error(w, mode="unique")
    assert params.nbits == 2 and palettize(w, mode="unique").nbits == 2
    assert sums.err2 == 0.0 and sums.worst == 0.0
