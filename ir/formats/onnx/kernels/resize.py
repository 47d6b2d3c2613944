"""Resize (opsets 10-19) and Upsample, one axis at a time.

For each resized axis the output coordinate x maps to an input coordinate by
coordinate_transformation_mode (scale = the given scale, or out/in when sizes
are given):

    half_pixel            (x + 0.5) / scale - 0.5
    half_pixel_symmetric  as half_pixel, shifted so the output is centred
    pytorch_half_pixel    as half_pixel, but 0 when the output length is 1
    align_corners         x * (in - 1) / (out - 1), 0 when out is 1
    asymmetric            x / scale
    tf_half_pixel_for_nn  (x + 0.5) / scale
    tf_crop_and_resize    from the roi; points outside the input take extrapolation_value

nearest rounds that coordinate by nearest_mode and clamps it to the input;
linear and cubic weigh 2 / 4 neighbours (cubic: Keys' kernel with
cubic_coeff_a, exclude_outside renormalizes without out-of-range taps; edge
values repeat otherwise). antialias (18+) widens linear / cubic filters by
1/scale when downscaling. Before opset 11 the mode is asymmetric and nearest
rounds down, as Upsample does. Separable modes are applied as one weight
matrix per axis.
"""
from __future__ import annotations

import math

import numpy as np

from ir.formats.onnx.kernels._util import Unsupported, arg, need, norm_axes, work


def _transform(mode, x, scale, in_len, out_len, roi_lo, roi_hi):
    """Input coordinates of output positions x, in float32 as onnxruntime computes them
    (float64 rounds many more .5 cases of nearest the other way; a coordinate within a
    float32 ulp of a rounding boundary may still round differently from onnxruntime)."""
    f = np.float32
    x, scale, in_len, out_len = x.astype(f), f(scale), f(in_len), f(out_len)
    roi_lo, roi_hi = f(roi_lo), f(roi_hi)
    half, one = f(0.5), f(1)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        center = in_len / f(2)
        return center * (one - adjustment) + (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if out_len > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_len - one) / (out_len - one) if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "tf_crop_and_resize":
        if out_len > 1:
            return roi_lo * (in_len - one) + x * (roi_hi - roi_lo) * (in_len - one) / (out_len - one)
        return np.full_like(x, half * (roi_lo + roi_hi) * (in_len - one))
    raise ValueError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _round_nearest(c, mode):
    if mode == "round_prefer_floor":
        return np.where(c - np.floor(c) == 0.5, np.floor(c), np.round(c))
    if mode == "round_prefer_ceil":
        return np.where(c - np.floor(c) == 0.5, np.ceil(c), np.round(c))
    if mode == "floor":
        return np.floor(c)
    if mode == "ceil":
        return np.ceil(c)
    raise ValueError(f"Resize: unknown nearest_mode {mode!r}")


def _cubic(t, a):
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _linear(t, a):
    return np.maximum(0.0, 1 - np.abs(t))


def _weights(mode, coords, in_len, scale, attrs, antialias):
    """[out, in] interpolation matrix for linear / cubic. Taps past the input repeat the
    edge value, unless exclude_outside drops them and renormalizes; a widened
    (antialias) filter is normalized to sum 1."""
    kernel, support = (_linear, 1) if mode == "linear" else (_cubic, 2)
    a = float(attrs.get("cubic_coeff_a", -0.75))
    exclude = int(attrs.get("exclude_outside", 0))
    widen = 1.0 / scale if antialias and scale < 1 else 1.0
    radius = support * widen
    lo = np.floor(coords - radius).astype(np.int64) + 1
    taps = int(math.ceil(2 * radius)) + 1
    js = lo[:, None] + np.arange(taps)[None, :]  # candidate input positions per output
    w = kernel((js - coords[:, None]) / widen, a)
    if exclude:
        w = np.where((js >= 0) & (js < in_len), w, 0.0)
    if exclude or widen != 1.0:
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1, total)
    mat = np.zeros((coords.shape[0], in_len))
    rows = np.repeat(np.arange(coords.shape[0]), taps)
    np.add.at(mat, (rows, np.clip(js, 0, in_len - 1).reshape(-1)), w.reshape(-1))
    return mat


