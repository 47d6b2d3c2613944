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

from ir.formats.onnx.kernels._util import arg, need, norm_axes, work


def _transform(mode, x, scale, in_len, out_len, roi_lo, roi_hi):
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        center = in_len / 2
        return center * (1 - adjustment) + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        if out_len > 1:
            return roi_lo * (in_len - 1) + x * (roi_hi - roi_lo) * (in_len - 1) / (out_len - 1)
        return np.full_like(x, 0.5 * (roi_lo + roi_hi) * (in_len - 1))
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
            full_scales[a] = sizes[i] / x.shape[a]
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
        coords = _transform(ctm, np.arange(out_len, dtype=np.float64), scale, in_len, out_len, lo, hi)
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
    return [np.ascontiguousarray(y).astype(x.dtype)]


KERNELS = {"Resize": resize, "Upsample": resize}
