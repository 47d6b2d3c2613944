"""The fast paths of the constexpr kernels (ir/ops/quant.py) give the same bits as the
plain numpy formulas they replace.

blockwise_shift_scale: with 8-bit integer data and offset, fp32 arithmetic rounded once
equals numpy's fp16 arithmetic (checked exhaustively over every fp16 scale).
lut_to_dense: the per-block / offset lookups equal np.ix_ fancy indexing.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ir.ops import quant
from tests.ir.op_harness import Typed, run

f16, f32 = np.float16, np.float32


def reference_shift_scale(data, scale, offset):
    """The formula as numpy computes it in scale's dtype (fp16 arithmetic for fp16 scales)."""
    x = data.astype(scale.dtype)
    xb, sb = quant.block_view(x, scale)
    if offset is not None:
        xb = xb - quant.block_view(x, offset)[1]
    return (sb * xb).reshape(data.shape).astype(scale.dtype)


def reference_lut(indices, lut, vector_axis=None):
    vs, rank = lut.shape[-1], indices.ndim
    axis = vector_axis % rank if vs > 1 else rank - 1
    idx = np.moveaxis(indices, axis, -1)
    table = np.moveaxis(lut, axis, rank - 1)
    block_of = np.ix_(*[np.arange(s) // (s // b) for s, b in zip(idx.shape, table.shape[:rank])])
    out = table[block_of + (idx.astype(np.intp),)]
    return np.moveaxis(out.reshape(idx.shape[:-1] + (idx.shape[-1] * vs,)), -1, axis)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


ALL_FP16 = np.arange(1 << 16, dtype=np.uint16).view(f16)


@pytest.mark.parametrize("path", [quant._shift_scale_fp32, quant._shift_scale_by_table])
def test_every_fp16_scale_times_every_int8_value_is_bit_exact(path):
    # every fp16 bit pattern (subnormals, inf, nan, -0 included) times every int8 code
    data = np.tile(np.arange(-128, 128, dtype=np.int8), (ALL_FP16.size, 1))
    scale = ALL_FP16.reshape(-1, 1)
    with np.errstate(all="ignore"):
        assert same_bits(path(data, scale, None), reference_shift_scale(data, scale, None))


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("path", [quant._shift_scale_fp32, quant._shift_scale_by_table])
def test_every_offset_and_code_pair_is_bit_exact(dt, path):
    # rows: every offset code x 64 scales (random, tiny, huge, subnormal); columns: every data code
    codes = np.arange(256, dtype=np.uint8).view(dt)
    rng = np.random.default_rng(0)
    scales = np.concatenate([rng.standard_normal(56).astype(f16),
                             np.array([65504, -65504, 6e-8, -6e-8, 1e-5, 2.0 ** -14, 255, 257], f16)])
    offset = np.repeat(codes, scales.size).reshape(-1, 1)
    scale = np.tile(scales, codes.size).reshape(-1, 1)
    data = np.tile(codes, (offset.shape[0], 1))
    with np.errstate(all="ignore"):
        assert same_bits(path(data, scale, offset), reference_shift_scale(data, scale, offset))
        s32 = (scale.astype(f32) * f32(1.000123)).astype(f32)
        assert same_bits(path(data, s32, offset), reference_shift_scale(data, s32, offset))


def test_shift_scale_picks_each_path_and_keeps_the_fp16_path_for_float_offsets(monkeypatch):
    calls = []
    for name in ("_shift_scale_fp32", "_shift_scale_by_table"):
        fn = getattr(quant, name)
        monkeypatch.setattr(quant, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    data = np.arange(-128, 128, dtype=np.int8).reshape(16, 16).repeat(64, axis=1)  # 16 x 1024
    quant.blockwise_shift_scale(data, np.ones((1, 1), f16), None)  # one block of 16K: table
    quant.blockwise_shift_scale(data, np.ones((16, 32), f16), None)  # blocks of 32: fp32 chunks
    offset = np.full((16, 1), 0.5, f16)  # non-integer offset: (data - offset) is not exact
    y = quant.blockwise_shift_scale(data, np.full((16, 1), 3.0, f16), offset)
    assert calls == ["_shift_scale_by_table", "_shift_scale_fp32"]
    assert same_bits(y, reference_shift_scale(data, np.full((16, 1), 3.0, f16), offset))


def _block_shapes(shape):
    """Per-axis block counts dividing each dim."""
    return st.tuples(*[st.sampled_from([b for b in range(1, d + 1) if d % b == 0]) for d in shape])


@st.composite
def shift_scale_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12))
    blocks = draw(_block_shapes(shape))
    dt = draw(st.sampled_from([np.int8, np.uint8]))
    sdt = draw(st.sampled_from([f16, f32]))
    data = draw(hnp.arrays(dt, shape))
    scale = draw(hnp.arrays(sdt, blocks, elements=st.floats(-1e4, 1e4, width=16 if sdt is f16 else 32)))
    offset_kind = draw(st.sampled_from(["none", "int", "float"]))
    offset = {"none": None, "int": draw(hnp.arrays(dt, blocks)),
              "float": draw(hnp.arrays(sdt, blocks, elements=st.floats(-300, 300, width=16)))}[offset_kind]
    return data, scale, offset


@given(shift_scale_cases())
def test_blockwise_shift_scale_equals_the_plain_formula(case):
    data, scale, offset = case
    with np.errstate(all="ignore"):
        assert same_bits(quant.blockwise_shift_scale(data, scale, offset), reference_shift_scale(data, scale, offset))


@st.composite
def lut_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=10))
    blocks = draw(_block_shapes(shape))
    nbits = draw(st.sampled_from([1, 2, 4, 8]))
    vs = draw(st.sampled_from([1, 1, 2]))
    axis = draw(st.integers(0, len(shape) - 1))
    idx = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, (1 << nbits) - 1)))
    ldt = draw(st.sampled_from([f16, f32, np.int8]))
    lut = draw(hnp.arrays(ldt, tuple(blocks) + (1 << nbits, vs)))
    return idx, lut, axis if vs > 1 else None


