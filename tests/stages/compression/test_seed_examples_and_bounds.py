"""The seed docstrings' worked examples at the stage level, per-mode error bounds for
sparsify, bad input for every stage, the target_sparsity alias, config by consumer op
name, the coremltools cross-check of mode "linear" (and why fp16 differs), joint
palettization on the nonzero values only, and the recorded error figures."""
import math

import numpy as np
import pytest

from stages.compression import (CompressionError, OptimizationConfig, ParameterError, affine_quantize_weights,
                                palettize_weights, sparsify_weights)
from stages.compression.config import ConfigError
from stages.compression.numeric.metrics import error_figures
from tests.stages.compression.helpers import assert_decompress_exact, linear_program

RNG = np.random.default_rng(7)
ALL = dict(op_selector=lambda v: True)


def _op(prog, op_type):
    return next(o for o in prog.main.ops if o.op_type == op_type)


def _const(prog, name):
    return next(o.outputs[0] for o in prog.main.ops if o.name == name)


def _row(values, rows=4, dt=np.float32):
    return np.tile(np.array(values, dt), (rows, 1))


# ---- seed examples ------------------------------------------------------------------

def test_seed_uniform_example():
    # weight [0.11, 0.19, 0.3, 0.08, 0.0, 0.02], 2 bits: LUT [0, .1, .2, .3], indices 1 2 3 1 0 0
    w = _row([0.11, 0.19, 0.3, 0.08, 0.0, 0.02])
    out = palettize_weights(linear_program(w), nbits=2, mode="uniform", **ALL)
    op = _op(out, "constexpr_lut_to_dense")
    assert np.allclose(op.lut.val.ravel(), [0.0, 0.1, 0.2, 0.3])
    assert op.indices.val[0].tolist() == [1, 2, 3, 1, 0, 0]
    assert np.allclose(assert_decompress_exact(out)[0], [0.1, 0.2, 0.3, 0.1, 0.0, 0.0])


def test_seed_unique_examples():
    four = _row([0.1, 0.2, 0.3, 0.4])
    out = palettize_weights(linear_program(four), mode="unique", nbits=2, **ALL)
    assert np.allclose(_op(out, "constexpr_lut_to_dense").lut.val.ravel(), [0.1, 0.2, 0.3, 0.4])
    assert _op(out, "constexpr_lut_to_dense").indices.val[0].tolist() == [0, 1, 2, 3]
    for w, nbits in ((four, 1), (_row([0.1, 0.2, 0.3, 0.4, 0.5]), 2)):  # not a 1-bit / 2-bit lattice
        prog = linear_program(w)
        res = palettize_weights(mode="unique", nbits=nbits, **ALL).run(prog)
        assert res.program is prog and "distinct values" in res.stats["weights"]["w"]["skipped"]


def test_seed_sparsify_examples():
    out = sparsify_weights(linear_program(_row([0.3, 0, 0, 0.5, 0, 0])), **ALL)
    op = _op(out, "constexpr_sparse_to_dense")
    assert op.nonzero_data.val[:2].tolist() == pytest.approx([0.3, 0.5])
    assert op.mask.val[0].tolist() == [1, 0, 0, 1, 0, 0]
    w = _row([0.3, -0.2, -0.01, 0.05], rows=1)
    out = sparsify_weights(linear_program(w), mode="threshold_based", threshold=0.03, **ALL)
    assert assert_decompress_exact(out).tolist() == [[np.float32(0.3), np.float32(-0.2), 0.0, np.float32(0.05)]]
    out = sparsify_weights(linear_program(w), mode="percentile_based", target_percentile=0.75, **ALL)
    assert assert_decompress_exact(out).tolist() == [[np.float32(0.3), 0.0, 0.0, 0.0]]


def test_linear_mode_by_hand():
    # range [-1, 3] onto uint8 [0, 255]: s = 4 / 255, z = round(255 / 4) = round(63.75) = 64
    w = _row([-1.0, 0.0, 1.0, 3.0])
    out = affine_quantize_weights(linear_program(w), mode="linear", dtype="uint8", granularity="per_tensor", **ALL)
    assert _const(out, "w_scale").val.item() == np.float32(4 / 255)
    assert _const(out, "w_offset").val.item() == 64
    s = np.float32(4 / 255)
    assert _const(out, "w_q").val[0].tolist() == [round(-1 / s) + 64, 64, round(1 / s) + 64, 255]
    assert np.allclose(assert_decompress_exact(out), w, atol=float(s) / 2)


# ---- bounds per mode ------------------------------------------------------------------

