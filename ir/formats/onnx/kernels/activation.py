"""Activations and the softmax family.

Softmax, LogSoftmax and Hardmax before opset 13 coerce the input to 2-D at
`axis` (default 1: [prod(shape[:axis]), prod(shape[axis:])]) and normalize
over the whole second dimension; from 13 on they work along `axis` (default
-1) alone. Narrow floats are computed in float32 and rounded back."""
from __future__ import annotations

import math

import numpy as np

from ir.formats.onnx.kernels._util import erf, need, norm_axis, prod, work


def _act(fn):
    """An activation whose attributes are read by `fn(x, attrs)`; result in x's dtype."""
    def kernel(ins, attrs, node):
        x = need(ins, 0, "X")
        return [np.asarray(fn(work(x), attrs)).astype(x.dtype, copy=False)]
    return kernel


def _sigmoid(x):
    # exp of a non-positive number only: no overflow warning on large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.logaddexp(np.zeros((), x.dtype), x)


def _gelu(x, attrs):
    if attrs.get("approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return (0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(x.dtype)


def _f(attrs, name, default):
    return float(attrs.get(name, default))


ACTIVATIONS = {
    "Relu": lambda x, a: np.maximum(x, 0),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, x * _f(a, "alpha", 0.01)),
    "Elu": lambda x, a: np.where(x > 0, x, _f(a, "alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "Selu": lambda x, a: _f(a, "gamma", 1.05070102214813232421875) * np.where(
        x > 0, x, _f(a, "alpha", 1.67326319217681884765625) * np.expm1(np.minimum(x, 0))),
    "Celu": lambda x, a: np.maximum(x, 0) + np.minimum(
        0, _f(a, "alpha", 1.0) * np.expm1(np.minimum(x, 0) / _f(a, "alpha", 1.0))),
    "ThresholdedRelu": lambda x, a: np.where(x > _f(a, "alpha", 1.0), x, 0),
    "HardSigmoid": lambda x, a: np.clip(_f(a, "alpha", 0.2) * x + _f(a, "beta", 0.5), 0, 1),
    "HardSwish": lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1),
    "Sigmoid": lambda x, a: _sigmoid(x),
    "Softplus": lambda x, a: _softplus(x),
    "Softsign": lambda x, a: x / (1 + np.abs(x)),
    "Mish": lambda x, a: x * np.tanh(_softplus(x)),
    "Swish": lambda x, a: x * _sigmoid(_f(a, "alpha", 1.0) * x),
    "Gelu": _gelu,
    "Shrink": lambda x, a: np.where(x < -_f(a, "lambd", 0.5), x + _f(a, "bias", 0.0),
                                    np.where(x > _f(a, "lambd", 0.5), x - _f(a, "bias", 0.0), 0)),
}


def prelu(ins, attrs, node):
    x, slope = need(ins, 0, "X"), need(ins, 1, "slope")
    if node.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.size == x.shape[1]:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))  # PRelu-6 broadcast slope over C
    wx = work(x)
    return [np.where(wx >= 0, wx, wx * work(slope)).astype(x.dtype, copy=False)]


# ---- softmax family ------------------------------------------------------------------

def _softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    s = x - np.where(np.isfinite(m), m, 0)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _hardmax(x, axis):
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    y = np.zeros_like(x)
    if x.size:
        np.put_along_axis(y, idx, 1, axis=axis)
    return y


def _normalizer(fn):
    def kernel(ins, attrs, node):
        x = need(ins, 0, "input")
        wx = work(x)
        if node.opset < 13:  # coerce to 2-D at axis, normalize over the flattened tail
            axis = norm_axis(attrs.get("axis", 1), max(x.ndim, 1))
            flat = wx.reshape(prod(x.shape[:axis]), prod(x.shape[axis:]))
            res = fn(flat, 1).reshape(x.shape) if flat.size else wx
        else:
            axis = norm_axis(attrs.get("axis", -1), max(x.ndim, 1))
            res = fn(wx, axis) if x.ndim else fn(wx.reshape(1), 0).reshape(())
        return [np.asarray(res).astype(x.dtype, copy=False)]
    return kernel


KERNELS = {name: _act(fn) for name, fn in ACTIVATIONS.items()}
KERNELS.update({
    "PRelu": prelu,
    "Softmax": _normalizer(_softmax), "LogSoftmax": _normalizer(_log_softmax),
    "Hardmax": _normalizer(_hardmax),
})