@given(lut_cases())
def test_lut_to_dense_equals_fancy_indexing(case):
    idx, lut, axis = case
    assert same_bits(quant.lut_to_dense(idx, lut, axis), reference_lut(idx, lut, axis))


@pytest.mark.parametrize("shape, blocks", [
    ((512, 256), (1, 1)),       # per tensor: pair lookups (even size >= 64K)
    ((512, 257), (1, 1)),       # odd size: single lookups
    ((512, 256), (32, 1)),      # grouped output channels: contiguous blocks
    ((256, 512), (1, 32)),      # grouped on axis 1: offset lookups
    ((64, 8, 128), (4, 2, 1)),  # blocks on two axes
    ((4096, 64), (4096, 1)),    # one LUT per row of 64: blocks too small to loop over
])
def test_lut_to_dense_large_layouts(shape, blocks):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 16, shape).astype(np.uint8)
    lut = rng.standard_normal(blocks + (16, 1)).astype(f16)
    assert same_bits(quant.lut_to_dense(idx, lut), reference_lut(idx, lut))


def test_lut_index_out_of_range_raises():
    with pytest.raises(IndexError, match="LUT index 4 is out of range for a LUT of 4 entries"):
        quant.lut_to_dense(np.array([[0, 4]], np.uint8), np.zeros((1, 1, 4, 1), f16))


def test_ios16_flat_lut_matches_indexing_on_a_large_weight():
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 16, 300 * 400)
    lut = rng.standard_normal(16).astype(f16)
    y = run("constexpr_lut_to_dense", indices=Typed(idx, "uint4"), lut=lut, shape=np.array([300, 400], np.uint32))
    assert same_bits(y, lut[idx].reshape(300, 400))
