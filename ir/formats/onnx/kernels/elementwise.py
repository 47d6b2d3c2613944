"""Elementwise math, comparison, logic and bit ops, with ONNX's integer rules:
Div truncates toward zero, Mod follows the divisor's sign unless fmod=1, Pow
keeps the base's type, results keep the input's dtype (no numpy promotion)."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, erf, is_float, need, scalar, work


def _same(fn):
    """A unary op whose result has the input's dtype, computed where `work` says."""
    def kernel(ins, attrs, node):
        x = need(ins, 0, "X")
        return [np.asarray(fn(work(x))).astype(x.dtype, copy=False)]
    return kernel


def _int_or_float(int_fn, float_fn):
    def kernel(ins, attrs, node):
        x = need(ins, 0, "X")
        if is_float(x.dtype):
            return [np.asarray(float_fn(work(x))).astype(x.dtype, copy=False)]
        return [np.asarray(int_fn(x)).astype(x.dtype, copy=False)]
    return kernel


def _binary(fn):
    """A binary op with numpy broadcasting whose result has A's dtype."""
    def kernel(ins, attrs, node):
        a, b = need(ins, 0, "A"), need(ins, 1, "B")
        if a.dtype == object:  # strings (Add is not defined on them, Equal is elsewhere)
            return [np.asarray(fn(a, b))]
        return [np.asarray(fn(work(a), work(b))).astype(a.dtype, copy=False)]
    return kernel


def _compare(fn):
    def kernel(ins, attrs, node):
        a, b = need(ins, 0, "A"), need(ins, 1, "B")
        return [np.asarray(fn(a, b), dtype=bool)]
    return kernel


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (C semantics); x / 0 gives 0 rather than
    raising (onnxruntime's result there is undefined)."""
    if is_float(a.dtype):
        return a / b
    a64, b64 = np.broadcast_arrays(a.astype(np.int64) if a.dtype != np.uint64 else a,
                                   b.astype(np.int64) if b.dtype != np.uint64 else b)
    safe = np.where(b64 == 0, 1, b64)
    q = np.abs(a64) // np.abs(safe) if a.dtype.kind == "i" else a64 // safe
    if a.dtype.kind == "i":
        q = np.where((a64 < 0) != (safe < 0), -q, q)
    return np.where(b64 == 0, 0, q)


def div(ins, attrs, node):
    a, b = need(ins, 0, "A"), need(ins, 1, "B")
    return [np.asarray(_div(work(a), work(b))).astype(a.dtype, copy=False)]


def mod(ins, attrs, node):
    a, b = need(ins, 0, "A"), need(ins, 1, "B")
    if int(attrs.get("fmod", 0)):
        res = np.fmod(work(a), work(b))  # the dividend's sign (C fmod)
    elif is_float(a.dtype):
        res = np.mod(work(a), work(b))  # the divisor's sign
    else:
        safe = np.where(b == 0, 1, b)
        res = np.where(b == 0, 0, np.mod(a, safe))  # the divisor's sign (Python %)
    return [np.asarray(res).astype(a.dtype, copy=False)]


def power(ins, attrs, node):
    a, b = need(ins, 0, "X"), need(ins, 1, "Y")
    if is_float(a.dtype):
        res = np.power(work(a), work(b).astype(work(a).dtype))
    else:  # integer bases: exact in int64 for the exponents that matter, float for negative ones
        bi = np.asarray(b)
        if is_float(bi.dtype) or np.any(bi < 0):
            res = np.trunc(np.power(a.astype(np.float64), bi.astype(np.float64)))
        else:
            res = np.power(a.astype(np.int64), bi.astype(np.int64))
    return [np.asarray(res).astype(a.dtype, copy=False)]


def bit_shift(ins, attrs, node):
    a, b = need(ins, 0, "X"), need(ins, 1, "Y")
    direction = attrs.get("direction")
    fn = {"LEFT": np.left_shift, "RIGHT": np.right_shift}.get(direction)
    if fn is None:
        raise ValueError(f"BitShift direction must be LEFT or RIGHT, got {direction!r}")
    bits = a.dtype.itemsize * 8
    b = np.asarray(b).astype(np.int64)
    shifted = fn(a, np.minimum(b, bits - 1).astype(a.dtype))
    # a shift by the width or more: left gives 0, right the sign fill (0 or -1)
    res = shifted if direction == "RIGHT" else np.where(b >= bits, 0, shifted)
    return [np.asarray(res).astype(a.dtype, copy=False)]


def _variadic(fn, mean=False):
    def kernel(ins, attrs, node):
        xs = [x for x in ins if x is not None]
        if not xs:
            raise ValueError("needs at least one input")
        dt = xs[0].dtype
        acc = work(xs[0])
        for x in xs[1:]:
            acc = fn(acc, work(x))
        if mean:
            acc = acc / len(xs)
        return [np.asarray(acc).astype(dt, copy=False)]
    return kernel


def clip(ins, attrs, node):
    x = need(ins, 0, "input")
    if node.opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo, hi = scalar(arg(ins, 1)), scalar(arg(ins, 2))
    res = x
    if lo is not None:
        res = np.maximum(res, np.asarray(lo).astype(x.dtype))
    if hi is not None:  # applied last: min > max gives max everywhere, as ONNX says
        res = np.minimum(res, np.asarray(hi).astype(x.dtype))
    return [np.array(res, dtype=x.dtype)]


def where(ins, attrs, node):
    c, x, y = need(ins, 0, "condition"), need(ins, 1, "X"), need(ins, 2, "Y")
    return [np.where(np.asarray(c, bool), x, y).astype(x.dtype, copy=False)]


def is_nan(ins, attrs, node):
    return [np.isnan(need(ins, 0, "X").astype(np.float32, copy=False))]


def is_inf(ins, attrs, node):
    x = need(ins, 0, "X")
    x = x.astype(np.float32, copy=False) if not x.dtype.kind == "f" else x
    pos, neg = int(attrs.get("detect_positive", 1)), int(attrs.get("detect_negative", 1))
    return [(np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg))]


