"""Run one op on constant inputs through the builder and the interpreter."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ir.builder import program
from ir.interpret import evaluate


class Typed(NamedTuple):
    """A constant with an explicit IR dtype (sub-byte data, uint1 masks)."""

    val: object
    dtype: str


def _const(b, key, value):
    if isinstance(value, Typed):
        return b.const(value.val, name=key, dtype=value.dtype)
    return value  # the builder turns plain values into consts


def build(op_type, **inputs):
    """A program whose one op has every input constant; returns (program, op)."""

    @program(inputs={})
    def prog(b):
        ins = {k: (tuple(_const(b, f"{k}{i}", x) for i, x in enumerate(v)) if isinstance(v, list)
                   and v and isinstance(v[0], (np.ndarray, Typed)) else _const(b, k, v))
               for k, v in inputs.items()}
        return getattr(b, op_type)(name="out", **ins)

    op = [o for o in prog.main.ops if o.name == "out"][0]
    return prog, op


def run(op_type, **inputs):
    """The op's output array (or tuple of arrays for several outputs)."""
    prog, op = build(op_type, **inputs)
    outs = evaluate(prog, {})
    vals = tuple(outs[v.name] for v in op.outputs)
    return vals[0] if len(vals) == 1 else vals


def out_types(op_type, **inputs):
    return [v.type for v in build(op_type, **inputs)[1].outputs]


def optional_module(name: str):
    """The module, or None when it is not installed: cross-check tests skip on their
    own (a module-level importorskip would also skip a file's hand-checked tests)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def requires(*modules, reason: str):
    import pytest

    return pytest.mark.skipif(any(m is None for m in modules), reason=reason)
