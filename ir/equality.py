"""Structural equality of programs, reporting the first mismatch as a path.

Nodes compare by identity (`new is old` means unchanged); tests that compare
a Before and an Expected program use this instead:

    structural_diff(a, b)  ->  None, or "functions['main'].ops[3].inputs['x']: 'a' != 'b'"

Arrays compare by dtype, shape and values (NaN equals NaN).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ir.core import Block, Op, Program, Var


def _arrays(a: np.ndarray, b: np.ndarray, path: str) -> Optional[str]:
    if a.dtype != b.dtype:
        return f"{path}.dtype: {a.dtype} != {b.dtype}"
    if a.shape != b.shape:
        return f"{path}.shape: {a.shape} != {b.shape}"
    nan_ok = a.dtype.kind in "fc"
    if not np.array_equal(a, b, equal_nan=nan_ok):
        where = tuple(int(i) for i in np.argwhere(~_elementwise_equal(a, b))[0]) if a.ndim else ()
        at = "[" + ", ".join(map(str, where)) + "]" if where else ""
        return f"{path}{at}: {a[where].tolist()!r} != {b[where].tolist()!r}"
    return None


def _elementwise_equal(a, b):
    eq = np.asarray(a == b)
    if a.dtype.kind in "fc":
        eq = eq | (np.isnan(a) & np.isnan(b))
    return eq


def values(a, b, path: str) -> Optional[str]:
    """First difference between two attribute values (arrays, scalars, containers)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return f"{path}: {type(a).__name__} != {type(b).__name__}"
        return _arrays(a, b, path)
    if type(a) is not type(b) and not (hasattr(a, "items") and hasattr(b, "items")):
        return f"{path}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"
    if hasattr(a, "items"):
        return _sequence_of_keys(a, b, path) or _first(
            values(a[k], b[k], f"{path}[{k!r}]") for k in sorted(a))
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return _first(values(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    if isinstance(a, float) and a != a and b != b:  # nan == nan here
        return None
    if isinstance(a, np.generic) and a.dtype != b.dtype:
        return f"{path}: {a!r} != {b!r}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _sequence_of_keys(a, b, path) -> Optional[str]:
    ka, kb = sorted(a), sorted(b)
    if ka != kb:
        return f"{path} keys: {ka} != {kb}"
    return None


def _first(diffs) -> Optional[str]:
    for d in diffs:
        if d is not None:
            return d
    return None


def _var(a: Var, b: Var, path: str) -> Optional[str]:
    if a is b:
        return None
    if a.name != b.name:
        return f"{path}.name: {a.name!r} != {b.name!r}"
    if a.type != b.type:
        return f"{path} ({a.name}).type: {a.type} != {b.type}"
    if (a.val is None) != (b.val is None):
        return f"{path} ({a.name}).val: {'set' if a.val is not None else 'None'} != " \
               f"{'set' if b.val is not None else 'None'}"
    return None if a.val is None else _arrays(a.val, b.val, f"{path} ({a.name}).val")


def _vars(a, b, path: str) -> Optional[str]:
    if len(a) != len(b):
        return f"{path}: {len(a)} != {len(b)} values ({[v.name for v in a]} != {[v.name for v in b]})"
    return _first(_var(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))


def _input_names(v):
    return tuple(x.name for x in v) if isinstance(v, tuple) else v.name


def _op(a: Op, b: Op, path: str) -> Optional[str]:
    if a is b:
        return None
    if a.op_type != b.op_type:
        return f"{path}.op_type: {a.op_type!r} != {b.op_type!r}"
    if a.name != b.name:
        return f"{path}.name: {a.name!r} != {b.name!r}"
    d = _sequence_of_keys(a.inputs, b.inputs, f"{path}.inputs")
    for k in sorted(a.inputs) if d is None else ():
        x, y = _input_names(a.inputs[k]), _input_names(b.inputs[k])
        if x != y:
            return f"{path}.inputs[{k!r}]: {x!r} != {y!r}"
    return (d or values(a.attrs, b.attrs, f"{path}.attrs")
            or _vars(a.outputs, b.outputs, f"{path}.outputs")
            or _blocks(a.blocks, b.blocks, f"{path}.blocks"))


def _blocks(a, b, path: str) -> Optional[str]:
    if len(a) != len(b):
        return f"{path}: {len(a)} != {len(b)} blocks"
    return _first(block_diff(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))


def block_diff(a: Block, b: Block, path: str = "block") -> Optional[str]:
    if a is b:
        return None
    d = _vars(a.inputs, b.inputs, f"{path}.inputs")
    if d:
        return d
    for i, (x, y) in enumerate(zip(a.ops, b.ops)):
        d = _op(x, y, f"{path}.ops[{i}]")
        if d:
            return d
    if len(a.ops) != len(b.ops):
        extra = a.ops[len(b.ops)] if len(a.ops) > len(b.ops) else b.ops[len(a.ops)]
        return f"{path}.ops: {len(a.ops)} != {len(b.ops)} ops (first extra: {extra.op_type} {extra.name!r})"
    return _vars(a.outputs, b.outputs, f"{path}.outputs")


def structural_diff(a: Program, b: Program) -> Optional[str]:
    """None when the programs are structurally equal, else the path of the first mismatch."""
    if a is b:
        return None
    d = values(a.attrs, b.attrs, "attrs")
    if d:
        return d
    if sorted(a.functions) != sorted(b.functions):
        return f"functions: {sorted(a.functions)} != {sorted(b.functions)}"
    for name in sorted(a.functions):
        fa, fb = a.functions[name], b.functions[name]
        path = f"functions[{name!r}]"
        if fa.opset != fb.opset:
            return f"{path}.opset: {fa.opset!r} != {fb.opset!r}"
        d = block_diff(fa.block, fb.block, path)
        if d:
            return d
    return None


def assert_programs_equal(a: Program, b: Program) -> None:
    """AssertionError naming the first mismatch path when the programs differ."""
    d = structural_diff(a, b)
    if d is not None:
        raise AssertionError(f"programs differ at {d}")
