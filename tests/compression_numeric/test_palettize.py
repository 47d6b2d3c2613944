import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from stages.compression.numeric import (CompressionError, NotCompressible, kmeans_1d, lut_to_dense,
                                        palettize, to_ios16)


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def mse(a, b):
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_kmeans_by_hand():
    w = readonly(np.array([[0, 0, 1, 1], [10, 10, 11, 11]], np.float32))
    p = palettize(w, 1)
    assert p.lut.shape == (1, 1, 2, 1) and p.lut.dtype == np.float32
    np.testing.assert_array_equal(p.lut.ravel(), [0.5, 10.5])
    np.testing.assert_array_equal(p.indices, [[0, 0, 0, 0], [1, 1, 1, 1]])
    assert p.indices.dtype == np.uint8 and p.nbits == 1 and p.vector_axis is None


def test_uniform_seed_example():
    w = np.array([0.11, 0.19, 0.3, 0.08, 0.0, 0.02], np.float32)
    p = palettize(w, 2, mode="uniform")
    np.testing.assert_allclose(p.lut.ravel(), [0.0, 0.1, 0.2, 0.3], atol=1e-7)
    np.testing.assert_array_equal(p.indices, [1, 2, 3, 1, 0, 0])


def test_unique_picks_smallest_nbits_or_skips():
    p = palettize(np.array([[0.1, 0.2], [0.3, 0.4]], np.float16), mode="unique")
    assert p.nbits == 2
    np.testing.assert_array_equal(lut_to_dense(p), np.array([[0.1, 0.2], [0.3, 0.4]], np.float16))
    assert palettize(np.arange(5, dtype=np.float32), mode="unique").nbits == 3
    assert palettize(np.arange(5, dtype=np.float32), 2, mode="unique") is None
    assert palettize(np.arange(257, dtype=np.float16), mode="unique") is None
    # -0 and +0 are one value
    assert palettize(np.array([-0.0, 0.0, 1.0], np.float16), mode="unique").nbits == 1


def test_grouped_layout_and_optimality():
    rng = np.random.default_rng(0)
    w = readonly((rng.standard_normal((8, 96)) * 0.02).astype(np.float16))
    p = palettize(w, 2, granularity="per_grouped_channel", group_size=2)
    assert p.lut.shape == (4, 1, 4, 1) and p.indices.shape == w.shape
    dense = lut_to_dense(p)
    for g in range(4):  # each group's LUT is that group's optimal 4-means (up to fp16 LUT rounding)
        rows = w[2 * g:2 * g + 2].astype(np.float64)
        cent, _, sse = kmeans_1d(rows, 4)
        np.testing.assert_array_equal(p.lut[g, 0, :, 0], cent.astype(np.float16))
        assert np.sum((dense[2 * g:2 * g + 2] - rows) ** 2) <= sse * (1 + 1e-3)
    q = palettize(w.T.copy(), 2, granularity="per_grouped_channel", group_size=2, channel_axis=1)
    assert q.lut.shape == (1, 4, 4, 1)
    np.testing.assert_array_equal(q.indices, p.indices.T)


def test_indices_point_to_nearest_lut_entry():
    w = (np.random.default_rng(1).standard_normal((16, 64))).astype(np.float32)
    p = palettize(w, 3)
    lut = p.lut.ravel().astype(np.float64)
    nearest = np.abs(w[..., None] - lut).min(-1)
    np.testing.assert_allclose(np.abs(w - lut[p.indices]), nearest, rtol=0, atol=1e-7)


def test_vector_palettization():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((4, 2))
    w = np.concatenate([base[rng.integers(0, 4, 32)].T for _ in range(3)], axis=1).astype(np.float32)  # (2, 96)
    w = np.tile(w, (2, 1))  # (4, 96): rows pair up into 2-vectors along axis 0
    p = palettize(w, 2, cluster_dim=2, channel_axis=0)
    assert p.lut.shape == (1, 1, 4, 2) and p.indices.shape == (2, 96) and p.vector_axis == 0
    np.testing.assert_allclose(lut_to_dense(p), w, atol=1e-6)  # only 4 distinct vectors: exact
    with pytest.raises(NotCompressible):
        palettize(np.ones((3, 4), np.float32), 2, cluster_dim=2)


