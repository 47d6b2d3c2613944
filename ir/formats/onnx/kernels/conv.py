"""Convolution and pooling over N spatial dims: Conv, ConvTranspose,
MaxPool (with Indices), AveragePool, LpPool, the Global pools, MaxUnpool.

Output sizes: explicit pads give floor((in + pads - dk) / s) + 1 with
dk = (k - 1) * d + 1; ceil_mode rounds up instead, but a window may not start
past the input plus its leading pad (the last one is dropped then, as
onnxruntime and PyTorch do). auto_pad SAME_UPPER / SAME_LOWER give ceil(in / s)
with the odd pad at the end / the start; VALID pads nothing.

AveragePool divides by the window's elements inside the input
(count_include_pad=0) or inside input plus explicit pads (=1); a ceil-mode
overhang past the pads never counts. MaxPool's Indices are flat positions in
the unpadded input, row-major (storage_order=0) or column-major over the
spatial dims (=1), batch and channel offsets included.

Windows are strided numpy views; a convolution is one matrix product per
group over the gathered windows (im2col)."""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ir.formats.onnx.kernels._util import arg, need, prod, work


def _spatial_attrs(attrs, nsp: int):
    strides = list(attrs.get("strides", (1,) * nsp)) or [1] * nsp
    dil = list(attrs.get("dilations", (1,) * nsp)) or [1] * nsp
    return [int(s) for s in strides], [int(d) for d in dil]


def plan(in_shape, kernel, strides, dil, attrs, ceil_mode=False, pool=False):
    """(pads_begin, pads_end, out_shape) of a conv / pool over spatial `in_shape`.

    Pools with SAME padding follow onnxruntime: the pad is sized for the undilated
    kernel and the output counted with the dilated one (so dilated SAME pools come out
    smaller than ceil(in / s)); convolutions size it for the dilated kernel."""
    nsp = len(in_shape)
    auto = attrs.get("auto_pad", "NOTSET")
    dk = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    begin, end, out = [0] * nsp, [0] * nsp, [0] * nsp
    for i in range(nsp):
        n, s = in_shape[i], strides[i]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
            total = max((o - 1) * s + (kernel[i] if pool else dk[i]) - n, 0)
            small = total // 2
            pb, pe = (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
            if not pool:
                begin[i], end[i], out[i] = pb, pe, o
                continue
        elif auto == "VALID":
            pb = pe = 0
        elif auto == "NOTSET":
            pads = list(attrs.get("pads", (0,) * (2 * nsp))) or [0] * (2 * nsp)
            pb, pe = int(pads[i]), int(pads[nsp + i])
        else:
            raise ValueError(f"auto_pad {auto!r} is not NOTSET, SAME_UPPER, SAME_LOWER or VALID")
        span = n + pb + pe - dk[i]
        if span < 0 and not pool:
            raise ValueError(f"kernel extent {dk[i]} exceeds padded input {n + pb + pe} on spatial axis {i}")
        # C division (toward zero), as onnxruntime counts: a pool whose dilated window
        # overhangs a short input by less than a stride still gives one output
        if span >= 0:
            o = (-(-span // s) if ceil_mode else span // s) + 1
        else:
            o = -((-span) // s) + 1  # toward zero, which is also the ceiling here
        if ceil_mode and (o - 1) * s >= n + pb:
            o -= 1  # the last window would start in the trailing pad only
        begin[i], end[i], out[i] = pb, pe, max(o, 0)
    return begin, end, out


def _windows(x, begin, out, kernel, strides, dil, fill):
    """[N, C, *out, *kernel] view of x padded with `fill` (extra fill for a ceil-mode overhang)."""
    nsp = len(kernel)
    if any(o <= 0 for o in out):
        return np.zeros(x.shape[:2] + tuple(max(o, 0) for o in out) + tuple(kernel), x.dtype)
    dk = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    need_len = [(o - 1) * s + e for o, s, e in zip(out, strides, dk)]
    pads = [(0, 0), (0, 0)]
    crop = [slice(None), slice(None)]
    for i in range(nsp):
        n = x.shape[2 + i]
        b = begin[i]
        tail = need_len[i] - (n + b)  # what must follow the input (pad or overhang); may be negative
        pads.append((max(b, 0), max(tail, 0)))
        crop.append(slice(max(-b, 0), n + min(tail, 0) if tail < 0 else None))
    xp = np.pad(x[tuple(crop)], pads, mode="constant", constant_values=fill)
    v = sliding_window_view(xp, dk, axis=tuple(range(2, 2 + nsp)))
    sel = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides)) \
        + tuple(slice(None, None, d) for d in dil)
    return v[sel]


def conv_core(x, w, attrs, group: int, acc_dtype=None):
    """The convolution of x [N, C, *sp] with w [M, C/group, *k]: [N, M, *out], bias-free."""
    nsp = x.ndim - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:])) or list(w.shape[2:])
    strides, dil = _spatial_attrs(attrs, nsp)
    begin, end, out = plan(x.shape[2:], kernel, strides, dil, attrs)
    n, c = x.shape[:2]
    m = w.shape[0]
    if c != w.shape[1] * group or m % group:
        raise ValueError(f"Conv: input has {c} channels, weight {w.shape} with group {group}")
    win = _windows(x, begin, out, kernel, strides, dil, 0)  # [N, C, *out, *k]
    cg, mg, nk, no = c // group, m // group, prod(kernel), prod(out)
    win = win.reshape((n, group, cg) + tuple(out) + tuple(kernel))
    # -> [G, N * out, Cg * k]: one matrix product per group
    order = (1, 0) + tuple(range(3, 3 + nsp)) + (2,) + tuple(range(3 + nsp, 3 + 2 * nsp))
    cols = np.asarray(win.transpose(order)).reshape(group, n * no, cg * nk, order="C")
    wg = w.reshape(group, mg, cg * nk).transpose(0, 2, 1)
    if acc_dtype is not None:
        cols, wg = cols.astype(acc_dtype), wg.astype(acc_dtype)
    y = np.matmul(cols, wg)  # [G, N * out, Mg]
    y = y.reshape((group, n) + tuple(out) + (mg,))
    y = y.transpose((1, 0, nsp + 2) + tuple(range(2, 2 + nsp))).reshape((n, m) + tuple(out))
    return y


