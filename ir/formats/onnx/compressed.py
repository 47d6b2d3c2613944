"""Compact ONNX forms of the compressed-weight constexpr ops.

- affine / blockwise dequantization -> DequantizeLinear (scalar, per-axis,
  or per-block with block_size at opset 21, int4/uint4 packed by onnx), or an
  explicit Cast/Sub/Mul over a blocked view when DequantizeLinear cannot say it;
- palettized weights -> indices bit-packed into uint8 bytes, unpacked at run
  time with BitShift + BitwiseAnd, then a LUT Gather (GatherElements for
  per-block LUTs), so the file holds nbits per weight;
- sparse weights -> the mask bit-packed the same way, NonZero positions, and a
  ScatterND of the nonzero values into zeros.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ir.dtypes import dtype as lookup_dtype
from ir.formats.onnx.common import OnnxExportError, elem_type
from ir.packing import pack


def _strip(inputs: list) -> list:
    while inputs and not inputs[-1]:
        inputs.pop()
    return inputs


def dequantize_linear(w, out, data: str, scale: str, scale_dtype: str, zp: str = "", axis=None,
                      block_size=None):
    """DequantizeLinear writing `out`; fp16 / bf16 scales need opset 19, so older opsets go through fp32."""
    attrs = {"axis": None if axis is None else int(axis), "block_size": block_size}
    if scale_dtype == "fp32" or w.opset >= 19:
        return w.define(out, "DequantizeLinear", _strip([data, scale, zp]), **attrs)
    s32 = w.node("Cast", [scale], out.name + "_scale32", to=TensorProto.FLOAT)
    y = w.node("DequantizeLinear", _strip([data, s32, zp]), out.name + "_dq", **attrs)
    return w.define(out, "Cast", [y], to=elem_type(out.dtype))


# ---- bit-packed integers ---------------------------------------------------------

def _bit_lanes(w, packed: str, nbits: int, hint: str) -> str:
    """[bytes] uint8 -> [bytes, 8 // nbits] uint8 lanes (LSB first), for nbits in 1, 2, 4."""
    col = w.node("Unsqueeze", [packed, w.ints(hint + "_ax", [1])], hint + "_col")
    shifts = w.const(hint + "_shifts", np.arange(0, 8, nbits, dtype=np.uint8))
    shifted = w.node("BitShift", [col, shifts], hint + "_shifted", direction="RIGHT")
    mask = w.const(hint + "_mask", np.array((1 << nbits) - 1 if w.opset >= 18 else 1 << nbits, np.uint8))
    return w.node("BitwiseAnd" if w.opset >= 18 else "Mod", [shifted, mask], hint + "_lanes")


def _flat(w, x: str, total: int, count: int, hint: str) -> str:
    flat = w.node("Reshape", [x, w.ints(hint + "_flat_shape", [total])], hint + "_flat")
    if total == count:
        return flat
    return w.node("Slice", [flat, w.ints(hint + "_s0", [0]), w.ints(hint + "_s1", [count])], hint + "_trim")


def unpacked(w, values: np.ndarray, nbits: int, hint: str, as_index: bool = True) -> str:
    """Unsigned integers (row-major) stored as nbits each; at run time an int64 [count] tensor
    (uint8 lanes when as_index is False and nbits divides 8)."""
    flat = np.asarray(values).reshape(-1)
    count = flat.size
    if nbits >= 8:
        data = w.const(hint + "_u8", flat.astype(np.uint8))
        return w.node("Cast", [data], hint + "_idx", to=TensorProto.INT64)
    packed = np.frombuffer(pack(flat, f"uint{nbits}"), np.uint8)
    name = w.const(hint + "_packed", packed)
    if 8 % nbits == 0:
        lanes = _bit_lanes(w, name, nbits, hint)
        vals = _flat(w, lanes, packed.size * (8 // nbits), count, hint)
        return w.node("Cast", [vals], hint + "_idx", to=TensorProto.INT64) if as_index else vals
    # 3 and 6 bits straddle bytes: unpack to bits, then weigh each group of nbits
    bits = _flat(w, _bit_lanes(w, name, 1, hint), packed.size * 8, count * nbits, hint)
    groups = w.node("Cast", [w.node("Reshape", [bits, w.ints(hint + "_gshape", [count, nbits])], hint + "_groups")],
                    hint + "_g64", to=TensorProto.INT64)
    weighted = w.node("Mul", [groups, w.const(hint + "_weights", 1 << np.arange(nbits, dtype=np.int64))], hint + "_w")
    return w.node("ReduceSum", [weighted, w.ints(hint + "_rax", [1])], hint + "_idx", keepdims=0)


def _need(w, op, var, what):
    val = w.static(var)
    if val is None:
        raise OnnxExportError(f"{op.op_type} {op.name!r}: {what} must be known at build time")
    return val


# ---- affine ----------------------------------------------------------------------

def affine_dequantize(op, w):
    """constexpr_affine_dequantize: scale * (data - zero_point), scalar or per-axis."""
    scale, zp = _need(w, op, op.scale, "scale"), _need(w, op, op.zero_point, "zero_point")
    if scale.ndim == 0 and zp.ndim == 0:
        axis = None
    else:
        n = max(scale.size, zp.size)
        scale, zp = np.broadcast_to(scale, (n,)), np.broadcast_to(zp, (n,))
        axis = int(op.axis.val) if op.axis is not None else 0
    zp_name = w.initializer(w.fresh(op.name + "_zp"), zp, op.zero_point.dtype)
    dequantize_linear(w, op.output, w.value(op.quantized_data),
                      w.const(op.name + "_scale", scale), op.scale.dtype, zp_name, axis)


def _blocks(data_shape, scale_shape):
    """(kind, axis, block_size) for the DequantizeLinear that says the same, or None."""
    big = [i for i, p in enumerate(scale_shape) if p > 1]
    differ = [i for i, (d, p) in enumerate(zip(data_shape, scale_shape)) if d != p]
    if not big:
        return "tensor", None, None
    if len(big) == 1 and scale_shape[big[0]] == data_shape[big[0]]:
        return "axis", big[0], None
    if len(differ) == 1:
        a = differ[0]
        return "block", a, data_shape[a] // scale_shape[a]
    return None


def blockwise_shift_scale(op, w):
    """constexpr_blockwise_shift_scale: scale * (data - offset), one scale per block."""
    data, scale, offset = op.data, op.scale, op.offset
    s_val = w.static(scale)
    o_val = w.static(offset) if offset is not None else None
    form = _blocks(data.shape, scale.shape)
    usable = (s_val is not None and (offset is None or (o_val is not None and offset.dtype == data.dtype))
              and data.type.dt.is_integer and form is not None
              and (form[0] != "block" or w.opset >= 21))
    if not usable:
        return _blockwise_by_hand(op, w)
    kind, axis, block = form
    shape_of = {"tensor": (), "axis": (-1,), "block": tuple(scale.shape)}[kind]
    s_name = w.const(op.name + "_scale", s_val.reshape(shape_of))
    zp = "" if offset is None else w.initializer(w.fresh(op.name + "_zp"), o_val.reshape(shape_of), offset.dtype)
    dequantize_linear(w, op.output, w.value(data), s_name, scale.dtype, zp, axis, block)


def _blockwise_by_hand(op, w):
    """Cast / Sub / Mul over the [p0, d0/p0, p1, d1/p1, ...] view: any block shape, any opset."""
    data, scale, offset = op.data, op.scale, op.offset
    fdt = elem_type(scale.dtype)
    view = [x for d, p in zip(data.shape, scale.shape) for x in (p, d // p)]
    pview = [x for p in scale.shape for x in (p, 1)]
    n = op.name
    x = w.node("Reshape", [w.node("Cast", [w.value(data)], n + "_f", to=fdt), w.ints(n + "_view", view)], n + "_v")
    pshape = w.ints(n + "_pview", pview)
    if offset is not None:
        off = w.node("Cast", [w.value(offset)], n + "_off_f", to=fdt)
        x = w.node("Sub", [x, w.node("Reshape", [off, pshape], n + "_off_v")], n + "_shifted")
    y = w.node("Mul", [x, w.node("Reshape", [w.value(scale), pshape], n + "_scale_v")], n + "_scaled")
    w.define(op.output, "Reshape", [y, w.ints(n + "_shape", data.shape)])


# ---- palettization -------------------------------------------------------------------

def lut_to_dense(op, w):
    idx = _need(w, op, op.indices, "indices")
    nbits = lookup_dtype(op.indices.dtype).bits
    lut = op.lut
    n = op.name
    if op.shape is not None:  # iOS16: one flat LUT
        flat = w.node("Gather", [w.value(lut), unpacked(w, idx, nbits, n + "_idx")], n + "_g")
        return w.define(op.output, "Reshape", [flat, w.ints(n + "_shape", op.shape.val)])
    blocks, k, vs = lut.shape[:-2], lut.shape[-2], lut.shape[-1]
    if vs != 1:
        return w.materialize(op)  # vector palettization: dense (correct, not compact)
    nblocks = int(np.prod(blocks, dtype=np.int64))
    if nblocks == 1:
        table = w.node("Reshape", [w.value(lut), w.ints(n + "_k", [k])], n + "_lut")
        flat = w.node("Gather", [table, unpacked(w, idx, nbits, n + "_idx")], n + "_g")
        return w.define(op.output, "Reshape", [flat, w.ints(n + "_shape", idx.shape)])
    r = idx.ndim
    inner = [d // p for d, p in zip(idx.shape, blocks)]
    view = [x for p, b in zip(blocks, inner) for x in (p, b)]
    block_major = idx.reshape(view).transpose(list(range(0, 2 * r, 2)) + list(range(1, 2 * r, 2)))
    ids = w.node("Reshape", [unpacked(w, block_major, nbits, n + "_idx"),
                             w.ints(n + "_pb", [nblocks, -1])], n + "_ids")
    table = w.node("Reshape", [w.value(lut), w.ints(n + "_pk", [nblocks, k])], n + "_lut")
    got = w.node("GatherElements", [table, ids], n + "_g", axis=1)
    grid = w.node("Reshape", [got, w.ints(n + "_grid", list(blocks) + inner)], n + "_grid")
    back = [a for i in range(r) for a in (i, r + i)]
    inter = w.node("Transpose", [grid], n + "_inter", perm=back)
    w.define(op.output, "Reshape", [inter, w.ints(n + "_shape", idx.shape)])


# ---- sparsity ---------------------------------------------------------------------

def sparse_to_dense(op, w):
    mask = _need(w, op, op.mask, "mask")
    n = op.name
    bits = unpacked(w, (mask != 0).astype(np.uint8), 1, n + "_mask", as_index=False)
    where = w.node("Transpose", [w.node("NonZero", [bits], n + "_nz")], n + "_where", perm=[1, 0])
    dt = op.output.dtype
    zero = helper.make_tensor("value", elem_type(dt), [1], [0])
    zeros = w.node("ConstantOfShape", [w.ints(n + "_n", [mask.size])], n + "_zeros", value=zero)
    dense = w.node("ScatterND", [zeros, where, w.value(op.nonzero_data)], n + "_dense")
    w.define(op.output, "Reshape", [dense, w.ints(n + "_shape", op.output.shape)])
