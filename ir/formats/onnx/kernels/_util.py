"""What every kernel family shares: the node context, argument access, axes and
ONNX element types as numpy dtypes."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from onnx import TensorProto, helper


class Node(NamedTuple):
    op_type: str
    opset: int
    n_out: int


class Unsupported(Exception):
    """A case a kernel does not implement: the reference evaluator runs the node instead."""


def arg(ins: list, i: int):
    """Input i, or None when the slot is empty or absent."""
    return ins[i] if i < len(ins) else None


def need(ins: list, i: int, what: str):
    v = arg(ins, i)
    if v is None:
        raise ValueError(f"input {i} ({what}) is required")
    return v


def ints(v) -> list:
    """A 1-D int list from an attribute tuple or an integer tensor input."""
    return [int(x) for x in np.asarray(v).reshape(-1)]


def scalar(v, default=None):
    """A Python number from a 0-d / 1-element tensor input (None -> default)."""
    if v is None:
        return default
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"expected a single value, got shape {a.shape}")
    return a.reshape(-1)[0].item()


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    a = int(axis)
    if not -rank <= a < max(rank, 1) and not (rank == 0 and a in (0, -1)):
        raise ValueError(f"{what} {axis} is out of range for rank {rank}")
    return a + rank if a < 0 else a


def norm_axes(axes, rank: int, what: str = "axes") -> tuple:
    out = tuple(norm_axis(a, rank, what) for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(f"{what} {list(axes)} repeat an axis")
    return out


def np_dtype(elem: int) -> np.dtype:
    """The numpy dtype of an ONNX element type (ml_dtypes for bfloat16 / float8 / int4)."""
    if elem == TensorProto.STRING:
        return np.dtype(object)
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(elem)))
    except Exception as e:
        raise ValueError(f"ONNX element type {elem} has no numpy dtype ({e})") from None


def is_float(dt) -> bool:
    """float16/32/64 and the ml_dtypes floats (bfloat16, float8)."""
    dt = np.dtype(dt)
    return dt.kind == "f" or (dt.kind == "V" and "float" in dt.name)


def is_float8(dt) -> bool:
    """The 8- and 4-bit float types (ml_dtypes): no IR dtype, no kernel; the reference
    evaluator runs them."""
    return np.dtype(dt).name.startswith(("float8", "float4"))


def work(x: np.ndarray) -> np.ndarray:
    """Where float arithmetic happens: float32 for the narrow floats (as onnxruntime
    computes float16 ops), the array itself otherwise."""
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    if is_float(x.dtype):
        return x.astype(np.float32)
    return x


def out(value, like) -> np.ndarray:
    """`value` as an array of `like`'s dtype (0-d stays 0-d)."""
    dt = like.dtype if isinstance(like, np.ndarray) else np.dtype(like)
    return np.asarray(value).astype(dt, copy=False)


def prod(shape) -> int:
    return int(math.prod(int(d) for d in shape))


def erf(x: np.ndarray) -> np.ndarray:
    """erf, vectorized. Narrow floats: in float64, a Taylor series below |x| = 0.5 (error
    < 1e-9 relative) and Numerical Recipes' erfc Chebyshev fit above (fractional error
    < 1.2e-7, below float32's resolution there); float64 inputs: math.erf per element
    (exact, slower)."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.copy()
    x64 = x.astype(np.float64)
    z = np.abs(x64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    far = np.copysign(1.0 - t * np.exp(poly), x64)
    x2 = x64 * x64
    series = sum(c * x2 ** n for n, c in enumerate(_ERF_TAYLOR))
    near = (2.0 / math.sqrt(math.pi)) * x64 * series
    return np.where(z < 0.5, near, far)


# erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
_ERF_TAYLOR = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(8))
