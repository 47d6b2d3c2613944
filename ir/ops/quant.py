"""Quantization ops (MIL iOS17 quantize / dequantize) and the Core ML
constexpr decompression ops of the iOS16 and iOS18 opsets.

Sub-byte tensors arrive unpacked (one element per byte of storage).
"""
from __future__ import annotations

import sys

import numpy as np

from ir.dtypes import dtype as lookup_dtype
from ir.ops.registry import In, OpError, op, tt, value
from ir.ops.shape_util import norm_axis, numel


def along(param: np.ndarray, axis, rank: int) -> np.ndarray:
    """Shape a scalar or per-axis 1-D parameter so it broadcasts against rank-`rank` data."""
    p = np.asarray(param)
    if p.ndim == 0 or axis is None:
        return p
    shape = [1] * rank
    shape[norm_axis(axis, rank)] = p.size
    return p.reshape(shape)


def _check_per_axis(what, data_shape, param, axis):
    if param is None or param.rank == 0:
        return
    if param.rank != 1:
        raise OpError(f"{what}: scale/zero_point must be scalar or 1-D, got shape {param.shape}")
    if axis is None:
        raise OpError(f"{what}: a 1-D scale/zero_point needs an axis")
    a = norm_axis(axis, len(data_shape), f"{what}: axis")
    if param.shape[0] != data_shape[a] and isinstance(data_shape[a], int):
        raise OpError(f"{what}: {param.shape[0]} scales for axis {a} of size {data_shape[a]}")


# ---- quantize / dequantize ------------------------------------------------

_QUANT_INPUTS = [In("input"), In("zero_point", optional=True, const=True), In("scale", const=True),
                 In("axis", optional=True, const=True)]


def _check_scale_zp(what, ins, axis):
    scale, zp = ins["scale"], ins.get("zero_point")
    if scale.val is not None and np.all(np.asarray(scale.val) == 0):
        raise OpError(f"{what}: scale cannot be 0")
    if zp is not None and zp.rank != scale.rank:
        raise OpError(f"{what}: zero_point {zp.shape} and scale {scale.shape} must both be scalars or both vectors")
    _check_per_axis(what, ins["input"].shape, scale, axis)
    _check_per_axis(what, ins["input"].shape, zp, axis)


def _quantize_infer(ins, attrs):
    x, out = ins["input"], str(value(ins, "output_dtype"))
    if out not in ("int8", "uint8"):
        raise OpError(f"quantize: output_dtype must be int8 or uint8, got {out!r}")
    if not x.type.dt.is_float:
        raise OpError(f"quantize: input must be float, got {x.dtype}")
    if ins["scale"].dtype != x.dtype:
        raise OpError(f"quantize: scale is {ins['scale'].dtype} but input is {x.dtype}")
    zp = ins.get("zero_point")
    if zp is not None and zp.dtype != out:
        raise OpError(f"quantize: zero_point is {zp.dtype} but output_dtype is {out}")
    _check_scale_zp("quantize", ins, value(ins, "axis"))
    return [tt(out, x.shape)]


@op("quantize", _QUANT_INPUTS + [In("output_dtype", const=True)], _quantize_infer)
def _quantize(v, ctx):
    """clip(round_half_even(input / scale) + zero_point) to output_dtype's range.

    The division happens in the input's dtype and the rounding before the
    zero point is added, as MIL's iOS17 quantize does (this matters at .5)."""
    x = v["input"]
    dt = ctx.out_types[0].dt
    axis = v.get("axis")
    q = np.round(x / along(v["scale"], axis, x.ndim).astype(x.dtype))
    if v.get("zero_point") is not None:
        q = q + along(v["zero_point"], axis, x.ndim).astype(np.float32)
    return [np.clip(q, dt.min, dt.max).astype(dt.storage)]


def _dequantize_infer(ins, attrs):
    x, scale, zp = ins["input"], ins["scale"], ins.get("zero_point")
    if not x.type.dt.is_integer:
        raise OpError(f"dequantize: input must be an integer tensor, got {x.dtype}")
    if not scale.type.dt.is_float:
        raise OpError(f"dequantize: scale must be float, got {scale.dtype}")
    if zp is not None and zp.dtype != x.dtype:
        raise OpError(f"dequantize: zero_point is {zp.dtype} but input is {x.dtype}")
    _check_scale_zp("dequantize", ins, value(ins, "axis"))
    return [tt(scale.dtype, x.shape)]


