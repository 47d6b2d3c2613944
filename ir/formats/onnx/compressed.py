"""Compact ONNX forms of the compressed-weight constexpr ops.

- affine / blockwise dequantization -> DequantizeLinear (scalar, per-axis,
  or per-block with block_size at opset 21), or an explicit Cast/Sub/Mul over
  a blocked view when DequantizeLinear cannot say it;
- int4 / uint4 data takes 4 bits in the file at every opset: INT4 / UINT4
  initializers from opset 21 (onnx packs them two per byte); below 21, bytes
  packed two per byte (ir.packing's layout) that the graph unpacks with the
  palettization path's BitShift / BitwiseAnd lanes, int4 sign-extended by a
  16-entry Gather (`packed_nibbles`). The exporter keeps the model's opset
  (see exporter.choose_opset): upgrading it is the caller's choice;
- palettized weights -> indices bit-packed into uint8 bytes, unpacked at run
  time with BitShift + BitwiseAnd, then a LUT Gather (GatherElements for
  per-block LUTs), so the file holds nbits per weight;
- sparse weights -> the mask bit-packed the same way, NonZero positions, and a
  ScatterND of the nonzero values into zeros; the joint forms keep their nonzero
  values compressed too (packed LUT indices + per-block lookup, or integer data
  + DequantizeLinear / per-position scale).
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
    """DequantizeLinear writing `out`; fp16 / bf16 scales need opset 19, so older opsets go through fp32;
    per-axis scales need opset 13, so older opsets spell it out (Cast / Sub / Mul)."""
    if axis is not None and w.opset < 13:
        return _per_axis_by_hand(w, out, data, scale, scale_dtype, zp, int(axis))
    attrs = {"axis": None if axis is None else int(axis), "block_size": block_size}
    if scale_dtype == "fp32" or w.opset >= 19:
        return w.define(out, "DequantizeLinear", _strip([data, scale, zp]), **attrs)
    s32 = w.node("Cast", [scale], out.name + "_scale32", to=TensorProto.FLOAT)
    y = w.node("DequantizeLinear", _strip([data, s32, zp]), out.name + "_dq", **attrs)
    return w.define(out, "Cast", [y], to=elem_type(out.dtype))


def _per_axis_by_hand(w, out, data: str, scale: str, scale_dtype: str, zp: str, axis: int):
    """scale * (data - zp) with one scale per index of `axis`, for opsets before 13."""
    along = [1] * out.rank
    along[axis % out.rank] = -1
    fdt = elem_type(scale_dtype)
    shape = w.ints(out.name + "_along", along)
    x = w.node("Cast", [data], out.name + "_f", to=fdt)
    if zp:
        x = w.node("Sub", [x, w.node("Reshape", [w.node("Cast", [zp], out.name + "_zp_f", to=fdt), shape],
                                     out.name + "_zp_v")], out.name + "_shifted")
    y_scale = w.node("Reshape", [scale, shape], out.name + "_scale_v")
    if elem_type(out.dtype) == fdt:
        return w.define(out, "Mul", [x, y_scale])
    return w.define(out, "Cast", [w.node("Mul", [x, y_scale], out.name + "_scaled")], to=elem_type(out.dtype))


def axes_arg(w, hint: str, axes) -> tuple:
    """(extra inputs, attributes) giving an Unsqueeze / Squeeze / ReduceSum its axes: an input
    from opset 13, an attribute before."""
    axes = [int(a) for a in axes]
    return ([w.ints(hint, axes)], {}) if w.opset >= 13 else ([], {"axes": axes})


# ---- bit-packed integers ---------------------------------------------------------

def _bit_lanes(w, packed: str, nbits: int, hint: str) -> str:
    """[bytes] uint8 -> [bytes, 8 // nbits] uint8 lanes (LSB first), for nbits in 1, 2, 4."""
    extra, attrs = axes_arg(w, hint + "_ax", [1])
    col = w.node("Unsqueeze", [packed] + extra, hint + "_col", **attrs)
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
    (uint8 lanes when as_index is False and nbits divides 8). The writer remembers which
    initializer holds them, for the import record (see Writer.note)."""
    flat = np.asarray(values).reshape(-1)
    count = flat.size
    if nbits >= 8:
        data = w.const(hint + "_u8", flat.astype(np.uint8))
        out = w.node("Cast", [data], hint + "_idx", to=TensorProto.INT64)
        w.packed_of[out] = {"init": data}
        return out
    packed = np.frombuffer(pack(flat, f"uint{nbits}"), np.uint8)
    name = w.const(hint + "_packed", packed)
    out = _unpack_nodes(w, name, packed.size, count, nbits, hint, as_index)
    w.packed_of[out] = {"init": name, "nbits": nbits}
    return out


def packed_nibbles(w, name: str, arr: np.ndarray, ir_dtype: str) -> str:
    """int4 / uint4 below opset 21: the values packed two per byte in a uint8 initializer
    and decoded at run time into an int8 / uint8 tensor of arr's shape, named `name` (what
    DequantizeLinear and Cast take at these opsets). The writer notes the packed
    initializer for the import record (Writer.note)."""
    packed = np.frombuffer(pack(arr, ir_dtype), np.uint8)
    init = w.const(name + "_packed", packed)
    lanes = _unpack_nodes(w, init, packed.size, arr.size, 4, name, as_index=False)  # uint8 codes 0..15
    if ir_dtype == "int4":  # two's complement nibble -> int8: one lookup, any opset
        codes = w.node("Cast", [lanes], name + "_codes", to=TensorProto.INT64)
        lanes = w.node("Gather", [_int4_table(w), codes], name + "_int8")
    w.node("Reshape", [lanes, w.ints(name + "_shape", arr.shape)], outputs=[name])
    w.packed_of[name] = {"init": init, "nbits": 4}
    return name


def _int4_table(w) -> str:
    """int8 value of each 4-bit two's complement code, written once per model."""
    key = ("int4 sign table",)
    if key not in w.position_memo:
        codes = np.arange(16, dtype=np.int16)
        w.position_memo[key] = w.const("int4_values", np.where(codes < 8, codes, codes - 16).astype(np.int8))
    return w.position_memo[key]


