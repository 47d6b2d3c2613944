"""quantize / dequantize (MIL iOS17): hand-checked values, type errors, and a
bit-for-bit cross-check against coremltools' own value inference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.ops import OpError
from tests.ir.op_harness import optional_module, out_types, requires, run

f32 = np.float32


def test_quantize_rounds_half_to_even_then_clips():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 126.6, 300.0, -300.0], f32)
    q = run("quantize", input=x, scale=f32(1.0), output_dtype="int8")
    assert q.dtype == np.int8
    assert q.tolist() == [0, 2, 2, 0, -2, 127, 127, -128]


def test_quantize_rounds_before_adding_the_zero_point():
    # round(2.5) + 1 = 3, whereas round(2.5 + 1) would be 4
    q = run("quantize", input=np.array([2.5, 0.5], f32), scale=f32(1.0), zero_point=np.int8(1),
            output_dtype="int8")
    assert q.tolist() == [3, 1]


def test_quantize_uint8_with_zero_point_and_scale():
    # x / 0.5 = [-2, 0, 3, 600] -> + 128 -> [126, 128, 131, 255 (clipped)]
    q = run("quantize", input=np.array([-1.0, 0.0, 1.5, 300.0], f32), scale=f32(0.5),
            zero_point=np.uint8(128), output_dtype="uint8")
    assert q.dtype == np.uint8 and q.tolist() == [126, 128, 131, 255]


def test_quantize_per_axis():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], f32)
    q = run("quantize", input=x, scale=np.array([1.0, 2.0], f32), zero_point=np.array([0, 10], np.int8),
            axis=0, output_dtype="int8")
    assert q.tolist() == [[1, 2, 3], [12, 12, 13]]  # row 1: [2, 2.5->2, 3] + 10
    q = run("quantize", input=x, scale=np.array([1.0, 2.0, 4.0], f32), axis=-1, output_dtype="int8")
    assert q.tolist() == [[1, 1, 1], [4, 2, 2]]  # 0.75 -> 1, 2.5 -> 2, 1.5 -> 2


def test_quantize_fp16_divides_in_fp16():
    x = np.array([1.0, 3.0], np.float16)
    q = run("quantize", input=x, scale=np.float16(2.0), output_dtype="int8")
    assert q.tolist() == [0, 2]  # 0.5 -> 0, 1.5 -> 2


def test_dequantize_hand_values():
    q = np.array([[0, 10], [-128, 127]], np.int8)
    y = run("dequantize", input=q, scale=f32(0.5), zero_point=np.int8(-2))
    assert y.dtype == np.float32 and y.tolist() == [[1.0, 6.0], [-63.0, 64.5]]
    y = run("dequantize", input=q, scale=np.array([1.0, 2.0], f32), axis=1)
    assert y.tolist() == [[0.0, 20.0], [-128.0, 254.0]]
    y = run("dequantize", input=q, scale=np.float16(0.25))
    assert y.dtype == np.float16 and y.tolist() == [[0.0, 2.5], [-32.0, 31.75]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(input=np.ones(3, f32), scale=f32(1), output_dtype="int16"), "output_dtype must be int8 or uint8"),
    (dict(input=np.ones(3, np.int32), scale=np.int32(1), output_dtype="int8"), "input must be float"),
    (dict(input=np.ones(3, f32), scale=f32(0), output_dtype="int8"), "scale cannot be 0"),
    (dict(input=np.ones(3, f32), scale=np.float16(1), output_dtype="int8"), "scale is fp16 but input is fp32"),
    (dict(input=np.ones(3, f32), scale=f32(1), zero_point=np.uint8(0), output_dtype="int8"),
     "zero_point is uint8 but output_dtype is int8"),
    (dict(input=np.ones((2, 3), f32), scale=np.ones(3, f32), output_dtype="int8"), "needs an axis"),
    (dict(input=np.ones((2, 3), f32), scale=np.ones(3, f32), axis=0, output_dtype="int8"),
     "3 scales for axis 0 of size 2"),
    (dict(input=np.ones((2, 3), f32), scale=np.ones((2, 3), f32), axis=0, output_dtype="int8"),
     "scalar or 1-D"),
    (dict(input=np.ones((2, 3), f32), scale=np.ones(2, f32), zero_point=np.int8(0), axis=0,
          output_dtype="int8"), "both be scalars or both vectors"),
])
def test_quantize_type_errors_name_op_and_mismatch(kwargs, message):
    with pytest.raises(OpError, match=message) as e:
        out_types("quantize", **kwargs)
    assert str(e.value).startswith("quantize 'out'")


@pytest.mark.parametrize("kwargs, message", [
    (dict(input=np.ones(3, f32), scale=f32(1)), "input must be an integer tensor"),
    (dict(input=np.ones(3, np.int8), scale=np.int8(1)), "scale must be float"),
    (dict(input=np.ones(3, np.int8), scale=f32(1), zero_point=np.uint8(1)), "zero_point is uint8 but input is int8"),
])
def test_dequantize_type_errors(kwargs, message):
    with pytest.raises(OpError, match=message):
        out_types("dequantize", **kwargs)


# ---- cross-check against coremltools' iOS17 value inference -------------------

ct_utils = optional_module("coremltools.optimize._utils")


@st.composite
def quant_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    out = draw(st.sampled_from(["int8", "uint8"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    # multiples of 0.25 hit the .5 ties that separate rounding conventions
    x = (rng.integers(-600, 600, size=shape) / 4).astype(dtype)
    per_axis = draw(st.booleans())
    axis = draw(st.integers(-len(shape), len(shape) - 1)) if per_axis else None
    n = shape[axis] if per_axis else None
    scale = (rng.choice([0.25, 0.5, 1.0, 2.0, 0.1, 3.0], size=n) if per_axis
             else np.array(rng.choice([0.25, 0.5, 1.0, 0.1]))).astype(dtype)
    zp = None
    if draw(st.booleans()):
        lo, hi = (-128, 127) if out == "int8" else (0, 255)
        zp = rng.integers(lo, hi + 1, size=n).astype(out)
        zp = zp if per_axis else zp.reshape(())
    return x, scale, zp, axis, out


@requires(ct_utils, reason="coremltools 9.0 not installed")
@given(quant_case())
def test_quantize_and_dequantize_equal_coremltools(case):
    x, scale, zp, axis, out = case
    kwargs = dict(scale=scale, axis=axis) if axis is not None else dict(scale=scale)
    if zp is not None:
        kwargs["zero_point"] = zp
    ours = run("quantize", input=x, output_dtype=out, **kwargs)
    s = ct_utils.promote_rank_to_same_as_data(scale, x, axis)
    z = None if zp is None else ct_utils.promote_rank_to_same_as_data(zp, x, axis)
    theirs = ct_utils.quantize_by_scale_and_zp(x, s, z, out)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)

    back = run("dequantize", input=ours, **kwargs)
    theirs_back = ct_utils.dequantize_by_scale_and_zp(theirs, s, z)
    assert back.dtype == theirs_back.dtype and np.array_equal(back, theirs_back)
