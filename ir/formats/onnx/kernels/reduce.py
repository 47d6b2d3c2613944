"""Reductions, ArgMax / ArgMin, CumSum / CumProd and TopK.

Reduce*: axes come from the attribute (older opsets) or the second input
(ReduceSum from 13, the others from 18); no axes means all axes unless
noop_with_empty_axes=1, which returns the input unchanged (after the op's
elementwise part for L1/L2/SumSquare/LogSum(Exp), as onnxruntime does).
Reducing an empty set gives the operation's identity (-inf for Max, +inf for
Min, 0 for Sum, 1 for Prod)."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, ints, is_float, need, norm_axes, norm_axis, scalar, work


def _identity_fill(dt, kind):
    if kind == "max":
        return -np.inf if is_float(dt) else (np.iinfo(dt).min if dt.kind in "iu" else False)
    return np.inf if is_float(dt) else (np.iinfo(dt).max if dt.kind in "iu" else True)


def _max(x, axes, keep):
    return np.max(x, axis=axes, keepdims=keep, initial=_identity_fill(x.dtype, "max"))


def _min(x, axes, keep):
    return np.min(x, axis=axes, keepdims=keep, initial=_identity_fill(x.dtype, "min"))


def _mean(x, axes, keep):
    n = int(np.prod([x.shape[a] for a in axes])) if axes is not None else x.size
    s = np.sum(x, axis=axes, keepdims=keep, dtype=np.float64 if x.dtype.kind in "iu" else None)
    return s / n if n else s * np.nan


def _log_sum_exp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return r if keep else np.squeeze(r, axis=axes if axes is not None else tuple(range(x.ndim)))


# name -> (the elementwise part applied first, the reduction)
REDUCTIONS = {
    "ReduceSum": (None, lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "ReduceMean": (None, _mean),
    "ReduceMax": (None, _max),
    "ReduceMin": (None, _min),
    "ReduceProd": (None, lambda x, a, k: np.prod(x, axis=a, keepdims=k)),
    "ReduceL1": (np.abs, lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "ReduceL2": (np.square, lambda x, a, k: np.sqrt(np.sum(x, axis=a, keepdims=k))),
    "ReduceSumSquare": (np.square, lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "ReduceLogSum": (None, lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k))),
    "ReduceLogSumExp": (None, _log_sum_exp),
}
_AXES_INPUT_SINCE = {"ReduceSum": 13}  # the others moved axes to an input at 18


def _reduce(name):
    pre, fn = REDUCTIONS[name]

    def kernel(ins, attrs, node):
        x = need(ins, 0, "data")
        if node.opset >= _AXES_INPUT_SINCE.get(name, 18):
            axes = arg(ins, 1)
            axes = None if axes is None else ints(axes)
        else:
            axes = attrs.get("axes")
            axes = None if axes is None else list(axes)
        keep = bool(int(attrs.get("keepdims", 1)))
        wx = work(x)
        if not axes:
            if int(attrs.get("noop_with_empty_axes", 0)):
                res = pre(wx) if pre is not None else wx
                return [np.asarray(res).astype(x.dtype, copy=False)]
            axes = None
        else:
            axes = norm_axes(axes, x.ndim)
        if name == "ReduceL2" and not is_float(x.dtype):
            wx = wx.astype(np.float64)  # the root of an integer sum of squares, then truncated
        res = fn(pre(wx) if pre is not None else wx, axes, keep)
        return [np.asarray(res).astype(x.dtype, copy=False)]
    return kernel


def _arg(fn):
    def kernel(ins, attrs, node):
        x = need(ins, 0, "data")
        axis = norm_axis(attrs.get("axis", 0), x.ndim)
        keep = bool(int(attrs.get("keepdims", 1)))
        if int(attrs.get("select_last_index", 0)):
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        if keep:
            idx = np.expand_dims(idx, axis)
        return [np.asarray(idx, dtype=np.int64)]
    return kernel


def _cumulative(ufunc):
    def kernel(ins, attrs, node):
        x, axis = need(ins, 0, "x"), need(ins, 1, "axis")
        ax = norm_axis(scalar(axis), x.ndim)
        wx = work(x)
        if int(attrs.get("reverse", 0)):
            wx = np.flip(wx, ax)
        res = ufunc.accumulate(wx, axis=ax, dtype=wx.dtype)
        if int(attrs.get("exclusive", 0)):  # shift by one: the first element is the identity
            pad = [(0, 0)] * x.ndim
            pad[ax] = (1, 0)
            res = np.pad(res, pad, constant_values=ufunc.identity)
            res = np.take(res, np.arange(x.shape[ax]), axis=ax)
        if int(attrs.get("reverse", 0)):
            res = np.flip(res, ax)
        return [np.asarray(res).astype(x.dtype, copy=False, order="C")]
    return kernel


def top_k(ins, attrs, node):
    x = need(ins, 0, "X")
    k = int(attrs["k"]) if node.opset < 10 else int(scalar(need(ins, 1, "K")))
    axis = norm_axis(attrs.get("axis", -1), x.ndim)
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"K={k} is out of range for axis {axis} of size {n}")
    largest = int(attrs.get("largest", 1))
    # stable sorts keep equal values in index order, as ONNX asks
    if largest:
        order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    vals = np.take_along_axis(x, idx, axis=axis)
    return [vals, idx.astype(np.int64)]


KERNELS = {name: _reduce(name) for name in REDUCTIONS}
KERNELS.update({
    "ArgMax": _arg(np.argmax), "ArgMin": _arg(np.argmin),
    "CumSum": _cumulative(np.add), "CumProd": _cumulative(np.multiply),
    "TopK": top_k,
})
