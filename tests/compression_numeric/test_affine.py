import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from stages.compression.numeric import (CompressionError, NotCompressible, affine_dequantize,
                                        affine_quantize, quant_range)
from stages.compression.numeric.affine import expand_blocks


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_ranges_match_coremltools_table():
    assert quant_range("int8", "linear_symmetric") == (-127, 127)
    assert quant_range("uint8", "linear_symmetric") == (0, 254)
    assert quant_range("int4", "linear_symmetric") == (-7, 7)
    assert quant_range("uint4", "linear_symmetric") == (0, 14)
    assert quant_range("int8", "linear") == (-128, 127)
    assert quant_range("uint4", "linear") == (0, 15)


def test_per_channel_symmetric_by_hand():
    # R = 127 -> scale 1; R = 254 -> scale 2.  Ties round half to even.
    w = readonly(np.array([[127, -50.4, 3.5, 0], [254, -3, 5, -254]], np.float32))
    p = affine_quantize(w, dtype="int8", granularity="per_channel", axis=0)
    np.testing.assert_array_equal(p.data, [[127, -50, 4, 0], [127, -2, 2, -127]])
    np.testing.assert_array_equal(p.scale, [[1.0], [2.0]])
    np.testing.assert_array_equal(p.zero_point, [[0], [0]])
    assert p.data.dtype == np.int8 and p.scale.dtype == np.float32
    u = affine_quantize(w, dtype="uint8")
    np.testing.assert_array_equal(u.data, p.data.astype(int) + 127)
    np.testing.assert_array_equal(u.zero_point, [[127], [127]])
    assert u.data.dtype == np.uint8


def test_linear_by_hand():
    w = np.array([[0, 1, 2, 3], [-1, 0, 1, 3]], np.float32)
    p = affine_quantize(w, mode="linear", dtype="int8")
    # row 0: A=0, B=3, s=3/255, zp=round((-128*3 - 127*0)/3) = -128
    # row 1: A=-1, B=3, s=4/255, zp=round((-128*3 + 127)/4) = round(-64.25) = -64
    np.testing.assert_array_equal(p.zero_point, [[-128], [-64]])
    np.testing.assert_array_equal(p.data, [[-128, -43, 42, 127], [-128, -64, 0, 127]])
    np.testing.assert_allclose(p.scale[:, 0], [3 / 255, 4 / 255], rtol=1e-6)


def test_per_block_layout():
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    p = affine_quantize(w, granularity="per_block", block_size=16)
    assert p.scale.shape == (8, 4) and p.zero_point.shape == (8, 4) and p.data.shape == (8, 64)
    blocks = np.abs(w).reshape(8, 4, 16).max(axis=2)
    np.testing.assert_allclose(p.scale, blocks / 127, rtol=1e-6)
    p2 = affine_quantize(w, block_sizes=(4, 32))
    assert p2.scale.shape == (2, 2)
    assert affine_quantize(w, granularity="per_tensor").scale.shape == (1, 1)


def test_degenerate_inputs():
    z = readonly(np.zeros((3, 4), np.float16))
    p = affine_quantize(z, dtype="uint4")
    np.testing.assert_array_equal(p.scale, 1.0)
    np.testing.assert_array_equal(p.data, 7)
    np.testing.assert_array_equal(affine_dequantize(p.data, p.scale, p.zero_point), z)
    c = np.full((2, 3), -0.75, np.float32)
    for mode in ("linear", "linear_symmetric"):
        p = affine_quantize(c, mode=mode)
        np.testing.assert_allclose(affine_dequantize(p.data, p.scale, p.zero_point), c, rtol=1e-6)
    one = affine_quantize(np.array([3.0], np.float32), granularity="per_tensor")
    assert one.data.tolist() == [127] and one.scale.shape == (1,)


def test_tiny_fp16_range_never_gives_zero_scale():
    w = np.array([[6e-8, -6e-8, 0]], np.float16)
    p = affine_quantize(w)
    assert (p.scale > 0).all()
    assert np.all(np.abs(w.astype(np.float64) - affine_dequantize(p.data, p.scale, p.zero_point, out_dtype=np.float64))
                  <= p.scale.astype(np.float64) / 2 + 1e-12)


