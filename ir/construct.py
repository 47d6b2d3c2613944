"""Making single ops with their output types inferred: what the builder and
every rewrite use to create new ops."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ir.core import Op, TensorType, Var, frozen_array
from ir.dtypes import UnknownDType, dtype as lookup_dtype, from_numpy, fits
from ir.ops import OpError, is_foreign, schema
from ir.ops.control import const_type


def as_array(value, dt: Optional[str] = None) -> np.ndarray:
    """A read-only array for a python / numpy value, with MIL-style defaults:
    python floats -> fp32, ints -> int32, bools -> bool, str -> string."""
    if isinstance(value, str):
        arr = np.array(value, dtype=object)
    elif isinstance(value, (bool, np.bool_)):
        arr = np.array(value, dtype=np.bool_)
    elif isinstance(value, (int, float, list, tuple)):
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype == np.int64:
            arr = arr.astype(np.int32)
    else:
        arr = np.asarray(value)
    if dt is not None:
        arr = arr.astype(lookup_dtype(dt).storage, copy=False)
    return frozen_array(arr)


def const_op(name: str, value, dt: Optional[str] = None) -> Op:
    """A const op whose output Var carries the value; dt names sub-byte types."""
    arr = as_array(value, dt)
    attrs = {"val": arr}
    if dt is not None and lookup_dtype(dt).name != from_numpy(arr).name:
        d = lookup_dtype(dt)
        if not fits(arr, d):
            raise OpError(f"const {name!r}: values do not fit in {d.name} [{d.min}, {d.max}]")
        attrs["dtype"] = d.name
    out = Var(name, const_type(attrs), arr)
    return Op.make("const", name, outputs=(out,), attrs=attrs)


def output_names(name: str, n: int) -> list:
    return [name] if n == 1 else [f"{name}_{i}" for i in range(n)]


def infer_types(op_type: str, name: str, inputs: dict, attrs: Optional[dict] = None) -> list:
    """Output types of an op, or OpError naming the op and the mismatch."""
    sch = schema(op_type)
    specs = sch.specs
    for k in inputs:
        if k not in specs:
            raise OpError(f"{op_type} {name!r}: unknown input {k!r}; "
                          f"expected one of {', '.join(sch.input_names) or '(none)'}")
    for k in sch.required:
        if inputs.get(k) is None:
            raise OpError(f"{op_type} {name!r}: missing required input {k!r}")
    try:
        return sch.infer(inputs, attrs or {})
    except (OpError, UnknownDType) as e:
        msg = str(e)  # kernels may name the op themselves; say it once
        msg = msg[len(op_type) + 2:] if msg.startswith(f"{op_type}: ") else msg
        raise OpError(f"{op_type} {name!r}: {msg}") from None
    except (TypeError, IndexError, KeyError, AttributeError) as e:
        raise OpError(f"{op_type} {name!r}: inputs do not fit the op ({type(e).__name__}: {e})") from None


def new_op(op_type: str, name: str, inputs: dict, attrs: Optional[dict] = None,
           blocks: tuple = (), out_types: Optional[list] = None) -> Op:
    """Build an op from input Vars; output types are inferred unless given
    (foreign ops and ops with blocks take them from the caller / blocks)."""
    inputs = {k: v for k, v in inputs.items() if v is not None}
    if out_types is None and not is_foreign(op_type):
        out_types = infer_types(op_type, name, inputs, attrs)
        if out_types is None and blocks:
            out_types = [v.type for v in blocks[0].outputs]
    if out_types is None:
        raise OpError(f"{op_type} {name!r}: output types must be given")
    if len(out_types) == 1:  # the common case, without the generator
        t = out_types[0]
        outs = (Var(name, t if t.__class__ is TensorType else TensorType.of(*t)),)
    else:
        outs = tuple(Var(n, t if isinstance(t, TensorType) else TensorType.of(*t))
                     for n, t in zip(output_names(name, len(out_types)), out_types))
    return Op.make(op_type, name, inputs, outs, attrs, blocks)