@pytest.mark.parametrize("dt", [np.float16, np.float32])
@pytest.mark.parametrize("opset", ["iOS16", "iOS18"])
def test_sparsify_every_mode_keeps_values_exactly_and_zeros_what_it_says(dt, opset):
    w = (RNG.standard_normal((16, 64)) * 0.01).astype(dt)
    w[0, :3] = 0
    prog = linear_program(w, opset=opset)
    a = np.abs(w.astype(np.float64))
    dense = assert_decompress_exact(sparsify_weights(prog, threshold=0.005, **ALL))
    assert np.array_equal(dense, np.where(a > 0.005, w, 0).astype(dt))
    dense = assert_decompress_exact(sparsify_weights(prog, mode="percentile_based", target_percentile=0.3, **ALL))
    kept = dense != 0
    assert np.count_nonzero(~kept) == math.floor(w.size * 0.3) and np.array_equal(dense[kept], w[kept])
    assert a[kept].min() >= a[~kept].max()  # the smallest magnitudes went
    dense = assert_decompress_exact(sparsify_weights(prog, n_m_ratio=(3, 4), **ALL))
    runs = dense.reshape(16, 16, 4)
    assert np.all(np.count_nonzero(runs, axis=2) <= 1) and np.array_equal(dense[dense != 0], w[dense != 0])
    assert np.all(np.abs(runs).max(axis=2) == np.abs(w.reshape(16, 16, 4)).max(axis=2))  # the largest stays


# ---- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("stage", [affine_quantize_weights(**ALL), palettize_weights(nbits=2, **ALL),
                                   sparsify_weights(**ALL)], ids=["affine", "palettize", "sparsify"])
def test_nan_and_inf_raise_naming_the_weight_and_leave_the_input(stage, bad):
    w = RNG.standard_normal((8, 8)).astype(np.float16)
    w[2, 5] = bad
    prog = linear_program(w)
    before = prog.digest
    with pytest.raises(CompressionError, match="^w: .*NaN or Inf"):
        stage(prog)
    assert prog.digest == before


@pytest.mark.parametrize("stage", [affine_quantize_weights(**ALL), palettize_weights(nbits=2, **ALL),
                                   sparsify_weights(**ALL)], ids=["affine", "palettize", "sparsify"])
def test_empty_weight_is_a_recorded_skip(stage):
    prog = linear_program(np.zeros((0, 8), np.float32))
    res = stage.run(prog)
    assert res.program is prog and res.stats["weights"]["w"]["skipped"] == "empty weight"


def test_unsupported_combinations_raise_when_bound_or_run():
    with pytest.raises(ParameterError, match="nbits"):
        palettize_weights(nbits=7)
    with pytest.raises(ParameterError, match="lut_function"):
        palettize_weights(mode="uniform", nbits=2, lut_function=lambda w: None)
    w = RNG.standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(CompressionError, match=r"w: a 3-bit LUT \(before iOS18: 1, 2, 4, 6, 8 bits\) needs "
                                               r"Core ML iOS18 or newer.*--target iOS18"):
        palettize_weights(linear_program(w, opset="iOS16"), nbits=3, **ALL)


# ---- target_sparsity: an alias of target_percentile ------------------------------------

def test_target_sparsity_is_target_percentile():
    w = RNG.standard_normal((16, 16)).astype(np.float32)
    prog = linear_program(w)
    a = sparsify_weights(prog, target_sparsity=0.4, **ALL)
    b = sparsify_weights(prog, mode="percentile_based", target_percentile=0.4, **ALL)
    assert np.array_equal(assert_decompress_exact(a), assert_decompress_exact(b))
    assert np.count_nonzero(assert_decompress_exact(a) == 0) == math.floor(256 * 0.4)
    sparsify_weights(target_sparsity=0.4, target_percentile=0.4)  # the same value twice is fine
    with pytest.raises(ParameterError, match="target_sparsity=0.4 is an alias of target_percentile=0.5"):
        sparsify_weights(target_sparsity=0.4, target_percentile=0.5)


# ---- config by consumer op name ----------------------------------------------------------

def test_config_by_consumer_op_name_and_conflicting_types():
    from ir.builder import TensorSpec, program

    w = RNG.standard_normal((64, 64)).astype(np.float32)

    @program(inputs={"x": TensorSpec((2, 64), "fp32")})
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w"), name="fc1")

    out = palettize_weights(net, config={"global_config": {"nbits": 2}, "op_name_configs": {"fc1": {"nbits": 6}}})
    assert _op(out, "constexpr_lut_to_dense").indices.dtype == "uint6"
    assert palettize_weights(net, nbits=2, config={"op_name_configs": {"fc1": None}}) is net

    @program(inputs={"x": TensorSpec((64, 64), "fp32")})
    def shared(b, x):
        c = b.const(w, name="w")
        return b.add(x=b.linear(x=x, weight=c), y=b.matmul(x=x, y=c))

    cfg = OptimizationConfig.make(op_type_configs={"linear": {"nbits": 2}})
    with pytest.raises(ConfigError, match="conflicting op-type configs"):
        palettize_weights(shared, config=cfg)


