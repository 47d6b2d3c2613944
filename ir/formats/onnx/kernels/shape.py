"""Shape and layout ops, Identity, Dropout (inference and training), Constant,
and the casts.

Cast follows onnxruntime: floats to integers truncate toward zero; to
bool is "non-zero"; to and from strings use Python's shortest round-trip
spelling ("NaN", "INF" and "-INF" parse as the special values); to int4 /
uint4 truncates and then clamps to the 4-bit range (onnxruntime's CPU cast;
ONNX leaves out-of-range values undefined). The float8 types have
no kernel (the IR has no dtype for them): the reference evaluator runs those.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ir.formats.onnx.kernels._util import (Unsupported, arg, ints, is_float, is_float8, need, norm_axes,
                                           np_dtype, prod, scalar)


def shape(ins, attrs, node):
    x = need(ins, 0, "data")
    s = np.shape(x)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return [np.array(s[start:None if end is None else int(end)], dtype=np.int64)]


def size(ins, attrs, node):
    return [np.array(np.size(need(ins, 0, "data")), dtype=np.int64)]


def reshape(ins, attrs, node):
    x = need(ins, 0, "data")
    target = list(attrs["shape"]) if node.opset < 5 else ints(need(ins, 1, "shape"))
    allow_zero = int(attrs.get("allowzero", 0))
    if not allow_zero:  # 0 copies the input's dimension at that position
        for i, d in enumerate(target):
            if d == 0:
                if i >= x.ndim:
                    raise ValueError(f"Reshape: 0 at position {i} but the input has rank {x.ndim}")
                target[i] = x.shape[i]
    if target.count(-1) > 1:
        raise ValueError(f"Reshape: more than one -1 in {target}")
    if -1 in target:
        known = prod(d for d in target if d != -1)
        if known == 0 or x.size % known:
            raise ValueError(f"Reshape: cannot infer -1 in {target} from {x.size} elements")
        target[target.index(-1)] = x.size // known
    if prod(target) != x.size:
        raise ValueError(f"Reshape: {x.size} elements cannot take shape {target}")
    return [np.array(x).reshape(target)]


def flatten(ins, attrs, node):
    x = need(ins, 0, "input")
    axis = int(attrs.get("axis", 1))
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"Flatten: axis {axis} out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    return [np.array(x).reshape(prod(x.shape[:axis]), prod(x.shape[axis:]))]


def squeeze(ins, attrs, node):
    x = need(ins, 0, "data")
    axes = attrs.get("axes") if node.opset < 13 else arg(ins, 1)
    if axes is None or not len(ints(axes)):
        return [np.array(np.squeeze(x))]
    axes = norm_axes(ints(axes), x.ndim)
    bad = [a for a in axes if x.shape[a] != 1]
    if bad:
        raise ValueError(f"Squeeze: axes {bad} of shape {x.shape} are not 1")
    return [np.array(np.squeeze(x, axis=axes))]


def unsqueeze(ins, attrs, node):
    x = need(ins, 0, "data")
    axes = attrs.get("axes") if node.opset < 13 else need(ins, 1, "axes")
    axes = ints(axes)
    rank = x.ndim + len(axes)
    res = np.array(x)
    for a in sorted(norm_axes(axes, rank)):
        res = np.expand_dims(res, a)
    return [res]


def transpose(ins, attrs, node):
    x = need(ins, 0, "data")
    perm = attrs.get("perm")
    perm = tuple(reversed(range(x.ndim))) if perm is None else tuple(int(p) for p in perm)
    return [np.asarray(np.transpose(x, perm), order="C")]


def depth_to_space(ins, attrs, node):
    x = need(ins, 0, "input")
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if c % (b * b):
        raise ValueError(f"DepthToSpace: {c} channels are not divisible by blocksize^2 = {b * b}")
    if attrs.get("mode", "DCR") == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:  # CRD
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [np.asarray(t.reshape(n, c // (b * b), h * b, w * b), order="C")]


def space_to_depth(ins, attrs, node):
    x = need(ins, 0, "input")
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if h % b or w % b:
        raise ValueError(f"SpaceToDepth: {h}x{w} is not divisible by blocksize {b}")
    t = x.reshape(n, c, h // b, b, w // b, b)
    # DCR: the block offset is the outer part of the new channel index; CRD: the inner
    t = t.transpose(0, 3, 5, 1, 2, 4) if attrs.get("mode", "DCR") == "DCR" else t.transpose(0, 1, 3, 5, 2, 4)
    return [np.asarray(t.reshape(n, c * b * b, h // b, w // b), order="C")]


def identity(ins, attrs, node):
    return [ins[0] if ins else None]  # tensors, sequences and optionals alike (never written to)


def dropout(ins, attrs, node):
    x = need(ins, 0, "data")
    if node.opset >= 12:
        ratio = float(scalar(arg(ins, 1), 0.5))
        training = bool(scalar(arg(ins, 2), False))
    else:
        ratio = float(attrs.get("ratio", 0.5))
        training = node.opset < 7 and not int(attrs.get("is_test", 0))
    mask_dtype = bool if node.opset >= 10 else x.dtype
    if not training or ratio == 0:
        return [np.array(x), np.ones(x.shape, dtype=mask_dtype)]
    rng = np.random.default_rng(int(attrs["seed"]) if "seed" in attrs else None)
    keep = rng.uniform(size=x.shape) >= ratio
    return [(x * keep / (1 - ratio)).astype(x.dtype), keep.astype(mask_dtype)]


_CONSTANT_FORMS = {"value_float": np.float32, "value_floats": np.float32,
                   "value_int": np.int64, "value_ints": np.int64,
                   "value_string": object, "value_strings": object}


def constant(ins, attrs, node):
    v = attrs.get("value")
    if isinstance(v, np.ndarray):
        return [np.array(v)]
    for key, dt in _CONSTANT_FORMS.items():
        if key in attrs:
            return [np.array(attrs[key], dtype=dt)]
    raise Unsupported("sparse constant")


# ---- casts -----------------------------------------------------------------------

_SPECIAL = {"nan": np.nan, "inf": np.inf, "+inf": np.inf, "-inf": -np.inf,
            "infinity": np.inf, "+infinity": np.inf, "-infinity": -np.inf}


def _parse(s, integer: bool):
    t = (s.decode() if isinstance(s, bytes) else str(s)).strip()
    if t.lower() in _SPECIAL:
        return _SPECIAL[t.lower()] if not integer else 0
    if integer:
        try:
            return int(t)
        except ValueError:
            return int(float(t))
    return float(t)


def _format(v, dt) -> str:
    f = float(v)
    if np.isnan(f):
        return "NaN"
    if np.isinf(f):
        return "INF" if f > 0 else "-INF"
    return str(np.asarray(v, dt)[()])  # numpy's shortest spelling that reads back the same


def _to_string(x: np.ndarray) -> np.ndarray:
    if x.dtype == object:
        return np.array(x, dtype=object)
    if is_float(x.dtype):
        dt = x.dtype if x.dtype.kind == "f" else np.float32
        return np.vectorize(lambda v: _format(v, dt), otypes=[object])(x) if x.size else np.empty(x.shape, object)
    return x.astype(str).astype(object)


def _from_string(x: np.ndarray, target: np.dtype) -> np.ndarray:
    integer = target.kind in "iub"
    if not x.size:
        return np.zeros(x.shape, target)
    vals = np.vectorize(lambda s: _parse(s, integer), otypes=[np.int64 if integer else np.float64])(x)
    return vals.astype(target) if target != np.bool_ else vals != 0


_FOUR_BIT = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}


def cast_to(x: np.ndarray, to: int) -> np.ndarray:
    target = np_dtype(to)
    if to == TensorProto.STRING:
        return _to_string(x)
    if x.dtype == object:
        return _from_string(x, target)
    if to in _FOUR_BIT:
        lo, hi = _FOUR_BIT[to]
        v = np.trunc(x.astype(np.float64)) if is_float(x.dtype) else x.astype(np.int64)
        return np.clip(np.where(np.isnan(v), 0, v), lo, hi).astype(np.int64).astype(target)
    if x.dtype.kind == "V":  # bfloat16 (and the float8 types) go through float32
        x = x.astype(np.float32)
    if target == np.bool_:
        return x != 0
    return x.astype(target)


def cast(ins, attrs, node):
    x = need(ins, 0, "input")
    to = int(attrs["to"]) if not isinstance(attrs["to"], str) else getattr(TensorProto, attrs["to"].upper())
    if is_float8(np_dtype(to)) or is_float8(x.dtype):
        raise Unsupported("float8 casts")
    return [cast_to(x, to)]


def cast_like(ins, attrs, node):
    x, like = need(ins, 0, "input"), need(ins, 1, "target_type")
    dt = np.asarray(like).dtype
    if dt == object:
        return [cast_to(x, TensorProto.STRING)]
    if is_float8(dt) or is_float8(x.dtype):
        raise Unsupported("float8 casts")
    from onnx import helper

    return [cast_to(x, helper.np_dtype_to_tensor_dtype(dt))]


def bit_cast(ins, attrs, node):
    x = need(ins, 0, "input")
    target = np_dtype(attrs["to"])
    if target == object or x.dtype == object or target.itemsize != x.dtype.itemsize:
        raise ValueError(f"BitCast: {x.dtype} and {target} differ in width (or are strings)")
    return [np.array(x, order="C").view(target)]  # (ascontiguousarray would make a 0-d array 1-d)


KERNELS = {
    "BitCast": bit_cast, "Shape": shape, "Size": size, "Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze,
    "Unsqueeze": unsqueeze, "Transpose": transpose, "DepthToSpace": depth_to_space,
    "SpaceToDepth": space_to_depth, "Identity": identity, "Dropout": dropout, "Constant": constant,
    "Cast": cast, "CastLike": cast_like,
}
