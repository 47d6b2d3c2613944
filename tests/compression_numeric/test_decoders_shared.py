"""The numeric decoders (affine_dequantize, lut_to_dense, sparse_to_dense) are the op kernels of
ir/ops/quant.py adapted to the parameter tuples: checked here against naive element-by-element
references on the edge cases (sub-byte indices, vector LUTs, per-block LUTs and scales, fp16,
float64 output, a 0-d scale), and against evaluating the op the stage emits."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ir.builder import Builder
from ir.interpret import evaluate
from ir.core import Program
from stages.compression.numeric import LutParams, affine_dequantize, lut_to_dense, sparse_to_dense

f16, f32 = np.float16, np.float32


def _block(pos, data_shape, param_shape):
    return tuple(i // (d // p) for i, d, p in zip(pos, data_shape, param_shape))


def naive_affine(data, scale, zp, out_dtype):
    work = np.float64 if np.dtype(out_dtype) == np.float64 else np.float32
    out = np.empty(data.shape, out_dtype)
    for pos in itertools.product(*map(range, data.shape)):
        b = _block(pos, data.shape, scale.shape)
        centered = work(data[pos]) - (work(zp[b]) if zp is not None else work(0))
        out[pos] = np.asarray(centered * work(scale[b])).astype(out_dtype)
    return out


def naive_lut(idx, lut, vector_axis, pcs=None):
    cd = lut.shape[-1]
    shape = list(idx.shape)
    if cd > 1:
        shape[vector_axis] *= cd
    out = np.empty(shape, lut.dtype)
    for pos in itertools.product(*map(range, idx.shape)):
        entry = lut[_block(pos, idx.shape, lut.shape[:idx.ndim]) + (int(idx[pos]),)]
        for j in range(cd):
            at = list(pos)
            if cd > 1:
                at[vector_axis] = pos[vector_axis] * cd + j
            out[tuple(at)] = entry[j]
    if pcs is not None:
        out = (out * pcs).astype(lut.dtype)
    return out


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_hand_computed_values():
    q = np.array([[0, 3], [-2, 1]], np.int8)
    scale = np.array([[0.5], [2.0]], f16)  # one scale per row
    zp = np.array([[1], [-1]], np.int8)
    assert affine_dequantize(q, scale, zp).tolist() == [[-0.5, 1.0], [-2.0, 4.0]]
    assert affine_dequantize(q, scale, zp).dtype == f16
    assert affine_dequantize(q, np.float32(0.25), None).tolist() == [[0, 0.75], [-0.5, 0.25]]  # 0-d scale
    lut = np.array([1, 2, 3, 4, 10, 20, 30, 40], f32).reshape(1, 1, 4, 2)  # vectors along axis 1
    p = LutParams(lut, np.array([[3, 0], [1, 2]], np.uint8), 2, vector_axis=1)
    assert lut_to_dense(p).tolist() == [[30, 40, 1, 2], [3, 4, 10, 20]]
    mask = np.array([[1, 0], [0, 1]], bool)
    assert sparse_to_dense(mask, np.array([5, 6], f16)).tolist() == [[5, 0], [0, 6]]


def test_out_of_range_indices_raise():
    lut = np.arange(4, dtype=f32).reshape(1, 1, 4, 1)
    with pytest.raises(IndexError, match="LUT index 4 is out of range"):
        lut_to_dense(LutParams(lut, np.array([[0, 4]], np.uint8), 2))


@st.composite
def affine_cases(draw):
    rank = draw(st.integers(1, 3))
    blocks = [draw(st.integers(1, 3)) for _ in range(rank)]
    shape = tuple(b * draw(st.integers(1, 3)) for b in blocks)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dt = draw(st.sampled_from([np.int8, np.uint8]))
    info = np.iinfo(dt)
    data = rng.integers(info.min, info.max, shape, endpoint=True).astype(dt)
    scale_dtype = draw(st.sampled_from([f16, f32, np.float64]))
    scale = rng.uniform(1e-3, 4.0, blocks).astype(scale_dtype)
    zp = rng.integers(info.min, info.max, blocks, endpoint=True).astype(dt) if draw(st.booleans()) else None
    out = draw(st.sampled_from([None, np.float64, f32]))
    return data, scale, zp, out


@settings(max_examples=60, deadline=None)
@given(case=affine_cases())
def test_affine_dequantize_matches_the_naive_reference(case):
    data, scale, zp, out = case
    assert same_bits(affine_dequantize(data, scale, zp, out_dtype=out),
                     naive_affine(data, scale, zp, out or scale.dtype))


@st.composite
def lut_cases(draw):
    rank = draw(st.integers(1, 3))
    nbits = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    cd = draw(st.sampled_from([1, 1, 2, 4]))
    axis = draw(st.integers(0, rank - 1))
    blocks = [1] * rank
    blocks[axis] = draw(st.integers(1, 3))  # grouped channels: one LUT per group
    shape = tuple(b * draw(st.integers(1, 3)) for b in blocks)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dt = draw(st.sampled_from([f16, f32]))
    lut = rng.standard_normal(tuple(blocks) + (2**nbits, cd)).astype(dt)
    idx = rng.integers(0, 2**nbits, shape).astype(np.uint8)  # sub-byte values in uint8 storage
    pcs = None
    if draw(st.booleans()):
        pshape = [1] * rank
        dense = list(shape)
        dense[axis] *= cd
        pshape[axis] = dense[axis]
        pcs = rng.uniform(0.5, 2, pshape).astype(dt)
    return LutParams(lut, idx, nbits, axis if cd > 1 else None, pcs)


@settings(max_examples=60, deadline=None)
@given(p=lut_cases())
def test_lut_to_dense_matches_the_naive_reference(p):
    assert same_bits(lut_to_dense(p), naive_lut(p.indices, p.lut, p.vector_axis, p.per_channel_scale))


@settings(max_examples=30, deadline=None)
@given(case=affine_cases())
def test_affine_dequantize_is_what_the_emitted_op_evaluates_to(case):
    data, scale, zp, _ = case
    if scale.dtype == np.float64:
        scale = scale.astype(f32)
    b = Builder()
    w = b.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=zp, name="w")
    ran = evaluate(Program.make([b.function("main", w)]), {})["w"]
    assert same_bits(affine_dequantize(data, scale, zp), ran)
