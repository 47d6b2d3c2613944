"""Quantization ops (MIL iOS17 quantize / dequantize) and the Core ML
constexpr decompression ops of the iOS16 and iOS18 opsets.

Sub-byte tensors arrive unpacked (one element per byte of storage).
"""
from __future__ import annotations

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


def _quantize_infer(ins, attrs):
    x, out = ins["input"], str(value(ins, "output_dtype"))
    if out not in ("int8", "uint8"):
        raise OpError(f"quantize: output_dtype must be int8 or uint8, got {out!r}")
    if not x.type.dt.is_float:
        raise OpError(f"quantize: input must be float, got {x.dtype}")
    _check_per_axis("quantize", x.shape, ins["scale"], value(ins, "axis"))
    _check_per_axis("quantize", x.shape, ins.get("zero_point"), value(ins, "axis"))
    return [tt(out, x.shape)]


@op("quantize", _QUANT_INPUTS + [In("output_dtype", const=True)], _quantize_infer)
def _quantize(v, ctx):
    """round_half_even(input / scale + zero_point), clipped to output_dtype's range"""
    x = v["input"]
    dt = ctx.out_types[0].dt
    axis = v.get("axis")
    q = x.astype(np.float32) / along(v["scale"], axis, x.ndim).astype(np.float32)
    if v.get("zero_point") is not None:
        q = q + along(v["zero_point"], axis, x.ndim).astype(np.float32)
    return [np.clip(np.round(q), dt.min, dt.max)]


def _dequantize_infer(ins, attrs):
    x, scale = ins["input"], ins["scale"]
    if not x.type.dt.is_integer:
        raise OpError(f"dequantize: input must be an integer tensor, got {x.dtype}")
    _check_per_axis("dequantize", x.shape, scale, value(ins, "axis"))
    _check_per_axis("dequantize", x.shape, ins.get("zero_point"), value(ins, "axis"))
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
    if zp.dtype != q.dtype:
        raise OpError(f"constexpr_affine_dequantize: zero_point is {zp.dtype} but data is {q.dtype}")
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


def _check_blocks(what, data_shape, param):
    if param.rank != len(data_shape):
        raise OpError(f"{what}: scale/offset rank {param.rank} must equal data rank {len(data_shape)}")
    for d, p in zip(data_shape, param.shape):
        if isinstance(d, int) and isinstance(p, int) and (p == 0 or d % p):
            raise OpError(f"{what}: data shape {tuple(data_shape)} is not a whole number of blocks of {param.shape}")


def _shift_scale_infer(ins, attrs):
    data, scale, offset = ins["data"], ins["scale"], ins.get("offset")
    _check_blocks("constexpr_blockwise_shift_scale", data.shape, scale)
    if offset is not None:
        if offset.shape != scale.shape:
            raise OpError("constexpr_blockwise_shift_scale: offset and scale shapes differ")
    return [tt(scale.dtype, data.shape)]


def blockwise_shift_scale(data, scale, offset):
    """scale * (data - offset), each scale/offset entry covering one block of data."""
    x = data.astype(scale.dtype)
    xb, sb = block_view(x, scale)
    if offset is not None:
        xb = xb - block_view(x, offset)[1].astype(scale.dtype)
    return (sb * xb).reshape(data.shape)


@op("constexpr_blockwise_shift_scale", [In("data"), In("scale"), In("offset", optional=True)],
    _shift_scale_infer)
def _constexpr_shift_scale(v, ctx):
    """scale * (data - offset) with per-block scale / offset (block = data dim / scale dim)"""
    return [blockwise_shift_scale(v["data"], v["scale"], v.get("offset"))]


# ---- constexpr_lut_to_dense (iOS16 flat form, iOS18 per-block form) ----------

def _nbits_of_lut(n: int, what: str) -> int:
    if n < 2 or n & (n - 1) or n > 256:
        raise OpError(f"{what}: LUT size {n} is not a power of two in [2, 256]")
    return n.bit_length() - 1


def _lut_infer(ins, attrs):
    lut, idx = ins["lut"], ins["indices"]
    what = "constexpr_lut_to_dense"
    if not idx.type.dt.kind == "uint":
        raise OpError(f"{what}: indices must be unsigned, got {idx.dtype}")
    if ins.get("shape") is not None:  # iOS16: flat LUT, flat indices
        shape = tuple(int(s) for s in value(ins, "shape"))
        if lut.rank != 1:
            raise OpError(f"{what}: the iOS16 form takes a 1-D LUT, got {lut.shape}")
        _nbits_of_lut(lut.shape[0], what)
        if numel(idx.shape) != numel(shape):
            raise OpError(f"{what}: {numel(idx.shape)} indices for output shape {shape}")
        return [tt(lut.dtype, shape)]
    if lut.rank != idx.rank + 2:
        raise OpError(f"{what}: LUT rank {lut.rank} must be indices rank {idx.rank} + 2")
    _nbits_of_lut(lut.shape[-2], what)
    _check_blocks(what, idx.shape, tt(lut.dtype, lut.shape[:-2]))
    shape = list(idx.shape)
    vs = lut.shape[-1]
    if vs > 1:
        axis = value(ins, "vector_axis")
        if axis is None:
            raise OpError(f"{what}: vector size {vs} needs a vector_axis")
        shape[norm_axis(axis, idx.rank)] *= vs
    return [tt(lut.dtype, shape)]