def affine_dequantize(q, scale, zero_point, axis):
    """scale * (q - zero_point), computed in fp32 and returned in scale's dtype."""
    x = q.astype(np.float32)
    if zero_point is not None:
        x = x - along(zero_point, axis, q.ndim).astype(np.float32)
    return (x * along(scale, axis, q.ndim).astype(np.float32)).astype(np.asarray(scale).dtype)


@op("dequantize", _QUANT_INPUTS, _dequantize_infer)
def _dequantize(v, ctx):
    """scale * (input - zero_point), in scale's dtype"""
    return [affine_dequantize(v["input"], v["scale"], v.get("zero_point"), v.get("axis"))]


# ---- iOS16 constexpr_affine_dequantize ------------------------------------

def _affine_infer(ins, attrs):
    q, scale, zp = ins["quantized_data"], ins["scale"], ins["zero_point"]
    axis = value(ins, "axis", 0)
    _check_per_axis("constexpr_affine_dequantize", q.shape, scale, axis)
    _check_per_axis("constexpr_affine_dequantize", q.shape, zp, axis)
    if not q.type.dt.is_integer:
        raise OpError(f"constexpr_affine_dequantize: quantized_data must be an integer tensor, got {q.dtype}")
    if zp.dtype not in (q.dtype, "fp32"):
        raise OpError(f"constexpr_affine_dequantize: zero_point is {zp.dtype} but must be fp32 or "
                      f"quantized_data's {q.dtype}")
    if not scale.type.dt.is_float:
        raise OpError(f"constexpr_affine_dequantize: scale must be float, got {scale.dtype}")
    return [tt(scale.dtype, q.shape)]


@op("constexpr_affine_dequantize",
    [In("quantized_data"), In("zero_point"), In("scale"), In("axis", optional=True, const=True)],
    _affine_infer)
def _constexpr_affine(v, ctx):
    """scale * (quantized_data - zero_point) with scalar or per-axis scale / zero_point"""
    axis = int(v["axis"]) if v.get("axis") is not None else 0
    return [affine_dequantize(v["quantized_data"], v["scale"], v["zero_point"], axis)]


# ---- iOS18 constexpr_blockwise_shift_scale ---------------------------------

