import numpy as np
import pytest
from hypothesis import given, strategies as st

from stages.compression import (CompressionError, OptimizationConfig, ParameterError, affine_quantize_weights,
                                decompress_weights, palettize_weights, sparsify_weights)
from stages.compression.config import ConfigError
from tests.stages.compression.helpers import assert_decompress_exact, linear_program, op_types

RNG = np.random.default_rng(1)


def _lut_and_indices(prog):
    op = next(o for o in prog.main.ops if o.op_type in ("constexpr_lut_to_dense", "constexpr_lut_to_sparse"))
    return op


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("mode", ["kmeans", "uniform"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_grouped_channel"])
def test_palettize_values_are_nearest_lut_entries(nbits, mode, granularity):
    w = (RNG.standard_normal((32, 96)) * 0.1).astype(np.float16)
    prog = linear_program(w)
    out = palettize_weights(prog, nbits=nbits, mode=mode, granularity=granularity, group_size=16)
    op = _lut_and_indices(out)
    assert op.indices.dtype == f"uint{nbits}" and op.lut.shape[-2:] == (1 << nbits, 1)
    w_hat = assert_decompress_exact(out)
    lut = op.lut.val.reshape(op.lut.shape[0], -1).astype(np.float64)  # (groups, entries)
    rows = lut[np.arange(32) // (32 // lut.shape[0])]
    dist = np.abs(w.astype(np.float64)[:, :, None] - rows[:, None, :])
    assert np.all(np.abs(w.astype(np.float64) - w_hat) <= dist.min(axis=2) + 1e-12)  # nearest entry
    assert np.all(np.any(w_hat[:, :, None] == rows[:, None, :], axis=2))  # values are LUT entries


def test_seed_uniform_example_and_unique():
    w = np.tile(np.array([0.1, 0.2, 0.3, 0.4], np.float32), (64, 16))
    out = palettize_weights(linear_program(w), mode="unique")
    op = _lut_and_indices(out)
    assert op.indices.dtype == "uint2" and np.allclose(op.lut.val.ravel(), [0.1, 0.2, 0.3, 0.4])
    res = palettize_weights(mode="unique").run(linear_program(RNG.standard_normal((64, 64)).astype(np.float32)))
    assert "more than 256" in res.stats["weights"]["w"]["skipped"]


def test_custom_lut_function_and_wrong_shape():
    w = RNG.standard_normal((64, 64)).astype(np.float32)

    def sign_lut(weight):
        return np.array([-1.0, 1.0]), (weight.ravel() > 0).astype(np.int32)

    out = palettize_weights(linear_program(w), mode="custom", lut_function=sign_lut)
    assert np.array_equal(assert_decompress_exact(out), np.where(w > 0, 1.0, -1.0).astype(np.float32))
    with pytest.raises(CompressionError, match="w: lut_function"):
        palettize_weights(linear_program(w), mode="custom", lut_function=lambda v: (np.zeros(4), np.zeros(7, int)))


def test_per_channel_scale_vector_and_ios16_forms():
    w = RNG.standard_normal((32, 128)).astype(np.float16)
    out = palettize_weights(linear_program(w), nbits=4, enable_per_channel_scale=True)
    assert op_types(out)[-2:] == ["constexpr_blockwise_shift_scale", "linear"]
    assert_decompress_exact(out)
    out = palettize_weights(linear_program(w), nbits=4, cluster_dim=2, granularity="per_grouped_channel", group_size=16)
    assert _lut_and_indices(out).lut.shape[-1] == 2
    assert_decompress_exact(out)
    out = palettize_weights(linear_program(w, opset="iOS16"), nbits=4)
    assert _lut_and_indices(out).lut.rank == 1
    assert_decompress_exact(out)
    with pytest.raises(CompressionError, match="iOS18"):
        palettize_weights(linear_program(w, opset="iOS16"), nbits=4, granularity="per_grouped_channel")


def test_bad_palettize_parameters_raise_when_bound():
    for kw, word in [(dict(nbits=5), "nbits"), (dict(mode="median"), "mode"), (dict(group_size=0), "group_size"),
                     (dict(mode="custom", nbits=4), "nbits")]:
        with pytest.raises(ParameterError, match=word):
            palettize_weights(**kw)
    with pytest.raises(ParameterError, match="nbits"):
        palettize_weights(linear_program(np.ones((64, 64), np.float32)))


def test_sparsify_seed_examples():
    w = np.tile(np.array([0.3, -0.2, -0.01, 0.05], np.float32), (64, 16))
    out = sparsify_weights(linear_program(w), threshold=0.03)
    assert np.array_equal(assert_decompress_exact(out)[0, :4], w[0, :4] * np.array([1, 1, 0, 1], np.float32))
    out = sparsify_weights(linear_program(w), mode="percentile_based", target_percentile=0.75)
    assert np.count_nonzero(assert_decompress_exact(out)) == w.size // 4
    op = next(o for o in out.main.ops if o.op_type == "constexpr_sparse_to_dense")
    assert op.mask.dtype == "uint1" and op.mask.shape == w.shape and op.nonzero_data.rank == 1


def test_n_m_on_input_axis():
    w = RNG.standard_normal((16, 256)).astype(np.float32)
    dense = assert_decompress_exact(sparsify_weights(linear_program(w), n_m_ratio=(2, 4)))
    assert np.all(np.count_nonzero(dense.reshape(16, 64, 4), axis=2) == 2)


def test_joint_forms_and_values():
    w = (RNG.standard_normal((64, 128)) * 0.1).astype(np.float16)
    sparse = sparsify_weights(linear_program(w), target_sparsity=0.5)
    pal = palettize_weights(sparse, nbits=4)
    assert op_types(pal)[-3:] == ["constexpr_lut_to_sparse", "constexpr_sparse_to_dense", "linear"]
    dense = assert_decompress_exact(pal)
    assert np.array_equal(dense == 0, assert_decompress_exact(sparse) == 0)  # zeros stay exactly zero
    lut = _lut_and_indices(pal).lut.val.ravel()
    assert set(np.unique(dense[dense != 0])) <= set(lut)
    q = affine_quantize_weights(pal, granularity="per_tensor")
    assert "constexpr_blockwise_shift_scale" in op_types(q)
    assert_decompress_exact(q)
    sq = affine_quantize_weights(sparse)
    assert op_types(sq)[-3:] == ["constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense", "linear"]
    assert_decompress_exact(sq)
    pq = affine_quantize_weights(palettize_weights(linear_program(w), nbits=4), granularity="per_tensor")
    assert op_types(pq)[-3:] == ["constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "linear"]
    assert op_types(decompress_weights(pq)) == ["const", "linear"]


def test_config_resolution_and_selector():
    w = RNG.standard_normal((64, 64)).astype(np.float32)
    prog = linear_program(w)
    assert palettize_weights(prog, nbits=4, op_selector=lambda v: False) is prog
    seen = []
    palettize_weights(prog, nbits=4, op_selector=lambda v: seen.append((v.name, v.consumer_types)) or False)
    assert seen == [("w", ("linear",))]
    cfg = OptimizationConfig.from_toml('[global_config]\nnbits = 2\n[op_type_configs.linear]\nnbits = 4\n'
                                       '[op_name_configs.w]\nnbits = 6\n')
    out = palettize_weights(prog, config=cfg, op_selector=lambda v: True)
    assert _lut_and_indices(out).indices.dtype == "uint6"
    cfg = OptimizationConfig.from_dict({"global_config": {"nbits": 2}, "op_name_configs": {"w": None}})
    assert palettize_weights(prog, config=cfg) is prog
    out = palettize_weights(prog, config={"global_config": {"nbits": 2}})
    assert _lut_and_indices(out).indices.dtype == "uint2"
    with pytest.raises(ConfigError, match="unknown key"):
        OptimizationConfig.from_dict({"globals": {}})
    with pytest.raises(ParameterError, match="nbits"):
        palettize_weights(prog, config={"global_config": {"nbits": 5}})


@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from([np.float16, np.float32]),
       st.sampled_from(["normal", "constant", "tiny", "two"]), st.integers(0, 2**31))
def test_property_every_stage_exact_and_pure(rows, cols, dt, kind, seed):
    rng = np.random.default_rng(seed)
    w = {"normal": rng.standard_normal((rows * 8, cols)), "constant": np.full((rows * 8, cols), 0.5),
         "tiny": rng.standard_normal((rows * 8, cols)) * 1e-6,
         "two": rng.choice([-0.25, 3.0], (rows * 8, cols))}[kind].astype(dt)
    prog = linear_program(w)
    before = prog.digest
    for stg in (affine_quantize_weights(op_selector=lambda v: True),
                affine_quantize_weights(dtype="uint4", mode="linear", op_selector=lambda v: True),
                palettize_weights(nbits=2, op_selector=lambda v: True),
                sparsify_weights(target_sparsity=0.3, op_selector=lambda v: True)):
        out = stg(prog)
        w_hat = assert_decompress_exact(out)
        assert w_hat.shape == w.shape and np.all(np.isfinite(w_hat))
    assert prog.digest == before