def lut_to_dense(indices: np.ndarray, lut: np.ndarray, vector_axis=None) -> np.ndarray:
    """iOS18 semantics: each block of indices reads its own LUT [..blocks, 2**n, vector_size];
    with vector_size > 1 each index yields a vector laid out along vector_axis."""
    vs = lut.shape[-1]
    rank = indices.ndim
    axis = norm_axis(vector_axis, rank) if vs > 1 else rank - 1
    idx = np.moveaxis(indices, axis, -1)
    table = np.moveaxis(lut, axis, rank - 1)  # the block dims follow the moved indices
    block_of = np.ix_(*[np.arange(s) // (s // b) for s, b in zip(idx.shape, table.shape[:rank])])
    out = table[block_of + (idx.astype(np.intp),)]  # idx.shape + (vs,)
    out = out.reshape(idx.shape[:-1] + (idx.shape[-1] * vs,))
    return np.moveaxis(out, -1, axis)


@op("constexpr_lut_to_dense",
    [In("indices"), In("lut"), In("shape", optional=True, const=True),
     In("vector_axis", optional=True, const=True)], _lut_infer)
def _constexpr_lut(v, ctx):
    """iOS16: lut[indices] reshaped to shape; iOS18: per-block LUT lookup"""
    if v.get("shape") is not None:
        return [v["lut"][v["indices"].reshape(-1).astype(np.intp)].reshape(ctx.out_types[0].shape)]
    return [lut_to_dense(v["indices"], v["lut"], v.get("vector_axis"))]


# ---- sparsity -------------------------------------------------------------

def _sparse_infer(ins, attrs):
    data, mask = ins["nonzero_data"], ins["mask"]
    what = "constexpr_sparse_to_dense"
    if data.rank != 1:
        raise OpError(f"{what}: nonzero_data must be 1-D, got {data.shape}")
    if mask.dtype not in ("uint1", "bool", "uint8"):
        raise OpError(f"{what}: mask must be uint1, got {mask.dtype}")
    if mask.val is not None and isinstance(data.shape[0], int) and int(np.count_nonzero(mask.val)) != data.shape[0]:
        raise OpError(f"{what}: mask has {int(np.count_nonzero(mask.val))} set bits but nonzero_data has {data.shape[0]} values")
    shape = value(ins, "shape")
    return [tt(data.dtype, mask.shape if shape is None else tuple(int(s) for s in shape))]


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
    shape = list(mask.shape)
    vs = lut.shape[-1]
    if lut.rank != mask.rank + 2:
        raise OpError("constexpr_lut_to_sparse: LUT rank must be mask rank + 2")
    if vs > 1:
        axis = value(ins, "vector_axis")
        if axis is None:
            raise OpError(f"constexpr_lut_to_sparse: vector size {vs} needs a vector_axis")
        shape[norm_axis(axis, mask.rank)] *= vs
    n = data.shape[0]
    return [tt("uint1", shape), tt(lut.dtype, (n * vs if isinstance(n, int) else "?",))]


@op("constexpr_lut_to_sparse",
    [In("indices_mask"), In("indices_nonzero_data"), In("lut"),
     In("vector_axis", optional=True, const=True)], _lut_sparse_infer)
def _constexpr_lut_sparse(v, ctx):
    """LUT lookup of the nonzero indices; returns (mask, nonzero values)"""
    mask = v["indices_mask"]
    dense_idx = sparse_to_dense(v["indices_nonzero_data"], mask)
    axis = v.get("vector_axis")
    dense = lut_to_dense(dense_idx, v["lut"], axis)
    if v["lut"].shape[-1] > 1:
        mask = np.repeat(mask, v["lut"].shape[-1], axis=int(axis))
    return [mask, dense[mask != 0]]


def _sparse_shift_infer(ins, attrs):
    mask, data, scale = ins["data_mask"], ins["nonzero_data"], ins["scale"]
    _check_blocks("constexpr_sparse_blockwise_shift_scale", mask.shape, scale)
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
    out = str(value(ins, "output_dtype"))
    lookup_dtype(out)
    return [tt(out, ins["source_val"].shape)]


@op("constexpr_cast", [In("source_val"), In("output_dtype", const=True)], _cast_infer)
def _constexpr_cast(v, ctx):
    """source_val converted to output_dtype"""
    return [v["source_val"].astype(ctx.out_types[0].dt.storage)]