def _params(ins, attrs, node, x):
    """(scales, sizes, roi) per axis of x, after axes and keep_aspect_ratio_policy."""
    if node.op_type == "Upsample" and node.opset < 9:  # Upsample-7: scales attribute
        return [float(s) for s in attrs["scales"]], None, None
    if node.opset == 10 or node.op_type == "Upsample":
        return [float(s) for s in np.asarray(need(ins, 1, "scales")).reshape(-1)], None, None
    roi, scales, sizes = arg(ins, 1), arg(ins, 2), arg(ins, 3)
    r = x.ndim
    axes = attrs.get("axes")
    axes = list(range(r)) if axes is None else list(norm_axes(axes, r))
    roi = None if roi is None or np.size(roi) == 0 else np.asarray(roi, np.float64).reshape(-1)
    scales = None if scales is None or np.size(scales) == 0 else np.asarray(scales, np.float64).reshape(-1)
    sizes = None if sizes is None or np.size(sizes) == 0 else np.asarray(sizes, np.int64).reshape(-1)
    if (scales is None) == (sizes is None):
        raise ValueError("Resize: exactly one of scales and sizes must be given")
    full_scales = [1.0] * r
    full_sizes = None
    full_roi = None
    if roi is not None:
        n = len(axes)
        full_roi = [0.0] * r + [1.0] * r
        for i, a in enumerate(axes):
            full_roi[a], full_roi[r + a] = roi[i], roi[n + i]
    if scales is not None:
        for i, a in enumerate(axes):
            full_scales[a] = float(scales[i])
        return full_scales, None, full_roi
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    full_sizes = list(x.shape)
    if policy == "stretch":
        for i, a in enumerate(axes):
            full_sizes[a] = int(sizes[i])
            full_scales[a] = float(np.float32(sizes[i]) / np.float32(x.shape[a]))
    else:
        ratios = [sizes[i] / x.shape[a] for i, a in enumerate(axes)]
        s = min(ratios) if policy == "not_larger" else max(ratios)
        if policy not in ("not_larger", "not_smaller"):
            raise ValueError(f"Resize: unknown keep_aspect_ratio_policy {policy!r}")
        for a in axes:
            full_scales[a] = s
            full_sizes[a] = int(math.floor(s * x.shape[a] + 0.5))  # round half up, as onnxruntime
    return full_scales, full_sizes, full_roi


def resize(ins, attrs, node):
    x = need(ins, 0, "X")
    scales, sizes, roi = _params(ins, attrs, node, x)
    if len(scales) != x.ndim:
        raise ValueError(f"Resize: {len(scales)} scales for an input of rank {x.ndim}")
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"Resize: unknown mode {mode!r}")
    legacy = node.opset < 11 or node.op_type == "Upsample"
    ctm = "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = "floor" if legacy else attrs.get("nearest_mode", "round_prefer_floor")
    antialias = int(attrs.get("antialias", 0))
    extrap = float(attrs.get("extrapolation_value", 0.0))
    y = work(x) if mode != "nearest" else x
    if mode != "nearest" and not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    outside = np.zeros((), bool)
    for ax in range(x.ndim):
        in_len = x.shape[ax]
        scale = scales[ax]
        if sizes is not None:
            out_len = sizes[ax]
        elif ctm == "tf_crop_and_resize" and roi is not None:
            out_len = int(math.floor(in_len * (roi[x.ndim + ax] - roi[ax]) * scale))
        else:
            out_len = int(math.floor(in_len * scale))
        if out_len == in_len and scale == 1.0 and ctm != "tf_crop_and_resize":
            continue
        if scale <= 0:
            raise ValueError(f"Resize: scale {scale} on axis {ax} must be positive")
        lo, hi = (roi[ax], roi[x.ndim + ax]) if roi is not None else (0.0, 1.0)
        coords = _transform(ctm, np.arange(out_len), scale, in_len, out_len, lo, hi).astype(np.float64)
        if ctm == "tf_crop_and_resize":
            out_ax = (coords < 0) | (coords > in_len - 1)
            shape = [1] * x.ndim
            shape[ax] = out_len
            outside = outside | out_ax.reshape(shape)
        if mode == "nearest":
            idx = np.clip(_round_nearest(coords, nearest_mode), 0, in_len - 1).astype(np.int64)
            y = np.take(y, idx, axis=ax)
        else:
            mat = _weights(mode, coords, in_len, scale, attrs, antialias).astype(y.dtype)
            y = np.moveaxis(np.tensordot(y, mat, axes=([ax], [1])), -1, ax)
    if outside.any():
        y = np.where(outside, np.asarray(extrap, y.dtype), y)
    if mode != "nearest" and x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return [np.asarray(y).astype(x.dtype, order="C")]


# ---- GridSample ----------------------------------------------------------------------
# X [N, C, H, W] sampled at grid [N, Ho, Wo, 2] of (x, y) in [-1, 1]: align_corners maps
# -1 / 1 to the centres of the corner pixels, otherwise to their outer edges. Taps
# outside the input read 0 (padding_mode zeros), the nearest edge (border), or the
# coordinate reflected at the edges (reflection); bicubic applies the padding to each
# of its 16 taps instead of the coordinate, as onnxruntime does. nearest rounds half
# to even.

_GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}


def _unnormalize(g, n, align):
    return (g + 1) / 2 * (n - 1) if align else ((g + 1) * n - 1) / 2


def _reflect(c, lo, hi):
    span = hi - lo
    if span <= 0:
        return np.zeros_like(c)
    d = np.abs(c - lo)
    flips, extra = np.floor(d / span), np.mod(d, span)
    return np.where(flips % 2 == 0, lo + extra, hi - extra)


def _pad_coord(c, n, mode, align):
    if mode == "border":
        return np.clip(c, 0, n - 1)
    if mode == "reflection":
        lo, hi = (0.0, n - 1.0) if align else (-0.5, n - 0.5)
        return np.clip(_reflect(c, lo, hi), 0, n - 1)
    return c


def _tap(x, yi, xi, mode, align=False):
    """Values of x [N, C, H, W] at integer taps yi, xi [N, Ho, Wo] -> [N, C, Ho, Wo]; taps
    outside read 0 (zeros), the edge (border) or the reflected tap (reflection)."""
    n_, c_, h, w = x.shape
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    if mode == "border":
        yi, xi = np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)
    elif mode == "reflection":
        yi, xi = _reflect_tap(yi, h, align), _reflect_tap(xi, w, align)
    ys, xs = np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)
    b = np.arange(n_)[:, None, None]
    vals = x[b, :, ys, xs]  # [N, Ho, Wo, C]
    if mode == "zeros":
        vals = np.where(inside[..., None], vals, 0)
    return np.moveaxis(vals, -1, 1)


def _reflect_tap(i, n, align):
    lo, hi = (0.0, n - 1.0) if align else (-0.5, n - 0.5)
    return np.clip(np.rint(_reflect(i.astype(np.float64), lo, hi)), 0, n - 1).astype(np.int64)


def grid_sample(ins, attrs, node):
    x, grid = need(ins, 0, "X"), need(ins, 1, "grid")
    if x.ndim != 4:
        raise Unsupported("GridSample over more than 2 spatial dims")
    mode = _GRID_MODES.get(attrs.get("mode", "bilinear" if node.opset < 20 else "linear"))
    if mode is None:
        raise ValueError(f"GridSample: unknown mode {attrs.get('mode')!r}")
    pad = attrs.get("padding_mode", "zeros")
    if pad not in ("zeros", "border", "reflection"):
        raise ValueError(f"GridSample: unknown padding_mode {pad!r}")
    align = bool(int(attrs.get("align_corners", 0)))
    h, w = x.shape[2:]
    g = np.asarray(grid, np.float64)
    cx, cy = _unnormalize(g[..., 0], w, align), _unnormalize(g[..., 1], h, align)
    if mode != "cubic":  # nearest / linear pad the coordinate; cubic pads each of its 16 taps
        cx, cy = _pad_coord(cx, w, pad, align), _pad_coord(cy, h, pad, align)
    wx = work(x).astype(np.float64)
    tap_mode = "zeros" if pad == "zeros" else "border"  # padded coordinates only reach the edge
    if mode == "nearest":
        y = _tap(wx, np.rint(cy).astype(np.int64), np.rint(cx).astype(np.int64), tap_mode)
    elif mode == "linear":
        x0, y0 = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
        fx, fy = (cx - x0)[:, None], (cy - y0)[:, None]
        y = ((1 - fy) * ((1 - fx) * _tap(wx, y0, x0, tap_mode) + fx * _tap(wx, y0, x0 + 1, tap_mode))
             + fy * ((1 - fx) * _tap(wx, y0 + 1, x0, tap_mode) + fx * _tap(wx, y0 + 1, x0 + 1, tap_mode)))
    else:  # cubic: 4 x 4 taps; out-of-range taps follow the padding mode
        tap_mode = pad
        x0, y0 = np.floor(cx).astype(np.int64) - 1, np.floor(cy).astype(np.int64) - 1
        kx = [_cubic(cx - (x0 + i), -0.75)[:, None] for i in range(4)]
        ky = [_cubic(cy - (y0 + j), -0.75)[:, None] for j in range(4)]
        y = sum(ky[j] * sum(kx[i] * _tap(wx, y0 + j, x0 + i, tap_mode, align) for i in range(4)) for j in range(4))
    return [np.asarray(y).astype(x.dtype)]


KERNELS = {"Resize": resize, "Upsample": resize, "GridSample": grid_sample}
