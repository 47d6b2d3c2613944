"""Layers: linear, matmul, conv, conv_transpose, pooling, normalisation,
softmax and reductions."""
from __future__ import annotations

import itertools

import numpy as np

from ir.ops.registry import In, OpError, op, tt, value
from ir.ops.shape_util import broadcast, norm_axis

# ---- linear / matmul ------------------------------------------------------


def _linear_infer(ins, attrs):
    x, w, b = ins["x"], ins["weight"], ins.get("bias")
    if w.rank != 2:
        raise OpError(f"linear: weight must be [out, in], got {w.shape}")
    if x.shape[-1] != w.shape[1] and not isinstance(x.shape[-1], str):
        raise OpError(f"linear: x has {x.shape[-1]} features but weight {w.shape} expects {w.shape[1]}")
    if x.dtype != w.dtype:
        raise OpError(f"linear: x is {x.dtype} but weight is {w.dtype}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise OpError(f"linear: bias {b.shape} must be ({w.shape[0]},)")
    return [tt(x.dtype, x.shape[:-1] + (w.shape[0],))]


@op("linear", [In("x"), In("weight"), In("bias", optional=True)], _linear_infer)
def _linear(v, ctx):
    """x @ weight.T + bias, weight [out, in]"""
    y = np.matmul(v["x"], v["weight"].T)
    return [y if v.get("bias") is None else y + v["bias"]]


def _mm_shapes(x, y, tx, ty):
    xs, ys = list(x), list(y)
    if tx and len(xs) > 1:
        xs[-2], xs[-1] = xs[-1], xs[-2]
    if ty and len(ys) > 1:
        ys[-2], ys[-1] = ys[-1], ys[-2]
    if len(xs) == 1:  # numpy: a vector on the left is a row, on the right a column
        xs = [1] + xs
    if len(ys) == 1:
        ys = ys + [1]
    return xs, ys


def _matmul_infer(ins, attrs):
    x, y = ins["x"], ins["y"]
    if x.rank == 0 or y.rank == 0:
        raise OpError(f"matmul: operands must have rank >= 1, got {x.shape} and {y.shape}")
    tx, ty = bool(value(ins, "transpose_x", False)), bool(value(ins, "transpose_y", False))
    xs, ys = _mm_shapes(x.shape, y.shape, tx, ty)
    if xs[-1] != ys[-2] and not isinstance(xs[-1], str) and not isinstance(ys[-2], str):
        raise OpError(f"matmul: inner dims differ: {x.shape} @ {y.shape}")
    if x.dtype != y.dtype:
        raise OpError(f"matmul: x is {x.dtype} but y is {y.dtype}")
    out = list(broadcast(tuple(xs[:-2]), tuple(ys[:-2]), "matmul: ")) + [xs[-2], ys[-1]]
    if x.rank == 1:
        out.pop(-2)
    if y.rank == 1:
        out.pop(-1)
    return [tt(x.dtype, out)]


@op("matmul", [In("x"), In("y"), In("transpose_x", optional=True, const=True),
               In("transpose_y", optional=True, const=True)], _matmul_infer)
def _matmul(v, ctx):
    """numpy matmul, optionally transposing the last two axes of x or y first"""
    x, y = v["x"], v["y"]
    if v.get("transpose_x") is not None and bool(v["transpose_x"]) and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if v.get("transpose_y") is not None and bool(v["transpose_y"]) and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    return [np.matmul(x, y)]


# ---- convolution ----------------------------------------------------------

def _acc_dtype(*arrays):
    """Accumulate in float64 (int64 for integer data): the oracle should not lose precision."""
    return np.float64 if np.result_type(*arrays).kind == "f" else np.int64


_CONV_INPUTS = [In("x"), In("weight"), In("bias", optional=True),
                In("strides", optional=True, const=True), In("pad_type", optional=True, const=True),
                In("pad", optional=True, const=True), In("dilations", optional=True, const=True),
                In("groups", optional=True, const=True)]


def _conv_params(get, nsp):
    strides = [int(s) for s in (get("strides") if get("strides") is not None else [1] * nsp)]
    dil = [int(s) for s in (get("dilations") if get("dilations") is not None else [1] * nsp)]
    pad_type = str(get("pad_type")) if get("pad_type") is not None else "valid"
    pad = [int(p) for p in (get("pad") if get("pad") is not None else [0] * 2 * nsp)]
    groups = int(get("groups")) if get("groups") is not None else 1
    return strides, dil, pad_type, pad, groups


def _check_conv_params(what, nsp, strides, dil, pad_type, pad, groups):
    for name, vals in (("strides", strides), ("dilations", dil)):
        if len(vals) != nsp or any(s < 1 for s in vals):
            raise OpError(f"{what}: {name} {vals} must be {nsp} positive integers")
    if pad_type not in ("valid", "same", "same_lower", "custom"):
        raise OpError(f"{what}: unknown pad_type {pad_type!r}")
    if pad_type == "custom" and (len(pad) != 2 * nsp or any(p < 0 for p in pad)):
        raise OpError(f"{what}: custom pad {pad} must be {2 * nsp} non-negative integers")
    if groups < 1:
        raise OpError(f"{what}: groups must be >= 1, got {groups}")


def _check_bias(what, ins, channels):
    b = ins.get("bias")
    if b is not None and tuple(b.shape) != (channels,):
        raise OpError(f"{what}: bias {b.shape} must be ({channels},)")


def _conv_pads(in_sp, k, strides, dil, pad_type, pad):
    """(begin, end) padding per spatial dim for conv."""
    if pad_type == "valid":
        return [(0, 0)] * len(in_sp)
    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(in_sp))]
    if pad_type in ("same", "same_lower"):
        out = []
        for n, kk, s, d in zip(in_sp, k, strides, dil):
            total = max((-(-n // s) - 1) * s + (kk - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise OpError(f"conv: unknown pad_type {pad_type!r}")


def conv_layout(spatial, kernel, strides, dilations, pad_type, pad) -> tuple:
    """(pads [(begin, end)] per spatial dim, output extent per spatial dim) of a conv or pool
    window over an input of concrete `spatial` dims (one rule for the conv and pool kernels and
    for stages/calibration/patches.py's unfolding)."""
    pads = _conv_pads(list(spatial), kernel, list(strides), list(dilations), pad_type, pad)
    out = [(n + b + e - ((k - 1) * d + 1)) // s + 1
           for n, (b, e), k, d, s in zip(spatial, pads, kernel, dilations, strides)]
    return pads, out


def _conv_infer(ins, attrs):
    x, w = ins["x"], ins["weight"]
    nsp = x.rank - 2
    get = lambda n: value(ins, n)  # noqa: E731
    if x.rank < 3 or w.rank != x.rank:
        raise OpError(f"conv: x {x.shape} must be [N, C, *spatial] and weight {w.shape} of the same rank")
    strides, dil, pad_type, pad, groups = _conv_params(get, nsp)
    _check_conv_params("conv", nsp, strides, dil, pad_type, pad, groups)
    if isinstance(w.shape[0], int) and w.shape[0] % groups:
        raise OpError(f"conv: {w.shape[0]} output channels are not divisible by groups={groups}")
    _check_bias("conv", ins, w.shape[0])
    if isinstance(x.shape[1], int) and x.shape[1] != w.shape[1] * groups:
        raise OpError(f"conv: x has {x.shape[1]} channels, weight {w.shape} with groups={groups} expects {w.shape[1] * groups}")
    if x.dtype != w.dtype:
        raise OpError(f"conv: x is {x.dtype} but weight is {w.dtype}")
    sp = []
    pads = _conv_pads(x.shape[2:], w.shape[2:], strides, dil, pad_type, pad) \
        if all(isinstance(d, int) for d in x.shape[2:]) else None
    for i in range(nsp):
        n = x.shape[2 + i]
        if isinstance(n, str):
            sp.append("?")
            continue
        span = (w.shape[2 + i] - 1) * dil[i] + 1
        if n + pads[i][0] + pads[i][1] < span:
            raise OpError(f"conv: kernel extent {span} exceeds padded input size {n + sum(pads[i])} on spatial axis {i}")
        sp.append((n + pads[i][0] + pads[i][1] - span) // strides[i] + 1)
    return [tt(x.dtype, (x.shape[0], w.shape[0], *sp))]


@op("conv", _CONV_INPUTS, _conv_infer)
def _conv(v, ctx):
    """N-d convolution: x [N, C_in, *S], weight [C_out, C_in/groups, *K]"""
    x, w = v["x"], v["weight"]
    nsp = x.ndim - 2
    strides, dil, pad_type, pad, groups = _conv_params(v.get, nsp)
    # the output extent from the actual input (the declared type may hold symbolic dims)
    pads, out_sp = conv_layout(x.shape[2:], w.shape[2:], strides, dil, pad_type, pad)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    n, cin = x.shape[:2]
    cout = w.shape[0]
    xg = xp.reshape(n, groups, cin // groups, *xp.shape[2:])
    wg = w.reshape(groups, cout // groups, *w.shape[1:])
    acc = np.zeros((n, groups, cout // groups, *out_sp), dtype=_acc_dtype(x, w))
    for kpos in itertools.product(*[range(k) for k in w.shape[2:]]):
        sl = tuple(slice(kp * d, kp * d + (o - 1) * s + 1, s)
                   for kp, d, s, o in zip(kpos, dil, strides, out_sp))
        patch = xg[(slice(None), slice(None), slice(None)) + sl]  # [n, g, cin/g, *out]
        acc += np.einsum("ngc...,goc->ngo...", patch, wg[(slice(None), slice(None), slice(None)) + kpos])
    y = acc.reshape(n, cout, *out_sp)
    if v.get("bias") is not None:
        y = y + v["bias"].reshape((cout,) + (1,) * nsp)
    return [y]


_CONVT_INPUTS = _CONV_INPUTS + [In("output_shape", optional=True, const=True)]


def _convt_geometry(in_sp, k, strides, dil, pad_type, pad, output_shape):
    full = [(n - 1) * s + (kk - 1) * d + 1 for n, kk, s, d in zip(in_sp, k, strides, dil)]
    if output_shape is not None:
        # ONNX ConvTranspose with output_shape: the larger half of the cropping at the
        # beginning; a target beyond the full extent grows at the end (output_padding).
        target = [int(o) for o in np.asarray(output_shape).reshape(-1)][-len(in_sp):]
        total = [f - t for f, t in zip(full, target)]
        return full, [((t - t // 2, t // 2) if t >= 0 else (0, t)) for t in total]
    if pad_type == "custom":
        return full, [(pad[2 * i], pad[2 * i + 1]) for i in range(len(in_sp))]
    if pad_type in ("same", "same_lower"):
        # output = input * stride; a stride larger than the kernel grows at the end
        total = [f - n * s for f, n, s in zip(full, in_sp, strides)]
        return full, [(0, t) if t < 0 else (t // 2, t - t // 2) if pad_type == "same"
                      else (t - t // 2, t // 2) for t in total]
    return full, [(0, 0)] * len(in_sp)


def _convt_infer(ins, attrs):
    x, w = ins["x"], ins["weight"]
    nsp = x.rank - 2
    get = lambda n: value(ins, n)  # noqa: E731
    if x.rank < 3 or w.rank != x.rank:
        raise OpError(f"conv_transpose: x {x.shape} must be [N, C, *spatial] and weight {w.shape} of the same rank")
    if x.dtype != w.dtype:
        raise OpError(f"conv_transpose: x is {x.dtype} but weight is {w.dtype}")
    strides, dil, pad_type, pad, groups = _conv_params(get, nsp)
    _check_conv_params("conv_transpose", nsp, strides, dil, pad_type, pad, groups)
    _check_bias("conv_transpose", ins, w.shape[1] * groups)
    if isinstance(w.shape[0], int) and w.shape[0] % groups:
        raise OpError(f"conv_transpose: {w.shape[0]} input channels are not divisible by groups={groups}")
    if isinstance(x.shape[1], int) and x.shape[1] != w.shape[0]:
        raise OpError(f"conv_transpose: x has {x.shape[1]} channels, weight {w.shape} expects {w.shape[0]}")
    if not all(isinstance(d, int) for d in x.shape[2:]):
        return [tt(x.dtype, (x.shape[0], w.shape[1] * groups) + ("?",) * nsp)]
    full, pads = _convt_geometry(x.shape[2:], w.shape[2:], strides, dil, pad_type, pad, get("output_shape"))
    sp = [f - b - e for f, (b, e) in zip(full, pads)]
    return [tt(x.dtype, (x.shape[0], w.shape[1] * groups, *sp))]


@op("conv_transpose", _CONVT_INPUTS, _convt_infer)
def _conv_transpose(v, ctx):
    """N-d transposed convolution: x [N, C_in, *S], weight [C_in, C_out/groups, *K]"""
    x, w = v["x"], v["weight"]
    nsp = x.ndim - 2
    strides, dil, pad_type, pad, groups = _conv_params(v.get, nsp)
    full, pads = _convt_geometry(x.shape[2:], w.shape[2:], strides, dil, pad_type, pad, v.get("output_shape"))
    n, cin = x.shape[:2]
    cog = w.shape[1]
    xg = x.reshape(n, groups, cin // groups, *x.shape[2:])
    wg = w.reshape(groups, cin // groups, cog, *w.shape[2:])
    acc = np.zeros((n, groups, cog, *full), dtype=_acc_dtype(x, w))
    for kpos in itertools.product(*[range(k) for k in w.shape[2:]]):
        sl = tuple(slice(kp * d, kp * d + (m - 1) * s + 1, s)
                   for kp, d, s, m in zip(kpos, dil, strides, x.shape[2:]))
        contrib = np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None),) * 3 + kpos])
        acc[(slice(None),) * 3 + sl] += contrib
    y = acc.reshape(n, groups * cog, *full)
    grow = [(0, 0), (0, 0)] + [(0, max(-e, 0)) for _, e in pads]  # negative end pad: zeros
    y = np.pad(y, grow)[(slice(None), slice(None)) + tuple(slice(b, f - e) for (b, e), f in zip(pads, full))]
    if v.get("bias") is not None:
        y = y + v["bias"].reshape((groups * cog,) + (1,) * nsp)
    return [y]


# ---- pooling --------------------------------------------------------------

_POOL_INPUTS = [In("x"), In("kernel_sizes", const=True), In("strides", optional=True, const=True),
                In("pad_type", optional=True, const=True), In("pad", optional=True, const=True),
                In("exclude_padding_from_average", optional=True, const=True)]


def _pool_infer(ins, attrs):
    x = ins["x"]
    k = [int(i) for i in value(ins, "kernel_sizes")]
    strides, dil, pad_type, pad, _ = _conv_params(lambda n: value(ins, n) if n != "dilations" else None, len(k))
    _, sp = conv_layout(x.shape[2:], k, strides, [1] * len(k), pad_type, pad)
    return [tt(x.dtype, x.shape[:2] + tuple(sp))]


def _pool(reduce):
    def kernel(v, ctx):
        x = v["x"]
        k = [int(i) for i in v["kernel_sizes"]]
        strides, _, pad_type, pad, _ = _conv_params(lambda n: v.get(n) if n != "dilations" else None, len(k))
        pads = _conv_pads(x.shape[2:], k, strides, [1] * len(k), pad_type, pad)
        fill = -np.inf if reduce == "max" else np.nan
        xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + pads, constant_values=fill)
        win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=tuple(range(2, x.ndim)))
        win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]
        axes = tuple(range(x.ndim, 2 * x.ndim - 2))
        if reduce == "max":
            return [win.max(axis=axes)]
        exclude = v.get("exclude_padding_from_average")  # MIL default: False
        if exclude is not None and bool(exclude):
            return [np.nanmean(win, axis=axes)]
        return [np.nansum(win, axis=axes) / float(np.prod(k))]
    return kernel


_POOLS = {"max_pool": "max", "avg_pool": "avg"}
for _name, _kind in _POOLS.items():
    op(_name, _POOL_INPUTS, _pool_infer)(_pool(_kind))


# ---- normalisation, softmax, reductions -------------------------------------

def _same(ins, attrs):
    return [ins["x"].type]


@op("softmax", [In("x"), In("axis", optional=True, const=True)], _same)
def _softmax(v, ctx):
    """exp(x - max) / sum along axis (default -1)"""
    axis = int(v["axis"]) if v.get("axis") is not None else -1
    x = v["x"].astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


@op("layer_norm", [In("x"), In("axes", optional=True, const=True), In("gamma", optional=True),
                   In("beta", optional=True), In("epsilon", optional=True, const=True)], _same)
def _layer_norm(v, ctx):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta over axes (default: last)"""
    x = v["x"].astype(np.float64)
    axes = tuple(int(a) for a in np.asarray(v["axes"]).reshape(-1)) if v.get("axes") is not None else (-1,)
    eps = float(v["epsilon"]) if v.get("epsilon") is not None else 1e-5
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if v.get("gamma") is not None:
        y = y * v["gamma"]
    if v.get("beta") is not None:
        y = y + v["beta"]
    return [y]


@op("batch_norm", [In("x"), In("mean"), In("variance"), In("gamma", optional=True),
                   In("beta", optional=True), In("epsilon", optional=True, const=True)], _same)
def _batch_norm(v, ctx):
    """per-channel (axis 1) (x - mean) / sqrt(variance + epsilon) * gamma + beta"""
    x = v["x"].astype(np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = float(v["epsilon"]) if v.get("epsilon") is not None else 1e-5
    y = (x - v["mean"].reshape(shape)) / np.sqrt(v["variance"].reshape(shape) + eps)
    if v.get("gamma") is not None:
        y = y * v["gamma"].reshape(shape)
    if v.get("beta") is not None:
        y = y + v["beta"].reshape(shape)
    return [y]


def _reduce_infer(ins, attrs):
    x = ins["x"]
    axes = value(ins, "axes")
    keep = bool(value(ins, "keep_dims", False))
    axes = set(range(x.rank)) if axes is None else {norm_axis(a, x.rank) for a in np.asarray(axes).reshape(-1)}
    shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
    return [tt(x.dtype, shape)]


_REDUCE = {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min,
           "reduce_prod": np.prod}
_REDUCE_INPUTS = [In("x"), In("axes", optional=True, const=True), In("keep_dims", optional=True, const=True)]


def _reduce(fn):
    def kernel(v, ctx):
        axes = v.get("axes")
        axes = None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))
        keep = bool(v["keep_dims"]) if v.get("keep_dims") is not None else False
        return [fn(v["x"], axis=axes, keepdims=keep)]
    return kernel


for _name, _fn in _REDUCE.items():
    op(_name, _REDUCE_INPUTS, _reduce_infer)(_reduce(_fn))


def _argmax_infer(ins, attrs):
    x = ins["x"]
    axis = norm_axis(value(ins, "axis", -1), x.rank, "reduce_argmax axis")
    keep = bool(value(ins, "keep_dims", False))
    shape = [1 if i == axis else d for i, d in enumerate(x.shape) if keep or i != axis]
    return [tt("int32", shape)]


@op("reduce_argmax", [In("x"), In("axis", optional=True, const=True), In("keep_dims", optional=True, const=True)],
    _argmax_infer)
def _reduce_argmax(v, ctx):
    """index of the first maximum along axis (default -1)"""
    axis = int(v["axis"]) if v.get("axis") is not None else -1
    keep = bool(v["keep_dims"]) if v.get("keep_dims") is not None else False
    return [np.argmax(v["x"], axis=axis, keepdims=keep)]


@op("instance_norm", [In("x"), In("gamma", optional=True), In("beta", optional=True),
                      In("epsilon", optional=True, const=True)], _same)
def _instance_norm(v, ctx):
    """per sample and channel: (x - mean) / sqrt(var + epsilon) over the spatial axes,
    then per-channel gamma and beta"""
    x = v["x"].astype(np.float64)
    axes = tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = float(v["epsilon"]) if v.get("epsilon") is not None else 1e-5
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    if v.get("gamma") is not None:
        y = y * v["gamma"].reshape(shape)
    if v.get("beta") is not None:
        y = y + v["beta"].reshape(shape)
    return [y]
