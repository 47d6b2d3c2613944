import numpy as np
import pytest

from stages.compression import CompressionError, ParameterError, affine_quantize_weights
from tests.stages.compression.helpers import (assert_decompress_exact, conv_transpose_program, linear_program,
                                              op_types)

RNG = np.random.default_rng(0)


def _const(prog, suffix):
    return next(op.outputs[0] for op in prog.main.ops if op.name == f"w_{suffix}")


def test_seed_symmetric_int8_example():
    # R = max|w| = 2.54 -> s = R / 127 = 0.02, z = 0: q = round(w / s)
    w = np.array([[2.54, -1.27, 0.0, 0.02]] * 4 + [[0.5, 0.25, -0.5, 0.0]] * 4, np.float32)
    w = np.tile(w, (1, 600))  # > 2048 elements
    out = affine_quantize_weights(linear_program(w), granularity="per_tensor")
    q, s = _const(out, "q").val, _const(out, "scale").val
    assert np.isclose(s.item(), np.float32(2.54 / 127))
    assert q[0, :4].tolist() == [127, -64, 0, 1]
    assert "w_offset" not in {op.name for op in out.main.ops}  # zero point 0: no offset


def test_seed_uint8_zero_point_127():
    w = RNG.standard_normal((64, 64)).astype(np.float32)
    out = affine_quantize_weights(linear_program(w), dtype=np.uint8, granularity="per_tensor")
    assert _const(out, "offset").val.item() == 127
    assert _const(out, "q").val.max() <= 254


@pytest.mark.parametrize("mode", ["linear_symmetric", "linear"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int4", "uint4"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_block"])
@pytest.mark.parametrize("wdt", [np.float32, np.float16])
def test_every_combination_exact_and_within_half_step(mode, dtype, granularity, wdt):
    w = (RNG.standard_normal((32, 128)) * 0.1).astype(wdt)
    prog = linear_program(w)
    before = prog.digest
    out = affine_quantize_weights(prog, mode=mode, dtype=dtype, granularity=granularity, block_size=32)
    assert prog.digest == before
    assert op_types(out)[-2:] == ["constexpr_blockwise_shift_scale", "linear"]
    assert _const(out, "q").dtype == dtype
    w_hat = assert_decompress_exact(out)
    scale = _const(out, "scale").val.astype(np.float64)
    half = np.repeat(np.repeat(scale, 32 // scale.shape[0], 0), 128 // scale.shape[1], 1) / 2
    err = np.abs(w.astype(np.float64) - w_hat.astype(np.float64))
    tol = half * (1 + 1e-3) + (np.finfo(wdt).eps * np.abs(w.astype(np.float64)))  # dequantization rounding
    assert np.all(err <= tol)


def test_ios16_emits_constexpr_affine_dequantize_and_4bit_needs_ios18():
    w = RNG.standard_normal((64, 64)).astype(np.float32)
    out = affine_quantize_weights(linear_program(w, opset="iOS16"), dtype="uint8")
    op = next(o for o in out.main.ops if o.op_type == "constexpr_affine_dequantize")
    assert op.scale.shape == (64,) and op.zero_point.dtype == "uint8"
    assert_decompress_exact(out)
    with pytest.raises(CompressionError, match="dtype=int4.*iOS18"):
        affine_quantize_weights(linear_program(w, opset="iOS17"), dtype="int4")
    with pytest.raises(CompressionError, match="per_block"):
        affine_quantize_weights(linear_program(w, opset="iOS16"), granularity="per_block")


def test_conv_transpose_is_per_channel_on_axis_1():
    w = RNG.standard_normal((8, 16, 3, 3)).astype(np.float32)
    out = affine_quantize_weights(conv_transpose_program(w), op_selector=lambda v: True)
    assert _const(out, "scale").shape == (1, 16, 1, 1)


def test_bad_parameters_raise_when_bound():
    for kw, word in [(dict(dtype="int5"), "dtype"), (dict(mode="log"), "mode"),
                     (dict(granularity="per_row"), "granularity"), (dict(block_size=0), "block_size")]:
        with pytest.raises(ParameterError, match=word):
            affine_quantize_weights(**kw)


def test_nan_and_inf_name_the_weight():
    w = RNG.standard_normal((64, 64)).astype(np.float32)
    w[3, 3] = np.nan
    with pytest.raises(CompressionError, match="w: .*NaN"):
        affine_quantize_weights(linear_program(w))


def test_constant_weight_is_exact_and_zero_weight_too():
    for value in (0.0, 0.75):
        w = np.full((64, 64), value, np.float32)
        out = affine_quantize_weights(linear_program(w), mode="linear")
        assert np.array_equal(assert_decompress_exact(out), w)


# a block size that does not divide the input axis: tests/stages/compression/test_layout_fallback.py


def test_stats_sizes_and_errors():
    w = RNG.standard_normal((64, 128)).astype(np.float32)
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32).run(linear_program(w))
    st = res.stats["weights"]["w"]
    assert st["original_bytes"] == w.nbytes
    assert st["compressed_bytes"] == 64 * 128 // 2 + 64 * 4 * 4  # 4-bit data + fp32 scales, no offset
    assert st["nbits"] == 4 and st["dtype"] == "int4" and st["snr_db"] > 10
    assert res.stats["compressed"] == 1 and res.stats["skipped"] == 0


def test_matches_coremltools_quantized_data():
    pytest.importorskip("coremltools")
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights as ct
    w = (RNG.standard_normal((64, 64)) * 0.05).astype(np.float16)
    # mode "linear": see test_seed_examples_and_bounds.py (same codes on fp32; on fp16
    # coremltools rounds every step to fp16, explained in numeric/affine.py)
    for mode, signed in (("LINEAR_SYMMETRIC", True), ("LINEAR_SYMMETRIC", False)):
        ref = ct.blockwise_compress(np.array(w), 8, mode, signed, [1, 0])
        out = affine_quantize_weights(linear_program(w), mode=mode.lower(), dtype="int8" if signed else "uint8",
                                      op_selector=lambda v: True)
        # identical formulas; ours divides in float32 where coremltools divides fp16 by an fp16
        # scale, so values within an fp16 rounding of a .5 tie may land one code apart
        q = _const(out, "q").val.astype(int)
        assert np.abs(q - ref.data.astype(int)).max() <= 1 and np.mean(q != ref.data) < 0.03
        assert np.allclose(_const(out, "scale").val, ref.scale, rtol=2e-3)
