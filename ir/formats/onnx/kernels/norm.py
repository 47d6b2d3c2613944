"""Normalizations. Statistics are computed in float32 (float64 for float64
inputs: the stash type), results rounded to the input's dtype.

LayerNormalization returns its three outputs (Y, Mean, InvStdDev; the last
two shaped like X with the normalized axes kept as 1). GroupNormalization's
scale and bias are per group at opset 18 and per channel from 21.
BatchNormalization in training mode (opset 14+) normalizes with the batch's
statistics and returns the updated running mean and variance."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, need, norm_axes, norm_axis


def _stash(x: np.ndarray, attrs=None) -> np.ndarray:
    if x.dtype == np.float64:
        return x
    return x.astype(np.float32)


def _channel(v, ndim: int) -> np.ndarray:
    """A per-channel vector [C] shaped to broadcast over [N, C, ...]."""
    return np.asarray(v).reshape((-1,) + (1,) * (ndim - 2))


def layer_norm(ins, attrs, node):
    x, scale, bias = need(ins, 0, "X"), need(ins, 1, "Scale"), arg(ins, 2)
    axis = norm_axis(attrs.get("axis", -1), x.ndim)
    eps = float(attrs.get("epsilon", 1e-5))
    axes = tuple(range(axis, x.ndim))
    w = _stash(x)
    mean = np.mean(w, axis=axes, keepdims=True)
    var = np.mean(np.square(w - mean), axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + eps)
    y = (w - mean) * inv * _stash(scale)
    if bias is not None:
        y = y + _stash(bias)
    return [y.astype(x.dtype), mean.astype(w.dtype), inv.astype(w.dtype)]


def rms_norm(ins, attrs, node):
    x, scale = need(ins, 0, "X"), need(ins, 1, "scale")
    axis = norm_axis(attrs.get("axis", -1), x.ndim)
    eps = float(attrs.get("epsilon", 1e-5))
    w = _stash(x)
    rms = np.sqrt(np.mean(np.square(w), axis=tuple(range(axis, x.ndim)), keepdims=True) + eps)
    return [(w / rms * _stash(scale)).astype(x.dtype)]


def instance_norm(ins, attrs, node):
    x, scale, bias = need(ins, 0, "input"), need(ins, 1, "scale"), need(ins, 2, "B")
    eps = float(attrs.get("epsilon", 1e-5))
    w = _stash(x)
    axes = tuple(range(2, x.ndim))
    mean = np.mean(w, axis=axes, keepdims=True)
    var = np.var(w, axis=axes, keepdims=True)
    y = (w - mean) / np.sqrt(var + eps) * _channel(_stash(scale), x.ndim) + _channel(_stash(bias), x.ndim)
    return [y.astype(x.dtype)]


def group_norm(ins, attrs, node):
    x, scale, bias = need(ins, 0, "X"), need(ins, 1, "scale"), need(ins, 2, "bias")
    g = int(attrs["num_groups"])
    eps = float(attrs.get("epsilon", 1e-5))
    n, c = x.shape[:2]
    if c % g:
        raise ValueError(f"GroupNormalization: {c} channels do not split into {g} groups")
    w = _stash(x).reshape((n, g, -1))
    mean = np.mean(w, axis=2, keepdims=True)
    var = np.var(w, axis=2, keepdims=True)
    normed = ((w - mean) / np.sqrt(var + eps)).reshape(x.shape)
    scale, bias = _stash(scale), _stash(bias)
    if node.opset < 21 and scale.size == g and g != c:  # opset 18: one scale / bias per group
        scale, bias = np.repeat(scale, c // g), np.repeat(bias, c // g)
    return [(normed * _channel(scale, x.ndim) + _channel(bias, x.ndim)).astype(x.dtype)]


def batch_norm(ins, attrs, node):
    x, scale, bias, mean, var = (need(ins, i, n) for i, n in
                                 enumerate(("X", "scale", "B", "input_mean", "input_var")))
    eps = float(attrs.get("epsilon", 1e-5))
    training = node.opset >= 14 and int(attrs.get("training_mode", 0))
    if node.opset < 9 and not int(attrs.get("spatial", 1)):
        raise ValueError("BatchNormalization: spatial=0 (per-activation statistics) is not supported")
    w = _stash(x)
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        bm, bv = np.mean(w, axis=axes), np.var(w, axis=axes)
        mom = float(attrs.get("momentum", 0.9))
        y = (w - _channel(bm, x.ndim)) / np.sqrt(_channel(bv, x.ndim) + eps)
        y = y * _channel(_stash(scale), x.ndim) + _channel(_stash(bias), x.ndim)
        run_mean = _stash(mean) * mom + bm * (1 - mom)
        run_var = _stash(var) * mom + bv * (1 - mom)
        return [y.astype(x.dtype), run_mean.astype(mean.dtype), run_var.astype(var.dtype)]
    y = (w - _channel(_stash(mean), x.ndim)) / np.sqrt(_channel(_stash(var), x.ndim) + eps)
    y = y * _channel(_stash(scale), x.ndim) + _channel(_stash(bias), x.ndim)
    # before opset 14 the optional extra outputs were the statistics passed through
    return [y.astype(x.dtype), np.array(mean), np.array(var), np.array(mean), np.array(var)]


def lp_norm(ins, attrs, node):
    x = need(ins, 0, "input")
    axis = norm_axis(attrs.get("axis", -1), x.ndim)
    p = int(attrs.get("p", 2))
    w = _stash(x)
    if p == 1:
        n = np.sum(np.abs(w), axis=axis, keepdims=True)
    elif p == 2:
        n = np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))
    else:
        raise ValueError(f"LpNormalization: p must be 1 or 2, got {p}")
    return [np.where(n == 0, 0, w / np.where(n == 0, 1, n)).astype(x.dtype)]


def mean_variance_norm(ins, attrs, node):
    x = need(ins, 0, "X")
    axes = norm_axes(attrs.get("axes", (0, 2, 3)), x.ndim)
    w = _stash(x)
    mean = np.mean(w, axis=axes, keepdims=True)
    var = np.mean(np.square(w), axis=axes, keepdims=True) - np.square(mean)
    # onnxruntime divides by sqrt(var) + 1e-9
    return [((w - mean) / (np.sqrt(np.maximum(var, 0)) + 1e-9)).astype(x.dtype)]


def lrn(ins, attrs, node):
    x = need(ins, 0, "X")
    size = int(attrs["size"])
    alpha, beta, bias = float(attrs.get("alpha", 1e-4)), float(attrs.get("beta", 0.75)), float(attrs.get("bias", 1.0))
    w = _stash(x)
    sq = np.square(w)
    c = x.shape[1]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2  # window [c - lo, c + hi]
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    csum = np.cumsum(padded, axis=1)
    csum = np.concatenate([np.zeros_like(csum[:, :1]), csum], axis=1)
    window = csum[:, size:size + c] - csum[:, :c]
    return [(w / (bias + alpha / size * window) ** beta).astype(x.dtype)]


KERNELS = {
    "LayerNormalization": layer_norm, "RMSNormalization": rms_norm,
    "InstanceNormalization": instance_norm, "GroupNormalization": group_norm,
    "BatchNormalization": batch_norm, "LpNormalization": lp_norm,
    "MeanVarianceNormalization": mean_variance_norm, "LRN": lrn,
}
