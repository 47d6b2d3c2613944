import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from stages.compression.numeric import (CompressionError, NotCompressible, error_figures, nm_mask,
                                        packed_nbytes, percentile_mask, snr_db, sparse_to_dense, sparsify,
                                        threshold_mask, total_nbytes)


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_threshold_by_hand():
    w = readonly(np.array([0.3, -0.2, -0.01, 0.05, 0.03], np.float32))
    s = threshold_mask(w, 0.03)  # <= threshold goes
    np.testing.assert_array_equal(s.mask, [True, True, False, True, False])
    np.testing.assert_array_equal(s.nonzero_data, np.array([0.3, -0.2, 0.05], np.float32))
    np.testing.assert_array_equal(sparse_to_dense(s.mask, s.nonzero_data), np.array([0.3, -0.2, 0, 0.05, 0], np.float32))


def test_percentile_by_hand_and_ties():
    s = percentile_mask(np.array([0.3, -0.2, -0.01, 0.05], np.float32), 0.75)
    np.testing.assert_array_equal(s.mask, [True, False, False, False])
    ties = percentile_mask(np.ones((2, 3), np.float16), 0.5)  # floor(6 * .5) = 3, earliest first
    np.testing.assert_array_equal(ties.mask, [[False, False, False], [True, True, True]])
    assert percentile_mask(np.ones(4, np.float32), 1.0).mask.sum() == 0
    assert percentile_mask(np.ones(4, np.float32), 0.0).mask.sum() == 4


def test_nm_by_hand_with_tail():
    w = np.array([[4, -1, 3, 2, 5, -6, 1]], np.float32)  # m=2 along axis 1: runs (4,-1) (3,2) (5,-6) tail (1)
    s = nm_mask(w, 1, 2, axis=1)
    # the tail (1) is padded by one pad that takes the single zeroing: it survives
    np.testing.assert_array_equal(s.mask, [[True, False, True, False, False, True, True]])
    s0 = nm_mask(np.array([[1, 5], [3, 2], [4, 9], [8, 1]], np.float32), 1, 2, axis=0)
    np.testing.assert_array_equal(s0.mask, [[False, True], [True, False], [False, True], [True, False]])
    with pytest.raises(NotCompressible):
        nm_mask(np.ones((2, 3), np.float32), 1, 2, axis=1)


@settings(max_examples=80, deadline=None)
@given(w=hnp.arrays(st.sampled_from([np.float16, np.float32]), hnp.array_shapes(min_dims=2, max_dims=3, min_side=4, max_side=9),
                    elements=st.floats(-10, 10, width=16)),
       m=st.integers(1, 2), n_frac=st.floats(0, 1), p=st.floats(0, 1), t=st.floats(0, 5))
def test_properties(w, m, n_frac, p, t):
    w.flags.writeable = False
    before = w.copy()
    n = int(round(n_frac * m))
    s = nm_mask(w, n, m, axis=1)
    runs = np.moveaxis(w, 1, -1)
    L = runs.shape[-1] - runs.shape[-1] % m
    full = np.abs(np.moveaxis(np.where(s.mask, w, 0) if True else w, 1, -1))[..., :L].reshape(-1, m)
    kept = np.moveaxis(s.mask, 1, -1)[..., :L].reshape(-1, m)
    assert np.all(kept.sum(1) <= m - n)  # at least n zeros in every full run
    mags = np.abs(runs)[..., :L].reshape(-1, m)
    for row, keep in zip(mags, kept):  # every kept value is >= every dropped one
        if keep.any() and (~keep).any():
            assert row[keep].min() >= row[~keep].max()
    del full
    pm = percentile_mask(w, p)
    dropped = w.size - pm.mask.sum() - np.sum((w == 0) & ~(pm.mask))  # zeros we chose
    assert (~pm.mask).sum() >= math.floor(w.size * p)
    assert np.sum(~pm.mask & (w != 0)) <= math.floor(w.size * p)
    tm = threshold_mask(w, t)
    np.testing.assert_array_equal(tm.mask, np.abs(w) > t)
    for sp in (s, pm, tm):
        np.testing.assert_array_equal(sp.nonzero_data, w[sp.mask])
        assert sp.mask.shape == w.shape and sp.mask.dtype == bool
    np.testing.assert_array_equal(w, before)


def test_matches_coremltools(ct_passes):
    P = ct_passes.prune_weights
    w = np.random.default_rng(0).standard_normal((16, 70)).astype(np.float32)
    for n, m in ((2, 4), (1, 3), (3, 8)):
        ref = P.compress_by_nm_sparsity(w, (n, m), 1)
        ref_mask = np.unpackbits(ref.mask, bitorder="little")[: w.size].reshape(w.shape).astype(bool)
        np.testing.assert_array_equal(nm_mask(w, n, m, axis=1).mask, ref_mask)
        ref0 = P.compress_by_nm_sparsity(w.T.copy(), (n, m), 0)
        ref0_mask = np.unpackbits(ref0.mask, bitorder="little")[: w.size].reshape(w.T.shape).astype(bool)
        np.testing.assert_array_equal(nm_mask(w.T, n, m, axis=0).mask, ref0_mask)
    ref = P.compress_by_threshold(w, 0.5, 0.0)
    np.testing.assert_array_equal(threshold_mask(w, 0.5).nonzero_data, ref.nonzero_data)
    # (size-1)*p integral and the percentile falls on an element: both zero the same count
    ref = P.compress_by_magnitude(w, 0.5)
    assert np.array_equal(percentile_mask(w, 0.5).nonzero_data, ref.nonzero_data)


def test_invalid():
    with pytest.raises(CompressionError, match="threshold"):
        threshold_mask(np.ones(3, np.float32), -1)
    with pytest.raises(CompressionError, match="target_percentile"):
        percentile_mask(np.ones(3, np.float32), 1.5)
    with pytest.raises(CompressionError, match="n <= m"):
        nm_mask(np.ones((2, 8), np.float32), 3, 2)
    with pytest.raises(CompressionError, match="sparsity mode"):
        sparsify(np.ones(3, np.float32), "random")
    with pytest.raises(CompressionError, match="x: .*NaN"):
        sparsify(np.array([np.nan], np.float32), name="x")


def test_metrics():
    w = np.array([3.0, 4.0])
    assert snr_db(w, w) == math.inf
    assert snr_db(w, np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25 / 1))
    assert snr_db(np.zeros(2), np.ones(2)) == -math.inf
    f = error_figures(w, np.array([2.5, 4.0]))
    assert f.max_abs_error == 0.5 and f.mse == pytest.approx(0.125)
    assert packed_nbytes(10, 4) == 5 and packed_nbytes(3, 3) == 2
    assert total_nbytes(np.zeros(4, np.float16), (100, 1)) == 8 + 13