@pytest.mark.parametrize("bad, reason", [
    (np.array([[1.0, np.nan]], np.float32), "NaN or Inf"),
    (np.array([[1.0, np.inf]], np.float16), "NaN or Inf"),
    (np.zeros((0, 3), np.float32), "empty"),
    (np.ones((2, 2), np.int32), "unsupported dtype"),
])
def test_invalid_inputs(bad, reason):
    with pytest.raises(CompressionError, match=f"layer.w: .*{reason}"):
        affine_quantize(bad, name="layer.w")


def test_invalid_options():
    w = np.ones((4, 6), np.float32)
    with pytest.raises(CompressionError, match="mode"):
        affine_quantize(w, mode="log")
    with pytest.raises(CompressionError, match="dtype"):
        affine_quantize(w, dtype="int2")
    with pytest.raises(NotCompressible, match="not divisible"):
        affine_quantize(w, granularity="per_block", block_size=4)
    with pytest.raises(CompressionError, match="axis"):
        affine_quantize(w, axis=2)


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=150, deadline=None)
@given(w=hnp.arrays(st.sampled_from([np.float32, np.float16]), hnp.array_shapes(min_dims=2, max_dims=3, max_side=6),
                    elements=st.floats(-1e3, 1e3, width=16)),
       mode=st.sampled_from(["linear", "linear_symmetric"]),
       dtype=st.sampled_from(["int8", "uint8", "int4", "uint4"]),
       gran=st.sampled_from(["per_tensor", "per_channel"]))
def test_reconstruction_within_half_scale(w, mode, dtype, gran):
    w.flags.writeable = False
    before = w.copy()
    p = affine_quantize(w, mode=mode, dtype=dtype, granularity=gran)
    np.testing.assert_array_equal(w, before)
    lo, hi = quant_range(dtype, mode)
    assert p.data.min() >= lo and p.data.max() <= hi
    assert p.zero_point.min() >= lo and p.zero_point.max() <= hi
    rec = affine_dequantize(p.data, p.scale, p.zero_point, out_dtype=np.float64)
    s = expand_blocks(p.scale, w.shape).astype(np.float64)
    err = np.abs(w.astype(np.float64) - rec)
    # w / scale runs in float32: a quotient within 2**-24 relative of a .5 tie may round either way
    assert np.all(err <= s * (0.5 + 128 * 2.0 ** -23)), (err - s / 2).max()


def test_matches_coremltools_fp32(ct_passes):
    L = ct_passes.linear_quantize_weights
    w = np.random.default_rng(3).standard_normal((64, 96)).astype(np.float32) * 0.05
    for dtype, bits, signed in (("int8", 8, True), ("uint8", 8, False), ("int4", 4, True), ("uint4", 4, False)):
        for bs in ([1, 0], [0, 0], [1, 32]):
            ours = affine_quantize(w, dtype=dtype, block_sizes=bs)
            ref = L.blockwise_compress(w, bits, "LINEAR_SYMMETRIC", signed, bs)
            np.testing.assert_array_equal(ours.data, ref.data)
            np.testing.assert_array_equal(ours.scale, ref.scale)
            lin = affine_quantize(w, mode="linear", dtype=dtype, block_sizes=bs)
            ref = L.blockwise_compress(w, bits, "LINEAR", signed, bs)
            np.testing.assert_array_equal(lin.zero_point, ref.offset)
            np.testing.assert_allclose(lin.scale, ref.scale, rtol=2 ** -22)  # 1 ulp up where needed
            assert np.abs(lin.data.astype(int) - ref.data.astype(int)).max() <= 1


def test_fp16_no_worse_than_coremltools(ct_passes):
    L = ct_passes.linear_quantize_weights
    w = (np.random.default_rng(4).standard_normal((128, 256)) * 0.02).astype(np.float16)
    ours = affine_quantize(w)
    ref = L.blockwise_compress(w, 8, "LINEAR_SYMMETRIC", True, [1, 0])
    np.testing.assert_array_equal(ours.scale, ref.scale)
    assert np.abs(ours.data.astype(int) - ref.data.astype(int)).max() <= 1
    e_ours = np.mean((affine_dequantize(ours.data, ours.scale, None, out_dtype=np.float64) - w) ** 2)
    e_ref = np.mean((ref.data * ref.scale.astype(np.float64) - w) ** 2)
    assert e_ours <= e_ref