def test_per_channel_scale():
    w = np.array([[1, -2, 0.5, 0.25], [0, 0, 0, 0], [10, 20, 30, 40]], np.float32)
    p = palettize(w, 2, enable_per_channel_scale=True)
    np.testing.assert_array_equal(p.per_channel_scale, [[2], [1], [40]])
    assert np.abs(p.lut).max() <= 1  # clustering ran on channels normalised to max |w| = 1
    np.testing.assert_allclose(lut_to_dense(p), lut_to_dense(p._replace(per_channel_scale=None)) * p.per_channel_scale)
    w3 = w * np.array([[1], [1], [4]], np.float32)  # a channel's scale must not change its clustering
    p3 = palettize(w3, 2, enable_per_channel_scale=True)
    np.testing.assert_array_equal(p3.indices, p.indices)
    np.testing.assert_array_equal(p3.lut, p.lut)
    np.testing.assert_array_equal(p3.per_channel_scale, [[2], [1], [160]])


def test_custom_lut_function():
    def fn(w):
        return np.array([0.0, 1.0]), (w.ravel() > 0.5).astype(np.int32)
    p = palettize(np.array([[0.2, 0.9], [0.7, 0.1]], np.float32), mode="custom", lut_function=fn)
    np.testing.assert_array_equal(lut_to_dense(p), [[0, 1], [1, 0]])
    bad = {
        "3 entries": lambda w: (np.zeros(3), np.zeros(w.size, int)),
        "indices outside": lambda w: (np.zeros(2), np.full(w.size, 2)),
        "indices of dtype": lambda w: (np.zeros(2), np.zeros(w.size)),
        "3 indices for 4": lambda w: (np.zeros(2), np.zeros(3, int)),
        "pair": lambda w: np.zeros(2),
    }
    for reason, f in bad.items():
        with pytest.raises(CompressionError, match=f"w0: .*{reason.split()[0]}"):
            palettize(np.ones((2, 2), np.float32), mode="custom", lut_function=f, name="w0")


def test_ios16_flat_form():
    w = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float16)
    p = palettize(w, 4)
    lut, idx, shape = to_ios16(p)
    assert lut.shape == (16,) and idx.shape == (32,) and idx.dtype == np.uint8 and shape == (4, 8)
    np.testing.assert_array_equal(lut[idx].reshape(shape), lut_to_dense(p))
    with pytest.raises(CompressionError):
        to_ios16(palettize(w, 2, granularity="per_grouped_channel", group_size=2))


@pytest.mark.parametrize("kwargs, err", [
    (dict(nbits=5), "nbits"), (dict(nbits=4, mode="median"), "mode"),
    (dict(nbits=4, granularity="per_block"), "granularity"),
    (dict(nbits=4, granularity="per_grouped_channel"), "group_size"),
])
def test_invalid_options(kwargs, err):
    with pytest.raises(CompressionError, match=err):
        palettize(np.ones((4, 4), np.float32), **kwargs)
    with pytest.raises(NotCompressible):
        palettize(np.ones((6, 4), np.float32), 2, granularity="per_grouped_channel", group_size=4)
    with pytest.raises(CompressionError, match="NaN"):
        palettize(np.array([np.nan, 1], np.float16), 2)


@settings(max_examples=60, deadline=None)
@given(w=hnp.arrays(st.sampled_from([np.float16, np.float32]), hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                    elements=st.floats(-100, 100, width=16)),
       nbits=st.sampled_from([1, 2, 3, 4, 6, 8]), mode=st.sampled_from(["kmeans", "uniform", "unique"]))
