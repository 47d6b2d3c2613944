"""Elementwise ops: binary arithmetic with numpy broadcasting, and activations."""
from __future__ import annotations

import math

import numpy as np

from ir.ops.registry import In, OpError, op, register, tt, value
from ir.ops.shape_util import broadcast


def _binary_infer(name):
    def infer(ins, attrs):
        x, y = ins["x"], ins["y"]
        if x.dtype != y.dtype:
            raise OpError(f"{name}: x is {x.dtype} but y is {y.dtype}")
        return [tt(x.dtype, broadcast(x.shape, y.shape, f"{name}: "))]
    return infer


def _same_type(ins, attrs):
    return [ins["x"].type]


def _float_same(ins, attrs):
    if not ins["x"].type.dt.is_float:
        raise OpError(f"x must be a float tensor, got {ins['x'].dtype}")
    return [ins["x"].type]


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
}

for _name, _fn in BINARY.items():
    register(_name, [In("x"), In("y")], _binary_infer(_name),
             (lambda fn: lambda v, ctx: [fn(v["x"], v["y"])])(_fn),
             doc=f"elementwise {_fn.__name__} of x and y, numpy broadcasting")


# comparisons (MIL's names): x and y of one dtype, numpy broadcasting, a bool result
COMPARISON = {
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}


def _comparison_infer(name):
    same = _binary_infer(name)

    def infer(ins, attrs):
        if name not in ("equal", "not_equal") and ins["x"].dtype == "bool":
            raise OpError(f"{name}: x and y must be numbers, got bool (MIL and ONNX order numbers only)")
        return [tt("bool", same(ins, attrs)[0].shape)]
    return infer


for _name, _fn in COMPARISON.items():
    register(_name, [In("x"), In("y")], _comparison_infer(_name),
             (lambda fn: lambda v, ctx: [fn(v["x"], v["y"])])(_fn),
             doc=f"elementwise {_fn.__name__} of x and y (bool), numpy broadcasting")


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu(x, mode):
    x64 = x.astype(np.float64)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x64 / (1 + np.exp(-1.702 * x64))
    return 0.5 * x64 * (1 + _erf(x64 / math.sqrt(2)))


UNARY = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "abs": np.abs,
    "neg": np.negative,
    "erf": _erf,
    "floor": np.floor,
    "ceil": np.ceil,
    "sign": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "silu": lambda x: x / (1 + np.exp(-x)),
}

for _name, _fn in UNARY.items():
    register(_name, [In("x")], _same_type, (lambda fn: lambda v, ctx: [fn(v["x"])])(_fn),
             doc=f"elementwise {_name}")


GELU_MODES = ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION")


def _gelu_infer(ins, attrs):
    mode = value(ins, "mode")
    if mode is not None and str(mode) not in GELU_MODES:
        raise OpError(f"gelu: mode {str(mode)!r} is not one of {', '.join(GELU_MODES)}")
    return _float_same(ins, attrs)


@op("gelu", [In("x"), In("mode", optional=True, const=True)], _gelu_infer)
def _gelu_kernel(v, ctx):
    """gelu with mode EXACT (default), TANH_APPROXIMATION or SIGMOID_APPROXIMATION"""
    mode = v.get("mode")
    return [_gelu(v["x"], "EXACT" if mode is None else str(mode))]


@op("clip", [In("x"), In("alpha", const=True), In("beta", const=True)], _same_type)
def _clip(v, ctx):
    """clip x to [alpha, beta]"""
    return [np.clip(v["x"], v["alpha"], v["beta"])]


def _cast_infer(ins, attrs):
    return [tt(str(value(ins, "dtype")), ins["x"].shape)]


@op("cast", [In("x"), In("dtype", const=True)], _cast_infer)
def _cast(v, ctx):
    """convert x to dtype (float -> int truncates toward zero, as numpy does)"""
    return [v["x"].astype(ctx.out_types[0].dt.storage)]


@op("leaky_relu", [In("x"), In("alpha", optional=True, const=True)], _float_same)
def _leaky_relu(v, ctx):
    """x where x >= 0, else alpha * x (alpha defaults to 0.01)"""
    x = v["x"]
    alpha = v["alpha"] if v.get("alpha") is not None else 0.01
    return [np.where(x >= 0, x, alpha * x)]


@op("clamped_relu", [In("x"), In("alpha", optional=True, const=True), In("beta", optional=True, const=True)],
    _float_same)
def _clamped_relu(v, ctx):
    """min(beta, x where x >= 0 else alpha * x); alpha defaults to 0, beta to 6"""
    x = v["x"]
    alpha = v["alpha"] if v.get("alpha") is not None else 0.0
    beta = v["beta"] if v.get("beta") is not None else 6.0
    return [np.minimum(np.where(x >= 0, x, alpha * x), beta)]


@op("sigmoid_hard", [In("x"), In("alpha", const=True), In("beta", const=True)], _float_same)
def _sigmoid_hard(v, ctx):
    """min(max(alpha * x + beta, 0), 1) (coremltools writes torch's hardsigmoid / hardswish so)"""
    x = v["x"]
    return [np.minimum(np.maximum(v["alpha"] * x + v["beta"], 0), 1).astype(x.dtype)]


@op("thresholded_relu", [In("x"), In("alpha", const=True)], _float_same)
def _thresholded_relu(v, ctx):
    """x where x >= alpha, else 0 (MIL's rule: the threshold itself passes; NaN stays NaN)"""
    x = v["x"]
    return [np.where(x < v["alpha"], np.zeros((), x.dtype), x)]


def _select_infer(ins, attrs):
    c, a, b = ins["cond"], ins["a"], ins["b"]
    if a.dtype != b.dtype:
        raise OpError(f"select: a is {a.dtype} but b is {b.dtype}")
    shape = broadcast(broadcast(c.shape, a.shape, "select: "), b.shape, "select: ")
    return [tt(a.dtype, shape)]


@op("select", [In("cond"), In("a"), In("b")], _select_infer)
def _select(v, ctx):
    """a where cond is nonzero, else b (numpy broadcasting)"""
    return [np.where(v["cond"].astype(bool), v["a"], v["b"])]