def _unpack_nodes(w, name: str, nbytes: int, count: int, nbits: int, hint: str, as_index: bool) -> str:
    if 8 % nbits == 0:
        lanes = _bit_lanes(w, name, nbits, hint)
        vals = _flat(w, lanes, nbytes * (8 // nbits), count, hint)
        return w.node("Cast", [vals], hint + "_idx", to=TensorProto.INT64) if as_index else vals
    # 3 and 6 bits straddle bytes: unpack to bits, then weigh each group of nbits
    bits = _flat(w, _bit_lanes(w, name, 1, hint), nbytes * 8, count * nbits, hint)
    groups = w.node("Cast", [w.node("Reshape", [bits, w.ints(hint + "_gshape", [count, nbits])], hint + "_groups")],
                    hint + "_g64", to=TensorProto.INT64)
    weighted = w.node("Mul", [groups, w.const(hint + "_weights", 1 << np.arange(nbits, dtype=np.int64))], hint + "_w")
    extra, attrs = axes_arg(w, hint + "_rax", [1])
    return w.node("ReduceSum", [weighted] + extra, hint + "_idx", keepdims=0, **attrs)


def _data(w, var) -> str:
    """w.value(var), with the import record told where the value lies when it is a
    packed int4 initializer (a const read as data is noted as its plain initializer)."""
    return w.note(var, w.value(var))


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
    zp_name = w.note(op.zero_point, w.initializer(w.fresh(op.name + "_zp"), zp, op.zero_point.dtype))
    dequantize_linear(w, op.output, _data(w, op.quantized_data),
                      w.note(op.scale, w.const(op.name + "_scale", scale)), op.scale.dtype, zp_name, axis)


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
    s_name = w.note(scale, w.const(op.name + "_scale", s_val.reshape(shape_of)))
    zp = "" if offset is None else w.note(offset, w.initializer(w.fresh(op.name + "_zp"), o_val.reshape(shape_of),
                                                                offset.dtype))
    dequantize_linear(w, op.output, _data(w, data), s_name, scale.dtype, zp, axis, block)


def _blockwise_by_hand(op, w):
    """Cast / Sub / Mul over the [p0, d0/p0, p1, d1/p1, ...] view: any block shape, any opset."""
    data, scale, offset = op.data, op.scale, op.offset
    fdt = elem_type(scale.dtype)
    view = [x for d, p in zip(data.shape, scale.shape) for x in (p, d // p)]
    pview = [x for p in scale.shape for x in (p, 1)]
    n = op.name
    x = w.node("Reshape", [w.node("Cast", [_data(w, data)], n + "_f", to=fdt), w.ints(n + "_view", view)], n + "_v")
    pshape = w.ints(n + "_pview", pview)
    if offset is not None:
        off = w.node("Cast", [_data(w, offset)], n + "_off_f", to=fdt)
        x = w.node("Sub", [x, w.node("Reshape", [off, pshape], n + "_off_v")], n + "_shifted")
    y = w.node("Mul", [x, w.node("Reshape", [w.value(scale), pshape], n + "_scale_v")], n + "_scaled")
    w.define(op.output, "Reshape", [y, w.ints(n + "_shape", data.shape)])


# ---- palettization -------------------------------------------------------------------

def lut_lookup(w, ids: str, shape, lut_shape, lut: str, vector_axis, hint: str) -> str:
    """The iOS18 per-block LUT lookup at run time: `ids` int64 indices of `shape` (the
    index grid) read `lut` [blocks..., k, vs]; the result has the output's shape (the
    vector axis, when vs > 1, grows vs times)."""
    blocks, k, vs = list(lut_shape[:-2]), lut_shape[-2], lut_shape[-1]
    r = len(shape)
    nblocks = int(np.prod(blocks, dtype=np.int64))
    n = hint
    if nblocks == 1:
        table = w.node("Reshape", [lut, w.ints(n + "_kv", [k, vs])], n + "_lut")
        got = w.node("Gather", [table, ids], n + "_g")  # shape + [vs]
    else:
        # block-major order, then one Gather into the [nblocks * k, vs] stack of tables
        inner = [d // p for d, p in zip(shape, blocks)]
        view = w.node("Reshape", [ids, w.ints(n + "_view", [x for p, b in zip(blocks, inner) for x in (p, b)])],
                      n + "_view")
        major = w.node("Transpose", [view], n + "_major", perm=list(range(0, 2 * r, 2)) + list(range(1, 2 * r, 2)))
        per_block = w.node("Reshape", [major, w.ints(n + "_pb", [nblocks, -1])], n + "_pb")
        base = w.const(n + "_base", (np.arange(nblocks, dtype=np.int64) * k).reshape(nblocks, 1))
        flat_ids = w.node("Add", [per_block, base], n + "_fid")
        table = w.node("Reshape", [lut, w.ints(n + "_nkv", [nblocks * k, vs])], n + "_lut")
        got = w.node("Gather", [table, flat_ids], n + "_g")  # [nblocks, per block, vs]
        grid = w.node("Reshape", [got, w.ints(n + "_grid", blocks + inner + [vs])], n + "_grid")
        back = [a for i in range(r) for a in (i, r + i)] + [2 * r]
        inter = w.node("Transpose", [grid], n + "_inter", perm=back)
        got = w.node("Reshape", [inter, w.ints(n + "_sv", list(shape) + [vs])], n + "_sv")
    out_shape = list(shape)
    if vs == 1:
        return w.node("Reshape", [got, w.ints(n + "_shape", out_shape)], n + "_dense")
    a = int(vector_axis) % r  # each index's vector lies along vector_axis, right after its slot
    out_shape[a] *= vs
    moved = w.node("Transpose", [got], n + "_vec", perm=list(range(a + 1)) + [r] + list(range(a + 1, r)))
    return w.node("Reshape", [moved, w.ints(n + "_shape", out_shape)], n + "_dense")


def _vector_axis(op):
    return None if op.vector_axis is None else int(op.vector_axis.val)


def lut_to_dense(op, w):
    idx = _need(w, op, op.indices, "indices")
    nbits = lookup_dtype(op.indices.dtype).bits
    lut = op.lut
    n = op.name
    if op.shape is not None:  # iOS16: one flat LUT
        flat = w.node("Gather", [w.value(lut), w.note(op.indices, unpacked(w, idx, nbits, n + "_idx"))], n + "_g")
        return w.define(op.output, "Reshape", [flat, w.ints(n + "_shape", op.shape.val)])
    ids = w.node("Reshape", [w.note(op.indices, unpacked(w, idx, nbits, n + "_idx")), w.ints(n + "_ishape", idx.shape)],
                 n + "_ids")
    dense = lut_lookup(w, ids, idx.shape, lut.shape, w.value(lut), _vector_axis(op), n)
    w.define(op.output, "Identity", [dense])


# ---- sparsity ---------------------------------------------------------------------

def sparse_to_dense(op, w):
    mask = _need(w, op, op.mask, "mask")
    w.note(op.mask, w.mask_bits(mask, op.name + "_mask"))
    dense = _scatter(w, w.value(op.nonzero_data), w.positions(mask, op.name + "_mask"), op.output.shape,
                     op.output.dtype, op.name)
    w.define(op.output, "Identity", [dense])


def _repeat_bits(w, bits: str, shape, axis: int, times: int, hint: str) -> str:
    """Flat bits of a mask of `shape` repeated `times` along axis (np.repeat), flat again."""
    a = axis % len(shape)
    grid = w.node("Reshape", [bits, w.ints(hint + "_grid", list(shape))], hint + "_grid")
    extra, attrs = axes_arg(w, hint + "_ax", [a + 1])
    col = w.node("Unsqueeze", [grid] + extra, hint + "_col", **attrs)
    wide = list(shape[:a + 1]) + [times] + list(shape[a + 1:])
    full = w.node("Expand", [col, w.ints(hint + "_wide", wide)], hint + "_wide")
    return w.node("Reshape", [full, w.ints(hint + "_flat", [-1])], hint + "_rep")


def _nonzero_of(w, dense: str, where: str, hint: str) -> str:
    """The values of a dense tensor at flat positions `where`."""
    flat = w.node("Reshape", [dense, w.ints(hint + "_all", [-1])], hint + "_flat")
    return w.node("Gather", [flat, where], hint + "_nzv")


def _scatter(w, values: str, where: str, shape, ir_dtype: str, hint: str) -> str:
    """zeros of `shape` with `values` written at flat positions `where`."""
    size = int(np.prod(shape, dtype=np.int64))
    zero = helper.make_tensor("value", elem_type(ir_dtype), [1], [0])
    zeros = w.node("ConstantOfShape", [w.ints(hint + "_n", [size])], hint + "_zeros", value=zero)
    lin = w.node("Reshape", [where, w.ints(hint + "_lin_shape", [-1, 1])], hint + "_lin")
    dense = w.node("ScatterND", [zeros, lin, values], hint + "_scat")
    return w.node("Reshape", [dense, w.ints(hint + "_shape", list(shape))], hint + "_sd")


def lut_to_sparse(op, w):
    """(mask, nonzero values) of a sparse palettized weight. Only the values are run-time
    nodes (the mask is static and reaches its readers as bits): the nonzero indices stay
    packed at nbits each, and each reads its block's LUT."""
    mask = _need(w, op, op.indices_mask, "indices_mask")
    idx = _need(w, op, op.indices_nonzero_data, "indices_nonzero_data")
    nbits = lookup_dtype(op.indices_nonzero_data.dtype).bits
    lut = op.lut
    n = op.name
    values_out = op.outputs[1]
    blocks, k, vs = lut.shape[:-2], lut.shape[-2], lut.shape[-1]
    axis = _vector_axis(op)
    ids = w.note(op.indices_nonzero_data, unpacked(w, idx, nbits, n + "_idx"))
    w.note(op.indices_mask, w.mask_bits(mask, n + "_imask"))
    if int(np.prod(blocks, dtype=np.int64)) == 1 and (vs == 1 or axis % mask.ndim == mask.ndim - 1):
        # one table and vectors along the last axis: the values are the lookups in order
        table = w.node("Reshape", [w.value(lut), w.ints(n + "_kv", [k, vs])], n + "_lut")
        got = w.node("Gather", [table, ids], n + "_g")
        return w.define(values_out, "Reshape", [got, w.ints(n + "_vals", [-1])])
    # general: scatter the indices to their grid, look up per block, keep the set positions
    dense_ids = _scatter(w, ids, w.positions(mask, n + "_imask"), mask.shape, "int64", n + "_ids")
    dense = lut_lookup(w, dense_ids, mask.shape, lut.shape, w.value(lut), axis, n)
    out_mask = w.static(op.outputs[0])
    if vs > 1:  # the output mask repeats each index bit vs times along the vector axis
        w.mask_bits(out_mask, n + "_omask", derive=lambda: _repeat_bits(w, w.mask_bits(mask, n + "_imask"),
                                                                         mask.shape, axis, vs, n + "_omask"))
    w.define(values_out, "Identity", [_nonzero_of(w, dense, w.positions(out_mask, n + "_omask"), n)])


def sparse_blockwise_shift_scale(op, w):
    """(mask, nonzero values): scale * (data - offset) per block, for the nonzero data only;
    the data stays in its integer type (int4 packed at opset 21)."""
    mask = _need(w, op, op.data_mask, "data_mask")
    scale = _need(w, op, op.scale, "scale")
    offset = w.static(op.offset) if op.offset is not None else None
    data = op.nonzero_data
    n = op.name
    values_out = op.outputs[1]
    w.note(op.data_mask, w.mask_bits(mask, n + "_mask"))
    if scale.size == 1 and (offset is None or offset.size == 1) and (op.offset is None or op.offset.dtype == data.dtype) \
            and data.type.dt.is_integer:
        zp = "" if offset is None else w.note(op.offset, w.initializer(w.fresh(n + "_zp"), offset.reshape(()),
                                                                       op.offset.dtype))
        s_name = w.note(op.scale, w.const(n + "_scale", scale.reshape(())))
        return dequantize_linear(w, values_out, _data(w, data), s_name, op.scale.dtype, zp)
    # per-block parameters: each nonzero value picks its block's scale (and offset) by position
    where = w.positions(mask, n + "_mask")
    fdt = elem_type(op.scale.dtype)
    x = w.node("Cast", [_data(w, data)], n + "_f", to=fdt)
    if op.offset is not None:
        off = w.node("Cast", [_data(w, op.offset)], n + "_off_f", to=fdt)
        x = w.node("Sub", [x, _per_element(w, off, op.offset.shape, mask.shape, where, n + "_off")], n + "_shifted")
    w.define(values_out, "Mul", [x, _per_element(w, w.value(op.scale), op.scale.shape, mask.shape, where, n + "_sc")])


def _per_element(w, param: str, param_shape, shape, where: str, hint: str) -> str:
    """A per-block parameter expanded to the data's shape (at run time), read at `where`."""
    view = [x for d, p in zip(shape, param_shape) for x in (p, d // p)]
    pview = [x for p in param_shape for x in (p, 1)]
    p = w.node("Reshape", [param, w.ints(hint + "_pview", pview)], hint + "_pv")
    full = w.node("Expand", [p, w.ints(hint + "_view", view)], hint + "_full")
    return _nonzero_of(w, full, where, hint)