def test_properties(w, nbits, mode):
    w.flags.writeable = False
    before = w.copy()
    p = palettize(w, None if mode == "unique" else nbits, mode=mode)
    np.testing.assert_array_equal(w, before)
    if p is None:
        assert len(np.unique(w)) > 256
        return
    assert p.indices.shape == w.shape and p.indices.dtype == np.uint8
    assert p.lut.shape == (1,) * w.ndim + (2 ** p.nbits, 1) and p.lut.dtype == w.dtype
    assert p.indices.max() < 2 ** p.nbits
    dense = lut_to_dense(p)
    if mode == "unique" or len(np.unique(w)) <= 2 ** nbits and mode == "kmeans":
        np.testing.assert_array_equal(dense, w)  # few distinct values: lossless
    if mode == "kmeans":  # optimal: no worse than the exact 1-D k-means (LUT rounding aside)
        _, _, sse = kmeans_1d(w.astype(np.float64), 2 ** nbits)
        lut = p.lut.ravel().astype(np.float64)
        tol = np.abs(lut).max() * np.finfo(w.dtype).eps * 4
        assert np.sum((dense.astype(np.float64) - w) ** 2) <= sse + w.size * tol * (tol + 2 * np.abs(w).max()) + 1e-12


def test_no_worse_than_coremltools(ct_passes):
    P = ct_passes.palettize_weights
    from coremltools.optimize import _utils as U
    w = (np.random.default_rng(5).standard_normal((64, 512)) * 0.02).astype(np.float16)
    for group in (0, 16):
        ref = P.grouped_channelwise_compress(w, "KMEANS", 4, 0, group)
        ours = palettize(w, 4, **(dict(granularity="per_grouped_channel", group_size=group) if group else {}))
        assert ours.lut.shape == ref.lut.shape and ours.indices.shape == ref.indices.shape
        assert mse(lut_to_dense(ours), w) <= mse(U.lut_to_dense(ref.indices, ref.lut), w) * (1 + 1e-6)
    ref = P.grouped_channelwise_compress(w, "UNIFORM", 4, 0, 0)
    ours = palettize(w, 4, mode="uniform")
    # coremltools builds the uniform grid in fp16 arithmetic (the step's rounding accumulates);
    # ours is the exact grid rounded once, so they agree to a few fp16 steps of the range.
    span = float(w.max()) - float(w.min())
    np.testing.assert_allclose(ours.lut.astype(np.float32), ref.lut.astype(np.float32), rtol=0, atol=span * 2 ** -7)
    assert np.mean(ours.indices == ref.indices) > 0.99


def test_batches_of_groups_give_the_same_luts_as_one_batch(monkeypatch):
    import importlib
    pal = importlib.import_module("stages.compression.numeric.palettize")
    rng = np.random.default_rng(4)
    w = readonly((rng.standard_normal((24, 40)) * 0.02).astype(np.float16))
    whole = palettize(w, 3, granularity="per_grouped_channel", group_size=2, method="exact")
    monkeypatch.setattr(pal, "_BATCH", 5 * 80)  # batches of 5, 5 and 2 groups of 2x40 elements
    batched = palettize(w, 3, granularity="per_grouped_channel", group_size=2, method="exact")
    np.testing.assert_array_equal(batched.lut, whole.lut)
    np.testing.assert_array_equal(batched.indices, whole.indices)
    for g in (0, 11):  # and each group's LUT is its own optimum
        np.testing.assert_array_equal(batched.lut[g, 0, :, 0], kmeans_1d(w[2 * g:2 * g + 2].astype(np.float64), 8)[0].astype(np.float16))


@pytest.mark.parametrize("nbits", [1, 2, 3])
def test_exactly_k_values_over_sixteen_decades_come_back_exactly(nbits):
    # k-means' centroids are means taken from prefix sums: with values of very different
    # magnitudes, the difference of two large prefix sums misses a tiny value by rounding. A
    # group with no more distinct values than entries must keep them as they are.
    k = 2 ** nbits
    rng = np.random.default_rng(nbits)
    for _ in range(20):
        values = (rng.choice([-1.0, 1.0], k) * 10.0 ** rng.uniform(-8, 8, k)).astype(np.float32)
        if len(np.unique(values)) < k:
            continue
        w = np.concatenate([values, rng.choice(values, 8 * 64 - k)]).reshape(8, 64)
        np.testing.assert_array_equal(lut_to_dense(palettize(w, nbits)), w)
