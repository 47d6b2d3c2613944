"""Quantization ops: QuantizeLinear / DequantizeLinear (per tensor, per axis,
per block; int4 / uint4 / int16 / uint16 / int32), DynamicQuantizeLinear,
QLinearMatMul, QLinearConv, ConvInteger (MatMulInteger is in linalg).

Quantization rounds x / scale half to even, adds the zero point and saturates
to the output type (the zero point's type, else output_dtype, else uint8).
Scales broadcast per tensor (one element), per axis (1-D along `axis`) or per
block (same rank as x, each element repeated block_size times along `axis`).
Requantization (QLinear*) multiplies the int32 accumulator by
a_scale * b_scale / y_scale in float32, as onnxruntime does."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import Unsupported, arg, is_float8, need, norm_axis, np_dtype
from ir.formats.onnx.kernels.conv import conv_core


def _int_range(dt: np.dtype) -> tuple:
    dt = np.dtype(dt)
    if dt.kind == "V" or dt.name in ("int4", "uint4"):
        return {"int4": (-8, 7), "uint4": (0, 15)}.get(dt.name) or _unsupported(dt)
    info = np.iinfo(dt)
    return info.min, info.max


def _unsupported(dt):
    raise Unsupported(f"quantization to {dt}")


def _broadcast_param(p, x_shape, axis_attr, block_size: int, what: str):
    """A scale / zero point shaped to broadcast against x."""
    p = np.asarray(p)
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    rank = len(x_shape)
    axis = norm_axis(axis_attr, rank)
    if block_size:
        if p.ndim != rank:
            raise ValueError(f"{what}: blocked quantization needs rank {rank}, got {p.shape}")
        rep = np.repeat(p, block_size, axis=axis)
        return np.take(rep, np.arange(x_shape[axis]), axis=axis)
    if p.ndim != 1 or p.shape[0] != x_shape[axis]:
        raise ValueError(f"{what}: per-axis parameter of shape {p.shape} does not match axis {axis} "
                         f"of {tuple(x_shape)}")
    shape = [1] * rank
    shape[axis] = -1
    return p.reshape(shape)


def quantize_values(x: np.ndarray, scale, zp, out_dtype) -> np.ndarray:
    lo, hi = _int_range(out_dtype)
    q = np.rint(x.astype(np.float32) / np.asarray(scale, np.float32))
    if zp is not None:
        q = q + np.asarray(zp).astype(np.float32)
    return np.clip(q, lo, hi).astype(out_dtype)


def quantize_linear(ins, attrs, node):
    x, scale, zp = need(ins, 0, "x"), need(ins, 1, "y_scale"), arg(ins, 2)
    if zp is not None:
        out_dt = np.asarray(zp).dtype
    elif int(attrs.get("output_dtype", 0)):
        out_dt = np_dtype(attrs["output_dtype"])
    else:
        out_dt = np.dtype(np.uint8)
    if is_float8(out_dt):
        raise Unsupported("float8 quantization")
    bs = int(attrs.get("block_size", 0))
    axis = attrs.get("axis", 1)
    s = _broadcast_param(scale, x.shape, axis, bs, "QuantizeLinear y_scale")
    z = None if zp is None else _broadcast_param(np.asarray(zp).astype(np.int64), x.shape, axis, bs,
                                                 "QuantizeLinear y_zero_point")
    return [quantize_values(x, s, z, out_dt)]


def dequantize_linear(ins, attrs, node):
    x, scale, zp = need(ins, 0, "x"), need(ins, 1, "x_scale"), arg(ins, 2)
    if is_float8(x.dtype):
        raise Unsupported("float8 dequantization")
    bs = int(attrs.get("block_size", 0))
    axis = attrs.get("axis", 1)
    out_dt = np_dtype(attrs["output_dtype"]) if int(attrs.get("output_dtype", 0)) else np.asarray(scale).dtype
    s = _broadcast_param(scale, x.shape, axis, bs, "DequantizeLinear x_scale")
    xi = np.asarray(x).astype(np.int64)
    if zp is not None:
        xi = xi - _broadcast_param(np.asarray(zp).astype(np.int64), x.shape, axis, bs,
                                   "DequantizeLinear x_zero_point")
    return [(xi.astype(np.float32) * np.asarray(s).astype(np.float32)).astype(out_dt)]


def dynamic_quantize_linear(ins, attrs, node):
    x = need(ins, 0, "x").astype(np.float32)
    lo = min(0.0, float(x.min())) if x.size else 0.0
    hi = max(0.0, float(x.max())) if x.size else 0.0
    scale = np.float32((hi - lo) / 255.0)
    if scale == 0:
        zp = np.uint8(0)
        return [np.zeros(x.shape, np.uint8), np.array(scale, np.float32), np.array(zp, np.uint8)]
    zp = np.uint8(np.clip(np.rint((0 - lo) / scale), 0, 255))
    y = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return [y, np.array(scale, np.float32), np.array(zp, np.uint8)]


def _rows(v, n_dims: int):
    """A per-row (M) parameter of A as [M, 1] for broadcasting; scalars unchanged."""
    v = np.asarray(v)
    return v.reshape(()) if v.size == 1 else v.reshape(-1, 1)


def qlinear_matmul(ins, attrs, node):
    names = ("a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point")
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (arg(ins, i) for i in range(len(names)))
    for i in (0, 1, 3, 4, 6):
        need(ins, i, names[i])
    aa = a.astype(np.int32) - (_rows(a_zp, a.ndim).astype(np.int32) if a_zp is not None else 0)
    bb = b.astype(np.int32) - (np.asarray(b_zp).astype(np.int32) if b_zp is not None else 0)
    acc = np.matmul(aa.astype(np.int64), bb.astype(np.int64))
    mult = (_rows(a_s, a.ndim).astype(np.float32) * np.asarray(b_s, np.float32)) / np.asarray(y_s, np.float32)
    out_dt = np.asarray(y_zp).dtype if y_zp is not None else a.dtype
    return [quantize_values(acc.astype(np.float32) * mult, np.float32(1), y_zp, out_dt)]


def _channel_zp(zp, ndim):
    z = np.asarray(zp).astype(np.int32)
    return z.reshape(()) if z.size == 1 else z.reshape((-1,) + (1,) * (ndim - 1))


def conv_integer(ins, attrs, node):
    x, w, x_zp, w_zp = need(ins, 0, "x"), need(ins, 1, "w"), arg(ins, 2), arg(ins, 3)
    xi = x.astype(np.int32) - (np.asarray(x_zp).astype(np.int32).reshape(()) if x_zp is not None else 0)
    wi = w.astype(np.int32) - (_channel_zp(w_zp, w.ndim) if w_zp is not None else 0)
    y = conv_core(xi.astype(np.int64), wi.astype(np.int64), attrs, int(attrs.get("group", 1)))
    return [y.astype(np.int32)]


def qlinear_conv(ins, attrs, node):
    names = ("x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "B")
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, bias = (arg(ins, i) for i in range(len(names)))
    for i in (0, 1, 3, 4, 6):
        need(ins, i, names[i])
    xi = x.astype(np.int32) - (np.asarray(x_zp).astype(np.int32).reshape(()) if x_zp is not None else 0)
    wi = w.astype(np.int32) - (_channel_zp(w_zp, w.ndim) if w_zp is not None else 0)
    acc = conv_core(xi.astype(np.int64), wi.astype(np.int64), attrs, int(attrs.get("group", 1)))
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64).reshape((-1,) + (1,) * (x.ndim - 2))
    ws = np.asarray(w_s, np.float32)
    ws = ws.reshape(()) if ws.size == 1 else ws.reshape((-1,) + (1,) * (x.ndim - 2))
    mult = (np.asarray(x_s, np.float32).reshape(()) * ws) / np.asarray(y_s, np.float32).reshape(())
    out_dt = np.asarray(y_zp).dtype if y_zp is not None else x.dtype
    return [quantize_values(acc.astype(np.float32) * mult, np.float32(1), y_zp, out_dt)]


KERNELS = {
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
    "DynamicQuantizeLinear": dynamic_quantize_linear, "QLinearMatMul": qlinear_matmul,
    "QLinearConv": qlinear_conv, "ConvInteger": conv_integer,
}