def _logical(fn):
    def kernel(ins, attrs, node):
        a, b = need(ins, 0, "A"), need(ins, 1, "B")
        return [np.asarray(fn(np.asarray(a, bool), np.asarray(b, bool)), dtype=bool)]
    return kernel


def _not(ins, attrs, node):
    return [np.logical_not(need(ins, 0, "X"))]


def _bitwise(fn):
    def kernel(ins, attrs, node):
        a, b = need(ins, 0, "A"), need(ins, 1, "B")
        return [np.asarray(fn(a, b.astype(a.dtype, copy=False))).astype(a.dtype, copy=False)]
    return kernel


def bitwise_not(ins, attrs, node):
    return [np.invert(need(ins, 0, "X"))]


def _sign(x):
    return np.sign(x)


def _round(x):
    return np.round(x)  # half to even, as ONNX specifies


def _reciprocal(x):
    return 1.0 / x


KERNELS = {
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": div, "Mod": mod, "Pow": power, "BitShift": bit_shift,
    "Max": _variadic(np.maximum), "Min": _variadic(np.minimum), "Sum": _variadic(np.add),
    "Mean": _variadic(np.add, mean=True),
    "Equal": _compare(np.equal), "Greater": _compare(np.greater), "Less": _compare(np.less),
    "GreaterOrEqual": _compare(np.greater_equal), "LessOrEqual": _compare(np.less_equal),
    "And": _logical(np.logical_and), "Or": _logical(np.logical_or), "Xor": _logical(np.logical_xor),
    "Not": _not,
    "BitwiseAnd": _bitwise(np.bitwise_and), "BitwiseOr": _bitwise(np.bitwise_or),
    "BitwiseXor": _bitwise(np.bitwise_xor), "BitwiseNot": bitwise_not,
    "Abs": _same(np.abs), "Neg": _same(np.negative), "Sign": _same(_sign),
    "Ceil": _same(np.ceil), "Floor": _same(np.floor), "Round": _same(_round),
    "Sqrt": _same(np.sqrt), "Exp": _same(np.exp), "Log": _same(np.log),
    "Reciprocal": _same(_reciprocal), "Erf": _same(erf),
    "Sin": _same(np.sin), "Cos": _same(np.cos), "Tan": _same(np.tan),
    "Asin": _same(np.arcsin), "Acos": _same(np.arccos), "Atan": _same(np.arctan),
    "Sinh": _same(np.sinh), "Cosh": _same(np.cosh), "Tanh": _same(np.tanh),
    "Asinh": _same(np.arcsinh), "Acosh": _same(np.arccosh), "Atanh": _same(np.arctanh),
    "IsNaN": is_nan, "IsInf": is_inf, "Clip": clip, "Where": where,
}
