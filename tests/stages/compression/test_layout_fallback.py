"""A group or block size that does not divide the weight's axis: the largest size <= the
requested one that divides it is used (Core ML's constexpr ops take no ragged last group or
block), recorded in the stats; a weight no size makes smaller is left with its reason."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.compression import affine_quantize_weights, palettize_weights, sparsify_weights
from stages.compression.numeric.palettize import lut_to_dense, palettize
from tests.stages.compression.helpers import assert_decompress_exact, linear_program

RNG = np.random.default_rng(23)


def _op(prog, op_type):
    return next(o for o in prog.main.ops if o.op_type == op_type)


def _largest_divisor(n, at_most, multiple_of=1):
    return max((d for d in range(1, min(n, at_most) + 1) if n % d == 0 and d % multiple_of == 0), default=None)


# ---- palettization, per_grouped_channel ------------------------------------------------------

def test_group_falls_back_to_the_largest_divisor_and_each_group_is_optimal():
    w = (RNG.standard_normal((20, 128)) * 0.1).astype(np.float32)  # 20 channels: 16 does not divide them
    res = palettize_weights(nbits=4, granularity="per_grouped_channel", group_size=16,
                            kmeans_method="exact").run(linear_program(w))
    st_w = res.stats["weights"]["w"]
    assert st_w["group_size"] == 10 and st_w["group_size_requested"] == 16
    lut = _op(res.program, "constexpr_lut_to_dense").lut.val
    assert lut.shape == (2, 1, 16, 1)  # two LUTs of 10 channels each
    dense = assert_decompress_exact(res.program)
    # the stage's bound: optimal 1-D k-means within each group, i.e. what palettizing each
    # group of 10 channels on its own gives
    for g in range(2):
        rows = slice(10 * g, 10 * g + 10)
        alone = palettize(w[rows], 4, method="exact")
        ref_sse = float(np.sum((lut_to_dense(alone).astype(np.float64) - w[rows]) ** 2))
        sse = float(np.sum((dense[rows].astype(np.float64) - w[rows]) ** 2))
        assert sse == pytest.approx(ref_sse, rel=1e-9, abs=1e-12)
        assert len(np.unique(dense[rows])) <= 16
        assert set(np.unique(dense[rows]).tolist()) <= set(lut[g].ravel().tolist())


def test_group_larger_than_the_channels_is_one_group():
    w = (RNG.standard_normal((8, 300)) * 0.1).astype(np.float32)
    res = palettize_weights(nbits=4, granularity="per_grouped_channel", group_size=16).run(linear_program(w))
    st_w = res.stats["weights"]["w"]
    assert (st_w["group_size"], st_w["group_size_requested"]) == (8, 16)
    assert _op(res.program, "constexpr_lut_to_dense").lut.val.shape == (1, 1, 16, 1)


def test_dividing_group_is_kept_and_not_marked():
    w = (RNG.standard_normal((32, 96)) * 0.1).astype(np.float32)
    st_w = palettize_weights(nbits=4, granularity="per_grouped_channel", group_size=16).run(
        linear_program(w)).stats["weights"]["w"]
    assert st_w["group_size"] == 16 and "group_size_requested" not in st_w


def test_sparse_weight_group_falls_back_too():
    w = (RNG.standard_normal((20, 128)) * 0.1).astype(np.float32)
    sparse = sparsify_weights(linear_program(w), target_sparsity=0.5)
    res = palettize_weights(nbits=3, granularity="per_grouped_channel", group_size=8).run(sparse)
    st_w = res.stats["weights"]["w"]
    assert (st_w["group_size"], st_w["group_size_requested"]) == (5, 8)
    dense = assert_decompress_exact(res.program)
    assert np.all(dense[w == 0] == 0) and np.count_nonzero(dense) <= np.count_nonzero(sparse_value(sparse))
    for g in range(4):
        assert len(np.unique(dense[5 * g:5 * g + 5][dense[5 * g:5 * g + 5] != 0])) <= 8


def sparse_value(prog):
    return assert_decompress_exact(prog)


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 48), cols=st.integers(1, 40), group=st.integers(1, 20),
       cluster_dim=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_chosen_group_divides_and_is_the_largest(channels, cols, group, cluster_dim, seed):
    w = (np.random.default_rng(seed).standard_normal((channels, cols)) * 0.1).astype(np.float32)
    res = palettize_weights(nbits=2, granularity="per_grouped_channel", group_size=group, cluster_dim=cluster_dim,
                            op_selector=lambda v: True).run(linear_program(w))
    st_w = dict(res.stats["weights"]["w"])
    best = _largest_divisor(channels, group, cluster_dim)
    if best is None:
        assert st_w["skipped"] == (f"per_grouped_channel: no group size <= {group} divides the {channels} "
                                   f"channels and is a multiple of cluster_dim {cluster_dim}")
        return
    # an explicit op_selector is obeyed even where the LUTs outweigh the weight
    assert st_w["group_size"] == best and channels % best == 0 and best % cluster_dim == 0
    assert st_w.get("group_size_requested", group) == group and ("group_size_requested" in st_w) == (best != group)
    lut = _op(res.program, "constexpr_lut_to_dense").lut.val
    assert lut.shape == (channels // best, 1, 4, cluster_dim)
    assert_decompress_exact(res.program)


# ---- affine, per_block ----------------------------------------------------------------------

def _block_deq(prog):
    op = _op(prog, "constexpr_blockwise_shift_scale")
    return op.data.val, op.scale.val


def test_block_falls_back_to_the_largest_divisor_within_half_a_step():
    w = (RNG.standard_normal((64, 100)) * 0.1).astype(np.float32)  # 32 does not divide 100
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32).run(linear_program(w))
    st_w = res.stats["weights"]["w"]
    assert (st_w["block_size"], st_w["block_size_requested"]) == (25, 32)
    data, scale = _block_deq(res.program)
    assert scale.shape == (64, 4)
    dense = assert_decompress_exact(res.program)
    step = np.repeat(scale, 25, axis=1).astype(np.float64)
    # the stage's bound: |w - w_hat| <= scale / 2 per block (float rounding aside)
    assert np.all(np.abs(dense.astype(np.float64) - w) <= step / 2 * (1 + 1e-6))
    # each block's scale is its own max |w| / 7 (int4 symmetric), rounded to fp32
    blocks = np.abs(w).reshape(64, 4, 25).max(axis=2)
    assert np.allclose(scale, blocks / 7, rtol=1e-6)
    assert st_w["compressed_bytes"] == 64 * 100 // 2 + 64 * 4 * 4


def test_block_larger_than_the_axis_is_per_channel():
    w = (RNG.standard_normal((256, 16)) * 0.1).astype(np.float32)
    block = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32).run(linear_program(w))
    channel = affine_quantize_weights(linear_program(w), dtype="int4", granularity="per_channel")
    assert block.stats["weights"]["w"]["block_size"] == 16
    assert np.array_equal(assert_decompress_exact(block.program), assert_decompress_exact(channel))


def test_sparse_weight_block_falls_back_too():
    w = (RNG.standard_normal((32, 100)) * 0.1).astype(np.float32)
    sparse = sparsify_weights(linear_program(w), target_sparsity=0.5)
    res = affine_quantize_weights(dtype="int8", granularity="per_block", block_size=32).run(sparse)
    st_w = res.stats["weights"]["w"]
    assert (st_w["block_size"], st_w["block_size_requested"]) == (25, 32)
    dense = assert_decompress_exact(res.program)
    kept = sparse_value(sparse)
    assert np.all(dense[kept == 0] == 0)
    scale = _op(res.program, "constexpr_sparse_blockwise_shift_scale").scale.val
    assert scale.shape == (32, 4)
    step = np.repeat(scale, 25, axis=1).astype(np.float64)
    assert np.all(np.abs(dense.astype(np.float64) - kept) <= step / 2 * (1 + 1e-6))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 24), cols=st.integers(1, 80), block=st.integers(1, 40), seed=st.integers(0, 2 ** 16))
def test_chosen_block_divides_and_is_the_largest(rows, cols, block, seed):
    w = (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.1).astype(np.float32)
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=block,
                                  op_selector=lambda v: True).run(linear_program(w))
    st_w = dict(res.stats["weights"]["w"])
    best = _largest_divisor(cols, block)
    assert st_w["block_size"] == best and cols % best == 0
    assert ("block_size_requested" in st_w) == (best != block)
    assert _block_deq(res.program)[1].shape == (rows, cols // best)
    assert_decompress_exact(res.program)