def conv(ins, attrs, node):
    x, w, b = need(ins, 0, "X"), need(ins, 1, "W"), arg(ins, 2)
    y = conv_core(work(x), work(w), attrs, int(attrs.get("group", 1)))
    if b is not None:
        y = y + work(b).reshape((-1,) + (1,) * (x.ndim - 2))
    return [y.astype(x.dtype)]


def conv_transpose(ins, attrs, node):
    x, w, b = need(ins, 0, "X"), need(ins, 1, "W"), arg(ins, 2)
    g = int(attrs.get("group", 1))
    nsp = x.ndim - 2
    n, c = x.shape[:2]
    if c != w.shape[0] or c % g:
        raise ValueError(f"ConvTranspose: input has {c} channels, weight {w.shape} with group {g}")
    mg = w.shape[1]
    kernel = [int(k) for k in (attrs.get("kernel_shape") or w.shape[2:])]
    strides, dil = _spatial_attrs(attrs, nsp)
    opad = [int(p) for p in (attrs.get("output_padding") or (0,) * nsp)]
    ins_sp = x.shape[2:]
    dk = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    full = [(i - 1) * s + e for i, s, e in zip(ins_sp, strides, dk)]
    auto = attrs.get("auto_pad", "NOTSET")
    out_shape = attrs.get("output_shape")
    if out_shape is not None and len(out_shape) > nsp:
        out_shape = out_shape[-nsp:]
    begin = [0] * nsp
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = [int(o) for o in out_shape] if out_shape is not None else [i * s for i, s in zip(ins_sp, strides)]
        for i in range(nsp):
            total = full[i] + opad[i] - target[i]
            if out_shape is None:  # SAME never pads negatively: a short full output stays short
                total = max(total, 0)
                target[i] = full[i] + opad[i] - total
            # onnxruntime: SAME_UPPER puts the odd pad at the end, otherwise at the start
            begin[i] = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out = target
    elif auto in ("NOTSET", "VALID"):
        pads = [0] * (2 * nsp) if auto == "VALID" else [int(p) for p in (attrs.get("pads") or (0,) * (2 * nsp))]
        begin = pads[:nsp]
        out = [f + op - pads[i] - pads[nsp + i] for i, (f, op) in enumerate(zip(full, opad))]
    else:
        raise ValueError(f"auto_pad {auto!r} is not NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    wx, ww = work(x), work(w)
    y_full = np.zeros((n, g, mg) + tuple(full), dtype=np.result_type(wx.dtype, ww.dtype))
    xg = wx.reshape((n, g, c // g) + tuple(ins_sp))
    wg = ww.reshape((g, c // g, mg) + tuple(kernel))
    for k in np.ndindex(*kernel):
        # every input position i lands at i * s + k * d
        contrib = np.einsum("ngc...,gcm->ngm...", xg, wg[(slice(None),) * 3 + k])
        sl = tuple(slice(kk * d, kk * d + (i - 1) * s + 1, s) for kk, d, s, i in zip(k, dil, strides, ins_sp))
        y_full[(slice(None),) * 3 + sl] += contrib
    y_full = y_full.reshape((n, g * mg) + tuple(full))
    # crop / zero-extend to the output window [begin, begin + out)
    y = np.zeros((n, g * mg) + tuple(out), dtype=y_full.dtype)
    src, dst = [slice(None)] * 2, [slice(None)] * 2
    for i in range(nsp):
        lo, hi = begin[i], begin[i] + out[i]
        s_lo, s_hi = max(lo, 0), min(hi, full[i])
        src.append(slice(s_lo, max(s_hi, s_lo)))
        dst.append(slice(s_lo - lo, s_lo - lo + max(s_hi - s_lo, 0)))
    y[tuple(dst)] = y_full[tuple(src)]
    if b is not None:
        y = y + work(b).reshape((-1,) + (1,) * nsp)
    return [y.astype(x.dtype)]


# ---- pooling ---------------------------------------------------------------------

def _pool_setup(x, attrs):
    nsp = x.ndim - 2
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides, dil = _spatial_attrs(attrs, nsp)
    ceil_mode = bool(int(attrs.get("ceil_mode", 0)))
    begin, end, out = plan(x.shape[2:], kernel, strides, dil, attrs, ceil_mode, pool=True)
    return nsp, kernel, strides, dil, begin, end, out


def _flat(win, nsp):
    """[N, C, *out, *kernel] -> [N, C, *out, prod(kernel)] (also when out is empty)."""
    return win.reshape(win.shape[:2 + nsp] + (prod(win.shape[2 + nsp:]),))


def _lowest(dt):
    return -np.inf if dt.kind == "f" else np.iinfo(dt).min


def max_pool(ins, attrs, node):
    x = need(ins, 0, "X")
    nsp, kernel, strides, dil, begin, end, out = _pool_setup(x, attrs)
    wx = work(x)
    win = _windows(wx, begin, out, kernel, strides, dil, _lowest(wx.dtype))
    flat = _flat(win, nsp)
    y = flat.max(axis=-1) if flat.shape[-1] else np.full(flat.shape[:-1], _lowest(wx.dtype))
    res = [y.astype(x.dtype)]
    if node.n_out > 1:
        res.append(_max_indices(x.shape, flat, kernel, strides, dil, begin, out, int(attrs.get("storage_order", 0))))
    return res


def _max_indices(shape, flat, kernel, strides, dil, begin, out, storage_order):
    nsp = len(kernel)
    arg = np.argmax(flat, axis=-1)  # the first maximum of each window
    koff = np.unravel_index(arg, kernel)
    n, c = shape[:2]
    sp = shape[2:]
    grids = np.meshgrid(*[np.arange(o) for o in out], indexing="ij")
    coords = [grids[i] * strides[i] + koff[i] * dil[i] - begin[i] for i in range(nsp)]
    if storage_order:  # column-major over the spatial dims
        lin, mult = 0, 1
        for i in range(nsp):
            lin = lin + coords[i] * mult
            mult *= sp[i]
    else:
        lin = 0
        for i in range(nsp):
            lin = lin * sp[i] + coords[i]
    base = (np.arange(n).reshape((n, 1) + (1,) * nsp) * c + np.arange(c).reshape((1, c) + (1,) * nsp)) * prod(sp)
    return (base + lin).astype(np.int64)


def average_pool(ins, attrs, node):
    x = need(ins, 0, "X")
    nsp, kernel, strides, dil, begin, end, out = _pool_setup(x, attrs)
    wx = work(x)
    win = _windows(wx, begin, out, kernel, strides, dil, 0)
    total = _flat(win, nsp).sum(axis=-1)
    if int(attrs.get("count_include_pad", 0)):
        # input plus explicit pads counts; a ceil-mode overhang does not
        ones = np.ones((1, 1) + tuple(n + b + e for n, b, e in zip(x.shape[2:], begin, end)), wx.dtype)
        cnt_win = _windows(ones, [0] * nsp, out, kernel, strides, dil, 0)
    else:
        ones = np.ones((1, 1) + x.shape[2:], wx.dtype)
        cnt_win = _windows(ones, begin, out, kernel, strides, dil, 0)
    count = _flat(cnt_win, nsp).sum(axis=-1)
    return [(total / np.maximum(count, 1)).astype(x.dtype)]


def lp_pool(ins, attrs, node):
    x = need(ins, 0, "X")
    nsp, kernel, strides, dil, begin, end, out = _pool_setup(x, attrs)
    p = float(attrs.get("p", 2))
    wx = work(x)
    win = _windows(np.abs(wx) ** p, begin, out, kernel, strides, dil, 0)
    s = _flat(win, nsp).sum(axis=-1)
    return [(s ** (1.0 / p)).astype(x.dtype)]


def _global(fn):
    def kernel(ins, attrs, node):
        x = need(ins, 0, "X")
        axes = tuple(range(2, x.ndim))
        return [np.asarray(fn(work(x), axes, attrs)).astype(x.dtype)]
    return kernel


def _global_lp(x, axes, attrs):
    p = float(attrs.get("p", 2))
    return np.sum(np.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p)


def max_unpool(ins, attrs, node):
    x, idx, shape = need(ins, 0, "X"), need(ins, 1, "I"), arg(ins, 2)
    nsp = x.ndim - 2
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides, _ = _spatial_attrs(attrs, nsp)
    pads = [int(p) for p in (attrs.get("pads") or (0,) * (2 * nsp))]
    if shape is not None:
        out = [int(v) for v in np.asarray(shape).reshape(-1)]
    else:
        sp = [(i - 1) * s + k - pads[j] - pads[nsp + j]
              for j, (i, s, k) in enumerate(zip(x.shape[2:], strides, kernel))]
        out = list(x.shape[:2]) + sp
    y = np.zeros(math.prod(out), dtype=x.dtype)
    y[np.asarray(idx, np.int64).reshape(-1)] = x.reshape(-1)
    return [y.reshape(out)]


KERNELS = {
    "Conv": conv, "ConvTranspose": conv_transpose,
    "MaxPool": max_pool, "AveragePool": average_pool, "LpPool": lp_pool,
    "GlobalAveragePool": _global(lambda x, a, at: np.mean(x, axis=a, keepdims=True)),
    "GlobalMaxPool": _global(lambda x, a, at: np.max(x, axis=a, keepdims=True)),
    "GlobalLpPool": _global(_global_lp),
    "MaxUnpool": max_unpool,
}
