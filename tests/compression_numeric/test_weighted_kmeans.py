"""Weighted 1-D k-means (numeric/weighted.py) against brute force and hand-computed cases."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.compression.numeric.weighted import nearest, weighted_centroids, weighted_cost, weighted_luts


def _brute_force(values, weights, k):
    """The least weighted SSE over every assignment of the values to k clusters."""
    best = np.inf
    for labels in itertools.product(range(k), repeat=len(values)):
        labels = np.array(labels)
        cost = 0.0
        for c in range(k):
            m = labels == c
            if m.any():
                mean = np.sum(weights[m] * values[m]) / np.sum(weights[m])
                cost += np.sum(weights[m] * (values[m] - mean) ** 2)
        best = min(best, cost)
    return best


def _cost_of(values, weights, cents):
    d = np.min((values[:, None] - cents[None, :]) ** 2, axis=1)
    return float(np.sum(weights * d))


def test_hand_example_the_heavy_value_gets_its_own_entry():
    # k=2 on [0, 1, 10]: the partitions are {0, 1}{10} and {0}{1, 10} (1-D optima are contiguous).
    # Unweighted they cost 0.5 and 40.5:
    values = np.array([0.0, 1.0, 10.0])
    c = weighted_centroids(values[None], np.array([[1.0, 1.0, 1.0]]), 2)[0]
    assert c.tolist() == [0.5, 10.0]
    # weights [100, 100, 1]: {0, 1} costs 50, {1, 10} costs 100*1/101*81 ~ 80.2 -> [0.5, 10]
    c = weighted_centroids(values[None], np.array([[100.0, 100.0, 1.0]]), 2)[0]
    assert c.tolist() == [0.5, 10.0]
    # weights [1, 100, 100]: {0, 1} costs 100/101 ~ 0.99, {1, 10} costs 50 * 81 -> [1/101, 10]
    c = weighted_centroids(values[None], np.array([[1.0, 100.0, 100.0]]), 2)[0]
    assert c[0] == pytest.approx(100 / 101) and c[1] == 10.0


def test_integer_weights_are_repeated_values():
    rng = np.random.default_rng(0)
    v = rng.normal(size=12)
    w = rng.integers(1, 5, size=12).astype(float)
    a = weighted_centroids(v[None], w[None], 3)[0]
    b = weighted_centroids(np.repeat(v, w.astype(int))[None], np.ones((1, int(w.sum()))), 3)[0]
    assert np.allclose(a, b)


@given(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=4, max_size=7),
       st.lists(st.floats(0.01, 50), min_size=7, max_size=7), st.integers(2, 3))
def test_optimal_against_brute_force(vals, wts, k):
    values = np.array(vals, np.float64)
    weights = np.array(wts[:len(vals)], np.float64)
    cents = weighted_centroids(values[None], weights[None], k)[0]
    best = _brute_force(values, weights, k)
    assert _cost_of(values, weights, cents) <= best * (1 + 1e-9) + 1e-9


def test_few_distinct_values_are_the_lut():
    c = weighted_centroids(np.array([[2.0, 1.0, 2.0, 1.0]]), np.ones((1, 4)), 4)[0]
    assert c.tolist() == [1.0, 2.0, 2.0, 2.0]


def test_weighted_luts_groups_and_nearest_indices():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(6, 10)).astype(np.float32)
    a = rng.uniform(0.1, 3.0, size=(1, 10))
    luts, idx = weighted_luts(m, 2, 3, a, np.float32)
    assert luts.shape == (3, 4) and luts.dtype == np.float32 and idx.shape == (6, 10)
    for g in range(3):
        rows = m[2 * g:2 * g + 2]
        assert np.array_equal(idx[2 * g:2 * g + 2], nearest(rows, luts[g]))
        brute = np.argmin(np.abs(rows[..., None].astype(np.float64) - luts[g].astype(np.float64)), axis=-1)
        assert np.array_equal(idx[2 * g:2 * g + 2], brute)
        # each group's LUT is the weighted optimum of its own values
        w_g = np.broadcast_to(a, rows.shape)
        own = weighted_cost(rows.ravel(), w_g.ravel(), luts[g], idx[2 * g:2 * g + 2].ravel())
        swapped = weighted_cost(rows.ravel(), w_g.ravel(), luts[(g + 1) % 3],
                                nearest(rows, luts[(g + 1) % 3]).ravel())
        assert own <= swapped + 1e-9


def test_weighting_lowers_the_weighted_error():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(16, 32))
    a = np.broadcast_to(rng.lognormal(0, 2, size=(1, 32)), m.shape)
    plain_lut, plain_idx = weighted_luts(m, 3, 1, None, np.float64)
    lut, idx = weighted_luts(m, 3, 1, a, np.float64)
    assert weighted_cost(m.ravel(), a.ravel(), lut[0], idx.ravel()) <= \
        weighted_cost(m.ravel(), a.ravel(), plain_lut[0], plain_idx.ravel())


def test_large_groups_are_binned_within_a_hair_of_the_exact_optimum(monkeypatch):
    import stages.compression.numeric.weighted as wk

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.standard_t(4, size=(2, 40_000)) * 0.05, rng.normal(size=(2, 10)) * 2], axis=1)
    weights = rng.exponential(size=values.shape) + 0.01
    exact = wk.weighted_centroids(values, weights, 16)
    monkeypatch.setattr(wk, "BIN_ABOVE", 1000)
    monkeypatch.setattr(wk, "BINS", 4096)
    binned = wk.weighted_centroids(values, weights, 16)
    for g in range(2):
        c_exact = _cost_of(values[g], weights[g], exact[g])
        c_binned = _cost_of(values[g], weights[g], binned[g])
        assert c_exact <= c_binned * (1 + 1e-9)  # the exact one is optimal
        assert c_binned <= c_exact * 1.001  # and binning loses almost nothing
        assert values[g].min() <= binned[g].min() and binned[g].max() <= values[g].max()
        assert np.all(np.diff(binned[g]) >= 0)


def test_the_bins_argument_bins_groups_larger_than_it_and_leaves_smaller_ones_exact():
    import stages.compression.numeric.weighted as wk

    rng = np.random.default_rng(5)
    values = rng.standard_t(4, size=(3, 6000)) * 0.05
    weights = rng.exponential(size=values.shape) + 0.01
    exact = wk.weighted_centroids(values, weights, 64)
    binned = wk.weighted_centroids(values, weights, 64, bins=4096)
    # a group of at most `bins` values is solved exactly (the same answer bit for bit)
    np.testing.assert_array_equal(wk.weighted_centroids(values[:, :4096], weights[:, :4096], 64, bins=4096),
                                  wk.weighted_centroids(values[:, :4096], weights[:, :4096], 64))
    for g in range(3):
        c_exact = _cost_of(values[g], weights[g], exact[g])
        c_binned = _cost_of(values[g], weights[g], binned[g])
        assert c_exact <= c_binned * (1 + 1e-9) and c_binned <= c_exact * 1.01
        assert not np.array_equal(exact[g], binned[g])  # it did bin
    lut, idx = wk.weighted_luts(values, 6, 3, weights, np.float64, bins=4096)
    np.testing.assert_array_equal(lut, np.sort(binned, axis=1))


def test_binned_segments_by_hand():
    from stages.compression.numeric.weighted import binned_segments

    # range [0, 4] in 2 bins of width 2: [0, 2) holds 0 (w 1) and 1 (w 3), [2, 4] holds 4 (w 2)
    seg = binned_segments(np.array([[0.0, 1.0, 4.0]]), np.array([[1.0, 3.0, 2.0]]), bins=2)
    assert seg.values.tolist() == [0.75, 4.0] and seg.weights.tolist() == [4.0, 2.0]
    assert seg.offsets.tolist() == [0, 2]