def block_view(data: np.ndarray, param: np.ndarray):
    """Reshape data [d0, d1, ...] to [p0, d0/p0, p1, d1/p1, ...] and param to
    [p0, 1, p1, 1, ...] so that an elementwise op applies param per block."""
    dshape, pshape = [], []
    for d, p in zip(data.shape, param.shape):
        dshape += [p, d // p]
        pshape += [p, 1]
    return data.reshape(dshape), param.reshape(pshape)


def _check_blocks(what, data_shape, param, name="scale"):
    if param.rank != len(data_shape):
        raise OpError(f"{what}: {name} rank {param.rank} must equal data rank {len(data_shape)}")
    if not data_shape:
        raise OpError(f"{what}: data must have rank >= 1")
    for d, p in zip(data_shape, param.shape):
        if isinstance(d, int) and isinstance(p, int) and (p == 0 or d % p):
            raise OpError(f"{what}: data shape {tuple(data_shape)} is not a whole number of blocks "
                          f"of {name} shape {tuple(param.shape)}")


def _check_shift_scale(what, data_shape, data_dtype, scale, offset):
    if not scale.type.dt.is_float:
        raise OpError(f"{what}: scale must be fp16 or fp32, got {scale.dtype}")
    _check_blocks(what, data_shape, scale)
    if offset is None:
        return
    if offset.shape != scale.shape:
        raise OpError(f"{what}: offset shape {offset.shape} differs from scale shape {scale.shape}")
    if not offset.type.dt.is_float and offset.dtype != data_dtype:
        raise OpError(f"{what}: an integer offset must have data's dtype {data_dtype}, got {offset.dtype}")


def _shift_scale_infer(ins, attrs):
    data, scale, offset = ins["data"], ins["scale"], ins.get("offset")
    _check_shift_scale("constexpr_blockwise_shift_scale", data.shape, data.dtype, scale, offset)
    return [tt(scale.dtype, data.shape)]


def blockwise_shift_scale(data, scale, offset):
    """scale * (data - offset), each scale/offset entry covering one block of data.

    Arithmetic follows numpy promotion from data cast to scale's dtype (an fp32
    offset with fp16 scale computes in fp32), then the result is cast to
    scale's dtype: bit for bit what coremltools' decompress yields.

    Fast path (same bits): 8-bit integer data with no offset or an 8-bit integer
    offset and an fp16 / fp32 scale. There data - offset is an integer in
    [-383, 255], exact in fp16 and fp32, and its product with a scale (11 or 24
    significant bits times at most 9) is exact in fp32; so computing in fp32
    and rounding once to scale's dtype equals numpy's fp16 arithmetic (which
    rounds each exact fp32 product to fp16). fp16 arithmetic is emulated by numpy
    and about 50x slower; the fast path also works in cache-sized chunks
    instead of full-size temporaries."""
    if _shift_scale_exact_in_fp32(data, scale, offset):
        if _BYTE_CODES * scale.size * 4 <= data.size:
            return _shift_scale_by_table(data, scale, offset)
        return _shift_scale_fp32(data, scale, offset)
    x = data.astype(scale.dtype)
    xb, sb = block_view(x, scale)
    if offset is not None:
        xb = xb - block_view(x, offset)[1]
    return (sb * xb).reshape(data.shape).astype(scale.dtype, copy=False)


_CHUNK = 1 << 16  # elements per pass of the chunked kernels: temporaries stay in cache
_PAIRS_FROM = 1 << 16  # lookups at least this long amortize building a pair table
_BYTE_CODES = 256


def _is_byte_int(a) -> bool:
    return a.dtype.kind in "iu" and a.dtype.itemsize == 1


def _shift_scale_exact_in_fp32(data, scale, offset) -> bool:
    return (data.ndim >= 1 and _is_byte_int(data) and scale.dtype in (np.float16, np.float32)
            and (offset is None or _is_byte_int(offset)))


def _shift_scale_by_table(data, scale, offset):
    """Large blocks: each block's 256 possible results, computed as _shift_scale_fp32 does
    (same fp32 operations, same single rounding), then a LUT lookup on data's bytes."""
    codes = np.arange(_BYTE_CODES, dtype=np.uint8).view(data.dtype).astype(np.float32)  # byte -> value
    centered = codes if offset is None else codes - offset.astype(np.float32)[..., None]
    table = (scale.astype(np.float32)[..., None] * centered).astype(scale.dtype)
    lut = np.broadcast_to(table, scale.shape + (_BYTE_CODES,))[..., None]
    return _scalar_lut(data.view(np.uint8), lut)


def _shift_scale_fp32(data, scale, offset):
    """blockwise_shift_scale in fp32 over chunks of rows, one rounding to scale's dtype per element."""
    out = np.empty(data.shape, scale.dtype)
    rows = data.shape[0]
    per_block = rows // scale.shape[0]  # rows per block on axis 0
    step = max(1, _CHUNK // max(1, data.size // max(rows, 1)))
    scale32 = scale.astype(np.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        pick = np.arange(r0, r1) // per_block  # each row of the chunk gets its block's parameters
        x = data[r0:r1].astype(np.float32)
        xb, sb = block_view(x, scale32[pick])
        if offset is not None:
            np.subtract(xb, block_view(x, offset[pick])[1], out=xb)
        np.multiply(xb, sb, out=xb)
        out[r0:r1] = x
    return out


@op("constexpr_blockwise_shift_scale", [In("data"), In("scale"), In("offset", optional=True)],
    _shift_scale_infer)
def _constexpr_shift_scale(v, ctx):
    """scale * (data - offset) with per-block scale / offset (block = data dim / scale dim)"""
    return [blockwise_shift_scale(v["data"], v["scale"], v.get("offset"))]


# ---- constexpr_lut_to_dense (iOS16 flat form, iOS18 per-block form) ----------

_IOS16_LUT_SIZES = (2, 4, 16, 64, 256)  # nbits 1, 2, 4, 6, 8


def _check_lut_indices(what, idx, n_entries, sizes=None):
    """The LUT has 2**nbits entries and the (unpacked) indices are uint<nbits>."""
    nbits = n_entries.bit_length() - 1 if isinstance(n_entries, int) and n_entries > 0 else -1
    allowed = sizes or tuple(2 ** b for b in (1, 2, 3, 4, 6, 8))
    if n_entries not in allowed:
        raise OpError(f"{what}: LUT has {n_entries} entries; it must have one of {allowed}")
    if idx.dtype != f"uint{nbits}":
        raise OpError(f"{what}: a LUT of {n_entries} entries needs uint{nbits} indices, got {idx.dtype}")


def _vector_axis(what, ins, rank, vector_size):
    axis = value(ins, "vector_axis")
    if axis is None:
        if vector_size > 1:
            raise OpError(f"{what}: vector size {vector_size} needs a vector_axis")
        return None
    if np.ndim(axis) != 0:
        raise OpError(f"{what}: vector_axis must be a scalar, got shape {np.shape(axis)}")
    return norm_axis(axis, rank, f"{what}: vector_axis")


def _lut_block_shape(what, ins, index_shape, lut):
    """Output shape of a per-block (iOS18) LUT over indices of index_shape."""
    if lut.rank != len(index_shape) + 2:
        raise OpError(f"{what}: LUT rank {lut.rank} must be indices rank {len(index_shape)} + 2")
    _check_blocks(what, index_shape, tt(lut.dtype, lut.shape[:-2]), "LUT block")
    shape = list(index_shape)
    axis = _vector_axis(what, ins, len(index_shape), lut.shape[-1])
    if axis is not None:
        shape[axis] = shape[axis] * lut.shape[-1] if isinstance(shape[axis], int) else "?"
    return shape


def _lut_infer(ins, attrs):
    lut, idx = ins["lut"], ins["indices"]
    what = "constexpr_lut_to_dense"
    if ins.get("shape") is not None:  # iOS16: flat LUT, flat indices, explicit shape
        shape = tuple(int(s) for s in np.asarray(value(ins, "shape")).reshape(-1))
        if lut.rank != 1:
            raise OpError(f"{what}: the iOS16 form (with shape) takes a 1-D LUT, got {lut.shape}")
        if idx.rank != 1:
            raise OpError(f"{what}: the iOS16 form (with shape) takes 1-D indices, got {idx.shape}")
        _check_lut_indices(what, idx, lut.shape[0], _IOS16_LUT_SIZES)
        if isinstance(idx.shape[0], int) and idx.shape[0] != numel(shape):
            raise OpError(f"{what}: {idx.shape[0]} indices for output shape {shape} ({numel(shape)} elements)")
        return [tt(lut.dtype, shape)]
    if lut.rank < 3:
        raise OpError(f"{what}: the iOS18 form takes a LUT [blocks..., 2**nbits, vector_size], "
                      f"got {lut.shape} (give `shape` for the iOS16 flat form)")
    _check_lut_indices(what, idx, lut.shape[-2])
    return [tt(lut.dtype, _lut_block_shape(what, ins, idx.shape, lut))]


def lut_to_dense(indices: np.ndarray, lut: np.ndarray, vector_axis=None) -> np.ndarray:
    """iOS18 semantics: each block of indices reads its own LUT [..blocks, 2**n, vector_size];
    with vector_size > 1 each index yields a vector laid out along vector_axis."""
    vs = lut.shape[-1]
    rank = indices.ndim
    if vs == 1 and rank >= 1 and _integer_indices_in_range(indices, lut.shape[-2]):
        return _scalar_lut(indices, lut)
    axis = norm_axis(vector_axis, rank) if vs > 1 else rank - 1
    idx = np.moveaxis(indices, axis, -1)
    table = np.moveaxis(lut, axis, rank - 1)  # the block dims follow the moved indices
    block_of = np.ix_(*[np.arange(s) // (s // b) for s, b in zip(idx.shape, table.shape[:rank])])
    out = table[block_of + (idx.astype(np.intp),)]  # idx.shape + (vs,)
    out = out.reshape(idx.shape[:-1] + (idx.shape[-1] * vs,))
    return np.moveaxis(out, -1, axis)


def _integer_indices_in_range(indices: np.ndarray, entries: int) -> bool:
    """Whether the fast lookups apply (integer indices); out-of-range ones raise IndexError
    here, as numpy indexing would."""
    if indices.dtype.kind not in "iu":
        return False
    if indices.size and (indices.min() < 0 or indices.max() >= entries):
        bad = indices[(indices < 0) | (indices >= entries)].flat[0]
        raise IndexError(f"LUT index {bad} is out of range for a LUT of {entries} entries")
    return True


def _scalar_lut(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Scalar LUTs (vector size 1) [blocks..., entries, 1]. Blocks only along axis 0 (per
    tensor, or grouped output channels) are contiguous runs of indices: one flat lookup
    each. Otherwise every index is offset into the flattened LUTs by its block's position."""
    rank, blocks = indices.ndim, lut.shape[:indices.ndim]
    out = np.empty(indices.shape, lut.dtype)
    if all(b == 1 for b in blocks[1:]) and blocks[0] * 64 <= max(indices.size, 64):
        flat_idx, flat_out = np.ascontiguousarray(indices).reshape(blocks[0], -1), out.reshape(blocks[0], -1)
        for b in range(blocks[0]):
            lookup(lut[b].reshape(-1), flat_idx[b], flat_out[b])
        return out
    entries = lut.shape[-2]
    table = np.ascontiguousarray(lut).reshape(-1)
    sizes = [d // b for d, b in zip(indices.shape, blocks)]
    strides = np.cumprod((blocks[1:] + (entries,))[::-1])[::-1]  # LUT elements per block step, per axis
    rest = sum(np.reshape(np.arange(d) // s * st, [d if k == a else 1 for k in range(rank - 1)])
               for a, (d, s, st) in enumerate(zip(indices.shape[1:], sizes[1:], strides[1:])))
    step = max(1, _CHUNK // max(1, indices[0].size))
    for r0 in range(0, indices.shape[0], step):
        rows = np.arange(r0, min(r0 + step, indices.shape[0]))
        first = (rows // sizes[0] * strides[0]).reshape((-1,) + (1,) * (rank - 1))
        where = np.add(indices[rows[0]:rows[-1] + 1], first + rest, dtype=np.intp)
        np.take(table, where, out=out[rows[0]:rows[-1] + 1], mode="clip")
    return out


def lookup(table: np.ndarray, indices: np.ndarray, out: np.ndarray) -> None:
    """out[i] = table[indices[i]] for 1-D arrays, indices known to be in range.

    In cache-sized chunks (np.take converts a whole index array to intp first:
    8 bytes per element). 2-byte tables read 8-bit indices two at a time, through
    a table of every pair of entries (64K entries of 4 bytes, built per call)."""
    if out.dtype.itemsize == 2 and indices.dtype.itemsize == 1 and table.size <= 256 \
            and indices.size >= _PAIRS_FROM and indices.size % 2 == 0 and sys.byteorder == "little":
        table, indices, out = _pair_table(table), indices.view(np.uint16), out.view(np.uint32)
    for i in range(0, indices.size, _CHUNK):
        np.take(table, indices[i:i + _CHUNK], out=out[i:i + _CHUNK], mode="clip")


def _pair_table(table: np.ndarray) -> np.ndarray:
    """uint32 entry hi * 256 + lo holding table[lo] in its low half, table[hi] in its high half."""
    bits = np.zeros(256, np.uint32)
    bits[:table.size] = table.view(np.uint16)
    return ((bits[:, None] << 16) | bits[None, :]).reshape(-1)


@op("constexpr_lut_to_dense",
    [In("indices"), In("lut"), In("shape", optional=True, const=True),
     In("vector_axis", optional=True, const=True)], _lut_infer)
def _constexpr_lut(v, ctx):
    """iOS16 (with shape): lut[indices] reshaped to shape; iOS18: per-block LUT lookup"""
    if v.get("shape") is not None:
        lut, idx = v["lut"], np.ascontiguousarray(v["indices"]).reshape(-1)
        if not _integer_indices_in_range(idx, lut.shape[0]):
            return [lut[idx.astype(np.intp)].reshape(ctx.out_types[0].shape)]
        out = np.empty(idx.size, lut.dtype)
        lookup(np.ascontiguousarray(lut), idx, out)
        return [out.reshape(ctx.out_types[0].shape)]
    return [lut_to_dense(v["indices"], v["lut"], v.get("vector_axis"))]


# ---- sparsity -------------------------------------------------------------

def _check_mask(what, mask, data, mask_name="mask", data_name="nonzero_data"):
    if mask.dtype != "uint1":
        raise OpError(f"{what}: {mask_name} must be uint1 (one element per bit, unpacked), got {mask.dtype}")
    if data.rank != 1:
        raise OpError(f"{what}: {data_name} must be 1-D, got {data.shape}")
    if mask.val is not None and isinstance(data.shape[0], int):
        n = int(np.count_nonzero(mask.val))
        if n != data.shape[0]:
            raise OpError(f"{what}: {mask_name} has {n} set bits but {data_name} has {data.shape[0]} values")


def _sparse_infer(ins, attrs):
    data, mask = ins["nonzero_data"], ins["mask"]
    what = "constexpr_sparse_to_dense"
    _check_mask(what, mask, data)
    if ins.get("shape") is None:  # iOS18: the mask has the dense shape
        return [tt(data.dtype, mask.shape)]
    shape = tuple(int(s) for s in np.asarray(value(ins, "shape")).reshape(-1))
    if mask.rank != 1 or (isinstance(mask.shape[0], int) and mask.shape[0] != numel(shape)):
        raise OpError(f"{what}: the iOS16 form (with shape) needs a flat mask of {numel(shape)} bits, "
                      f"got {mask.shape}")
    return [tt(data.dtype, shape)]


def sparse_to_dense(nonzero_data: np.ndarray, mask: np.ndarray, shape=None) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=nonzero_data.dtype)
    out[mask != 0] = nonzero_data
    return out if shape is None else out.reshape(shape)


@op("constexpr_sparse_to_dense",
    [In("nonzero_data"), In("mask"), In("shape", optional=True, const=True)], _sparse_infer)
def _constexpr_sparse(v, ctx):
    """zeros, with nonzero_data written (row-major) where mask is set"""
    return [sparse_to_dense(v["nonzero_data"], v["mask"], ctx.out_types[0].shape)]


def _lut_sparse_infer(ins, attrs):
    mask, data, lut = ins["indices_mask"], ins["indices_nonzero_data"], ins["lut"]
    what = "constexpr_lut_to_sparse"
    _check_mask(what, mask, data, "indices_mask", "indices_nonzero_data")
    if lut.rank < 3:
        raise OpError(f"{what}: LUT must be [blocks..., 2**nbits, vector_size], got {lut.shape}")
    _check_lut_indices(what, data, lut.shape[-2])
    shape = _lut_block_shape(what, ins, mask.shape, lut)
    n, vs = data.shape[0], lut.shape[-1]
    return [tt("uint1", shape), tt(lut.dtype, (n * vs if isinstance(n, int) else "?",))]


@op("constexpr_lut_to_sparse",
    [In("indices_mask"), In("indices_nonzero_data"), In("lut"),
     In("vector_axis", optional=True, const=True)], _lut_sparse_infer)
def _constexpr_lut_sparse(v, ctx):
    """LUT lookup of the nonzero indices; returns (mask, nonzero values). With vectors
    the mask is repeated along vector_axis and every set bit takes one vector element."""
    mask = v["indices_mask"]
    dense_idx = sparse_to_dense(v["indices_nonzero_data"], mask)
    axis = v.get("vector_axis")
    dense = lut_to_dense(dense_idx, v["lut"], axis)
    if axis is not None:
        mask = np.repeat(mask, v["lut"].shape[-1], axis=int(axis))
    return [mask, dense[mask != 0]]


def _sparse_shift_infer(ins, attrs):
    mask, data, scale = ins["data_mask"], ins["nonzero_data"], ins["scale"]
    what = "constexpr_sparse_blockwise_shift_scale"
    _check_mask(what, mask, data, "data_mask", "nonzero_data")
    _check_shift_scale(what, mask.shape, data.dtype, scale, ins.get("offset"))
    return [tt("uint1", mask.shape), tt(scale.dtype, data.shape)]


@op("constexpr_sparse_blockwise_shift_scale",
    [In("data_mask"), In("nonzero_data"), In("scale"), In("offset", optional=True)],
    _sparse_shift_infer)
def _constexpr_sparse_shift(v, ctx):
    """blockwise shift-scale applied to the nonzero values only; returns (mask, values)"""
    mask = v["data_mask"]
    dense = blockwise_shift_scale(sparse_to_dense(v["nonzero_data"], mask), v["scale"], v.get("offset"))
    return [mask, dense[mask != 0]]


def _cast_infer(ins, attrs):
    out, src = str(value(ins, "output_dtype")), ins["source_val"]
    lookup_dtype(out)
    if src.dtype != "fp16" or out != "fp32":
        raise OpError(f"constexpr_cast: only fp16 -> fp32 is defined, got {src.dtype} -> {out}")
    return [tt(out, src.shape)]


@op("constexpr_cast", [In("source_val"), In("output_dtype", const=True)], _cast_infer)
def _constexpr_cast(v, ctx):
    """source_val converted to output_dtype"""
    return [v["source_val"].astype(ctx.out_types[0].dt.storage)]
