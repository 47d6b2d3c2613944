"""Every constexpr form of the Core ML iOS16 / iOS18 opsets: hand-checked values,
type errors, and bit-for-bit cross-checks against coremltools 9.0's decompress."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.ops import OpError
from tests.ir.op_harness import Typed, optional_module, out_types, requires, run

f16, f32 = np.float16, np.float32


# ---- constexpr_affine_dequantize (iOS16) ------------------------------------

def test_affine_scalar_and_per_axis():
    q = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    y = run("constexpr_affine_dequantize", quantized_data=q, zero_point=np.uint8(1), scale=f32(2.0), axis=0)
    assert y.dtype == np.float32 and y.tolist() == [[-2, 0, 2], [4, 6, 8]]
    y = run("constexpr_affine_dequantize", quantized_data=q, zero_point=np.array([0, 1, 2], np.uint8),
            scale=np.array([1.0, 0.5, 0.25], f16), axis=1)
    assert y.dtype == np.float16 and y.tolist() == [[0, 0, 0], [3, 1.5, 0.75]]
    y = run("constexpr_affine_dequantize", quantized_data=q.astype(np.int8),
            zero_point=np.array([0.5, -1.0], f32), scale=np.array([2.0, 1.0], f32), axis=-2)
    assert y.tolist() == [[-1, 1, 3], [4, 5, 6]]


def test_affine_type_errors():
    q = np.zeros((2, 3), np.int8)
    with pytest.raises(OpError, match="2 scales for axis 1 of size 3"):
        out_types("constexpr_affine_dequantize", quantized_data=q, zero_point=np.int8(0),
                  scale=np.ones(2, f32), axis=1)
    with pytest.raises(OpError, match="zero_point is uint8 but must be fp32 or quantized_data's int8"):
        out_types("constexpr_affine_dequantize", quantized_data=q, zero_point=np.uint8(0), scale=f32(1), axis=0)
    with pytest.raises(OpError, match="^constexpr_affine_dequantize 'out': quantized_data must be an integer"):
        out_types("constexpr_affine_dequantize", quantized_data=q.astype(f32), zero_point=f32(0),
                  scale=f32(1), axis=0)


# ---- constexpr_blockwise_shift_scale (iOS18) ---------------------------------

def test_blockwise_shift_scale_blocks_on_every_axis():
    data = Typed(np.array([[1, 2, 3, 4], [5, 6, 7, -8]]), "int4")
    scale = np.array([[1.0, 10.0]], f32)  # blocks of [2, 2]
    offset = Typed(np.array([[1, 2]]), "int4")
    y = run("constexpr_blockwise_shift_scale", data=data, scale=scale, offset=offset)
    assert y.tolist() == [[0, 1, 10, 20], [4, 5, 50, -100]]
    y = run("constexpr_blockwise_shift_scale", data=data, scale=np.array([[1.0], [0.5]], f16))
    assert y.dtype == np.float16 and y.tolist() == [[1, 2, 3, 4], [2.5, 3, 3.5, -4]]


def test_blockwise_shift_scale_errors():
    with pytest.raises(OpError, match=r"not a whole number of blocks of scale shape \(1, 3\)"):
        out_types("constexpr_blockwise_shift_scale", data=np.zeros((2, 4), np.int8), scale=np.ones((1, 3), f32))
    with pytest.raises(OpError, match="scale rank 1 must equal data rank 2"):
        out_types("constexpr_blockwise_shift_scale", data=np.zeros((2, 4), np.int8), scale=np.ones(4, f32))
    with pytest.raises(OpError, match="offset shape"):
        out_types("constexpr_blockwise_shift_scale", data=np.zeros((2, 4), np.int8), scale=np.ones((1, 4), f32),
                  offset=np.zeros((2, 4), np.int8))
    with pytest.raises(OpError, match="integer offset must have data's dtype int8, got uint8"):
        out_types("constexpr_blockwise_shift_scale", data=np.zeros((2, 4), np.int8), scale=np.ones((1, 4), f32),
                  offset=np.zeros((1, 4), np.uint8))


# ---- constexpr_lut_to_dense ----------------------------------------------------

def test_lut_ios16_flat_form():
    lut = np.array([-1.0, 0.0, 2.0, 5.0], f32)
    idx = Typed(np.array([3, 0, 1, 2, 2, 3]), "uint2")
    y = run("constexpr_lut_to_dense", indices=idx, lut=lut, shape=np.array([2, 3], np.uint32))
    assert y.tolist() == [[5, -1, 0], [2, 2, 5]]


def test_lut_ios18_per_block_matches_the_mil_example():
    # coremltools' documented case 1: two LUTs along axis 0, [6, 2] uint2 indices
    idx = Typed(np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3]).reshape(6, 2), "uint2")
    lut = np.array([1, 5, 9, 13, 2, 10, 18, 26], f16).reshape(2, 1, 4, 1)
    y = run("constexpr_lut_to_dense", indices=idx, lut=lut)
    assert y.tolist() == [[9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]]


@pytest.mark.parametrize("axis, expected", [
    (1, [[[0, 0], [1, 1], [2, 2], [10, 0], [11, 1], [12, 2]],
         [[10, 10], [11, 11], [12, 12], [0, 0], [1, 1], [2, 2]]]),
    (-1, [[[0, 1, 2, 0, 1, 2], [10, 11, 12, 0, 1, 2]],
          [[10, 11, 12, 10, 11, 12], [0, 1, 2, 0, 1, 2]]]),
])
def test_lut_ios18_vector_form(axis, expected):
    # coremltools' documented case 2: a = [0, 1, 2], b = [10, 11, 12]
    idx = Typed(np.array([[[0, 0], [1, 0]], [[1, 1], [0, 0]]]), "uint1")
    lut = np.array([[0, 1, 2], [10, 11, 12]], np.int8).reshape(1, 1, 1, 2, 3)
    assert out_types("constexpr_lut_to_dense", indices=idx, lut=lut, vector_axis=axis)[0].shape == \
        np.array(expected).shape
    assert run("constexpr_lut_to_dense", indices=idx, lut=lut, vector_axis=axis).tolist() == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(indices=Typed(np.zeros(6), "uint2"), lut=np.zeros(4, f32), shape=[2, 4]),
     r"6 indices for output shape \(2, 4\)"),
    (dict(indices=Typed(np.zeros(6), "uint3"), lut=np.zeros(8, f32), shape=[6]), "LUT has 8 entries"),
    (dict(indices=Typed(np.zeros(6), "uint4"), lut=np.zeros(4, f32), shape=[6]), "needs uint2 indices, got uint4"),
    (dict(indices=Typed(np.zeros((2, 3)), "uint1"), lut=np.zeros((2, 1, 1, 2, 1), f32)), "LUT rank 5 must be"),
    (dict(indices=Typed(np.zeros((2, 3)), "uint1"), lut=np.zeros((1, 2, 2, 1), f32)), "whole number of blocks"),
    (dict(indices=Typed(np.zeros((2, 3)), "uint1"), lut=np.zeros((1, 1, 2, 2), f32)), "needs a vector_axis"),
    (dict(indices=Typed(np.zeros((2, 3)), "uint1"), lut=np.zeros((1, 1, 2, 2), f32), vector_axis=2),
     "vector_axis 2 out of range"),
    (dict(indices=np.zeros((2, 3), np.int8), lut=np.zeros((1, 1, 2, 1), f32)), "needs uint1 indices, got int8"),
])
def test_lut_errors(kwargs, message):
    with pytest.raises(OpError, match=message):
        out_types("constexpr_lut_to_dense", **kwargs)


# ---- sparse forms -------------------------------------------------------------

def test_sparse_to_dense_both_forms():
    mask = Typed(np.array([1, 0, 0, 1, 1, 0]), "uint1")
    y = run("constexpr_sparse_to_dense", nonzero_data=np.array([7, 8, 9], np.int8), mask=mask, shape=[3, 2])
    assert y.tolist() == [[7, 0], [0, 8], [9, 0]]
    mask2 = Typed(np.array([[0, 1], [1, 0]]), "uint1")
    y = run("constexpr_sparse_to_dense", nonzero_data=np.array([1.5, -2.0], f16), mask=mask2)
    assert y.dtype == np.float16 and y.tolist() == [[0, 1.5], [-2.0, 0]]


def test_sparse_errors():
    mask = Typed(np.array([1, 0, 1]), "uint1")
    with pytest.raises(OpError, match="mask has 2 set bits but nonzero_data has 3 values"):
        out_types("constexpr_sparse_to_dense", nonzero_data=np.ones(3, f32), mask=mask)
    with pytest.raises(OpError, match="mask must be uint1"):
        out_types("constexpr_sparse_to_dense", nonzero_data=np.ones(2, f32), mask=np.array([1, 0, 1], np.uint8))
    with pytest.raises(OpError, match="flat mask of 4 bits"):
        out_types("constexpr_sparse_to_dense", nonzero_data=np.ones(2, f32), mask=mask, shape=[2, 2])


def test_lut_to_sparse_matches_the_mil_example():
    m = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0]])
    nz = Typed(np.array([0, 1, 1, 0, 1, 1, 0, 0, 1]), "uint1")
    mask, vals = run("constexpr_lut_to_sparse", indices_mask=Typed(m, "uint1"), indices_nonzero_data=nz,
                     lut=np.array([2.0, 3.0], f16).reshape(1, 1, 2, 1))
    assert mask.tolist() == m.tolist()
    assert vals.tolist() == [2, 3, 3, 2, 3, 3, 2, 2, 3]
    types = out_types("constexpr_lut_to_sparse", indices_mask=Typed(m, "uint1"), indices_nonzero_data=nz,
                      lut=np.array([[2, 2], [3, 3]], f16).reshape(1, 1, 2, 2), vector_axis=0)
    assert [(t.dtype, t.shape) for t in types] == [("uint1", (8, 6)), ("fp16", (18,))]
    mask, vals = run("constexpr_lut_to_sparse", indices_mask=Typed(m, "uint1"), indices_nonzero_data=nz,
                     lut=np.array([[2, 20], [3, 30]], f16).reshape(1, 1, 2, 2), vector_axis=0)
    assert mask.tolist() == np.repeat(m, 2, axis=0).tolist()
    # row-major over the expanded mask: rows 0 and 1 come from the same indices
    assert vals[:4].tolist() == [2, 3, 20, 30]


def test_sparse_blockwise_shift_scale_matches_the_mil_example():
    m = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]])
    mask, vals = run("constexpr_sparse_blockwise_shift_scale", data_mask=Typed(m, "uint1"),
                     nonzero_data=np.array([10, 11, 3, 4, 5, 6, 7, 8, 9], np.int8),
                     scale=np.array([[0.1, 0.2, 0.3, 0.4]], f32), offset=np.array([[1, 2, 3, 4]], np.int8))
    assert mask.tolist() == m.tolist()
    expected = [9 * f32(0.1), 9 * f32(0.2), 2 * f32(0.1), 2 * f32(0.2), 2 * f32(0.3), 3 * f32(0.3),
                3 * f32(0.4), 7 * f32(0.1), 7 * f32(0.2)]
    assert vals.dtype == np.float32 and vals.tolist() == [float(f32(e)) for e in expected]


def test_constexpr_cast():
    y = run("constexpr_cast", source_val=np.array([1.5, -2.25], f16), output_dtype="fp32")
    assert y.dtype == np.float32 and y.tolist() == [1.5, -2.25]
    with pytest.raises(OpError, match="only fp16 -> fp32"):
        out_types("constexpr_cast", source_val=np.ones(2, f32), output_dtype="fp16")


# ---- bit-for-bit cross-checks against coremltools 9.0 ------------------------

ct16 = optional_module("coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops")
ct18 = optional_module("coremltools.converters.mil.mil.ops.defs.iOS18.compression")
ct_utils = optional_module("coremltools.optimize._utils")
needs_coremltools = requires(ct16, ct18, ct_utils, reason="coremltools 9.0 not installed")

SUBBYTE = {"int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255)}


def rng_from(draw):
    return np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))


def same_bits(ours, theirs, dtype=None):
    ours, theirs = np.ascontiguousarray(ours), np.ascontiguousarray(theirs)
    if dtype is not None:
        theirs = theirs.astype(dtype)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours.view(np.uint8), theirs.view(np.uint8)), (ours, theirs)


@st.composite
def block_case(draw, max_rank=3):
    rank = draw(st.integers(1, max_rank))
    blocks = [draw(st.integers(1, 3)) for _ in range(rank)]
    sizes = [draw(st.integers(1, 3)) for _ in range(rank)]
    return rng_from(draw), tuple(blocks), tuple(b * s for b, s in zip(blocks, sizes))


@needs_coremltools
@given(block_case(), st.sampled_from(list(SUBBYTE)), st.sampled_from([f16, f32]),
       st.sampled_from(["none", "int", "float"]))
def test_blockwise_shift_scale_equals_coremltools(case, dt, sdt, offset_kind):
    rng, blocks, shape = case
    lo, hi = SUBBYTE[dt]
    data = rng.integers(lo, hi + 1, size=shape).astype(np.int8 if dt.startswith("int") else np.uint8)
    scale = rng.uniform(-2, 2, size=blocks).astype(sdt)
    offset = {"none": None, "int": rng.integers(lo, hi + 1, size=blocks).astype(data.dtype),
              "float": rng.uniform(-4, 4, size=blocks).astype(f32)}[offset_kind]
    kwargs = {} if offset is None else {"offset": Typed(offset, dt) if offset_kind == "int" else offset}
    ours = run("constexpr_blockwise_shift_scale", data=Typed(data, dt), scale=scale, **kwargs)
    theirs = ct18.constexpr_blockwise_shift_scale.decompress(data, scale, offset)
    same_bits(ours, theirs, sdt)


@needs_coremltools
@given(st.data(), st.sampled_from([f16, f32]), st.sampled_from(["int8", "uint8"]))
def test_affine_dequantize_equals_coremltools(data, sdt, dt):
    rng = rng_from(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    lo, hi = SUBBYTE[dt]
    q = rng.integers(lo, hi + 1, size=shape).astype(dt)
    per_axis = data.draw(st.booleans())
    n = shape[axis] if per_axis else None
    scale = np.asarray(rng.uniform(0.01, 2, size=n)).astype(sdt)
    zp = np.asarray(rng.integers(lo, hi + 1, size=n)).astype(dt)
    if data.draw(st.booleans()):
        zp = zp.astype(f32) + f32(0.5)
    ours = run("constexpr_affine_dequantize", quantized_data=q, zero_point=zp, scale=scale, axis=axis)
    same_bits(ours, ct16.constexpr_affine_dequantize.decompress(q, zp, scale, axis))


@needs_coremltools
@given(st.data(), st.sampled_from([1, 2, 4, 6, 8]), st.sampled_from([f16, f32, np.int8, np.uint8]))
def test_lut_ios16_equals_coremltools_on_packed_indices(data, nbits, ldt):
    rng = rng_from(data.draw)
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    lut = rng.integers(-100, 100, size=2 ** nbits).astype(ldt)
    idx = rng.integers(0, 2 ** nbits, size=int(np.prod(shape))).astype(np.uint8)
    dt = "uint8" if nbits == 8 else f"uint{nbits}"
    ours = run("constexpr_lut_to_dense", indices=Typed(idx, dt), lut=lut, shape=np.array(shape, np.uint32))
    packed = ct_utils.pack_elements_into_bits(idx, nbits)  # MIL's iOS16 form takes packed bytes
    same_bits(ours, ct16.constexpr_lut_to_dense.decompress(lut, packed, shape))


@st.composite
def lut18_case(draw):
    rng, blocks, shape = draw(block_case())
    nbits = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    vs = draw(st.sampled_from([1, 1, 2, 3]))
    axis = draw(st.integers(-len(shape), len(shape) - 1)) if vs > 1 or draw(st.booleans()) else None
    lut = rng.uniform(-8, 8, size=blocks + (2 ** nbits, vs)).astype(draw(st.sampled_from([f16, f32])))
    idx = rng.integers(0, 2 ** nbits, size=shape).astype(np.uint8)
    return rng, idx, nbits, lut, axis


@needs_coremltools
@given(lut18_case())
def test_lut_ios18_equals_coremltools(case):
    _, idx, nbits, lut, axis = case
    kwargs = {} if axis is None else {"vector_axis": axis}
    ours = run("constexpr_lut_to_dense", indices=Typed(idx, f"uint{nbits}"), lut=lut, **kwargs)
    same_bits(ours, ct18.constexpr_lut_to_dense.decompress(idx, lut, axis))


@needs_coremltools
@given(lut18_case(), st.floats(0, 1))
def test_lut_to_sparse_equals_coremltools(case, density):
    rng, idx, nbits, lut, axis = case
    mask = (rng.uniform(size=idx.shape) < density).astype(np.uint8)
    nz = idx[mask != 0]
    kwargs = {} if axis is None else {"vector_axis": axis}
    ours = run("constexpr_lut_to_sparse", indices_mask=Typed(mask, "uint1"),
               indices_nonzero_data=Typed(nz, f"uint{nbits}"), lut=lut, **kwargs)
    theirs = ct18.constexpr_lut_to_sparse.decompress(mask, nz, lut, axis)
    same_bits(ours[0], theirs[0])
    same_bits(ours[1], theirs[1])


@needs_coremltools
@given(block_case(), st.sampled_from(list(SUBBYTE)), st.sampled_from([f16, f32]), st.booleans(), st.floats(0, 1))
def test_sparse_forms_equal_coremltools(case, dt, sdt, with_offset, density):
    rng, blocks, shape = case
    lo, hi = SUBBYTE[dt]
    storage = np.int8 if dt.startswith("int") else np.uint8
    mask = (rng.uniform(size=shape) < density).astype(np.uint8)
    nz = rng.integers(lo, hi + 1, size=int(mask.sum())).astype(storage)
    scale = rng.uniform(-2, 2, size=blocks).astype(sdt)
    offset = rng.integers(lo, hi + 1, size=blocks).astype(storage) if with_offset else None
    kwargs = {"offset": Typed(offset, dt)} if with_offset else {}
    ours = run("constexpr_sparse_blockwise_shift_scale", data_mask=Typed(mask, "uint1"),
               nonzero_data=Typed(nz, dt), scale=scale, **kwargs)
    theirs = ct18.constexpr_sparse_blockwise_shift_scale.decompress(mask, nz, scale, offset)
    same_bits(ours[0], theirs[0])
    same_bits(ours[1], theirs[1], sdt)

    dense = run("constexpr_sparse_to_dense", nonzero_data=Typed(nz, dt), mask=Typed(mask, "uint1"))
    same_bits(dense, ct18.constexpr_sparse_to_dense.decompress(nz, mask))
    flat = run("constexpr_sparse_to_dense", nonzero_data=Typed(nz, dt), mask=Typed(mask.reshape(-1), "uint1"),
               shape=np.array(shape, np.uint32))
    packed = np.packbits(mask.reshape(-1), bitorder="little")  # MIL's iOS16 mask is packed bytes
    same_bits(flat, ct16.constexpr_sparse_to_dense.decompress(nz, packed, shape))