# ---- mode "linear" against coremltools -------------------------------------------------------

def _ct_linear(w, signed):
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights as ct
    return ct.blockwise_compress(np.array(w), 8, "LINEAR", signed, [1, 0])


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_linear_mode_matches_coremltools_on_fp32(dtype):
    pytest.importorskip("coremltools")
    w = (RNG.standard_normal((64, 64)) * 0.05 + RNG.standard_normal((64, 1)) * 0.03).astype(np.float32)
    out = affine_quantize_weights(linear_program(w), mode="linear", dtype=dtype, **ALL)
    ref = _ct_linear(w, dtype == "int8")
    assert np.array_equal(_const(out, "w_offset").val.ravel(), ref.offset.ravel())
    assert np.array_equal(_const(out, "w_q").val, ref.data)
    assert np.allclose(_const(out, "w_scale").val.ravel(), ref.scale.ravel(), rtol=2 ** -22, atol=0)


def test_linear_mode_on_fp16_is_coremltools_formula_evaluated_exactly():
    """coremltools evaluates 'linear' in fp16 (see numeric/affine.py): its zero point can be
    one code off the exact one and its error exceed scale/2; ours is its own function run in
    float64 (same zero points, codes within one tie rounding) and stays within scale/2."""
    pytest.importorskip("coremltools")
    from coremltools.converters.mil.mil import types
    from coremltools.optimize._utils import quantize_weight_by_dtype

    w = (RNG.standard_normal((256, 256)) * 0.05 + RNG.standard_normal((256, 1)) * 0.03).astype(np.float16)
    out = affine_quantize_weights(linear_program(w), mode="linear", dtype="uint8", **ALL)
    q, zp = _const(out, "w_q").val.astype(int), _const(out, "w_offset").val.ravel().astype(int)
    scale = _const(out, "w_scale").val.astype(np.float64)
    ref = _ct_linear(w, False)
    assert np.abs(q - ref.data.astype(int)).max() <= 2 and np.any(zp != ref.offset.ravel())
    q64, _, zp64 = quantize_weight_by_dtype(w.astype(np.float64), (1,), types.uint8, "LINEAR")
    assert np.array_equal(zp, zp64.ravel()) and np.abs(q - q64.astype(int)).max() <= 1
    assert_decompress_exact(out)

    def error_in_steps(data, offset, step):  # before the fp16 rounding of the output
        step = step.reshape(-1, 1).astype(np.float64)
        return np.abs((data - offset.reshape(-1, 1).astype(np.float64)) * step - w) / step

    assert error_in_steps(q, zp, scale).max() <= 0.5 and error_in_steps(ref.data, ref.offset, ref.scale).max() > 0.55


# ---- joint: palettize the nonzero values only ----------------------------------------------

def test_palettize_after_sparsify_fits_the_nonzero_values_only():
    # nonzeros are +-1 and +-2; with zeros included a 2-bit LUT would spend an entry on 0
    w = RNG.choice(np.array([-2.0, -1.0, 1.0, 2.0], np.float32), (64, 64)) * (RNG.random((64, 64)) < 0.5)
    sparse = sparsify_weights(linear_program(w), threshold=0.5)
    pal = palettize_weights(sparse, nbits=2)
    lut = _op(pal, "constexpr_lut_to_sparse").lut.val.ravel()
    assert sorted(lut.tolist()) == [-2.0, -1.0, 1.0, 2.0]
    assert np.array_equal(assert_decompress_exact(pal), w)  # exact: 4 values, 4 entries, zeros in the mask


# ---- recorded figures ---------------------------------------------------------------------

@pytest.mark.parametrize("dt", [np.float16, np.float32])
def test_recorded_error_figures_are_those_of_the_reconstruction(dt):
    w = (RNG.standard_normal((64, 96)) * 0.1).astype(dt)
    for stage in (affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32),
                  palettize_weights(nbits=3, granularity="per_grouped_channel", group_size=16),
                  sparsify_weights(target_sparsity=0.6)):
        res = stage.run(linear_program(w))
        st = res.stats["weights"]["w"]
        ref = error_figures(w, assert_decompress_exact(res.program))  # float64 throughout
        # the documented precision of the float32 pass (stages/compression/figures.py)
        assert st["snr_db"] == pytest.approx(ref.snr_db, abs=1e-5)
        assert st["max_abs_error"] == pytest.approx(ref.max_abs_error, rel=6e-8)
        assert st["mse"] == pytest.approx(ref.mse, rel=2e-6)
        assert st["original_bytes"] == w.nbytes and 0 < st["compressed_bytes"] < w.nbytes
