"""Equivalence checks for stages: the interpreter is the oracle.

    from tests.stages.equivalence import assert_equivalent, inputs_for

    @given(data=st.data())
    def test_stage_keeps_outputs(data):
        prog = ...
        assert_equivalent(prog, my_stage, data.draw(inputs_for(prog)))          # exact
        assert_equivalent(prog, my_stage, inputs, atol=1e-3, why="fp16 rounding")

`assert_equivalent` runs the stage once and checks, in this order:
  1. the stage did not mutate its input (digest before == digest after the call),
  2. the output validates (when `ir.validate` exists),
  3. every function that was given inputs produces the same outputs (same names,
     dtypes and shapes; values equal exactly, or within atol / rtol),
and returns the stage's output so a test can check more.

Run the tests from the repository root (`python -m pytest`), so `tests.stages`
is importable.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np
from hypothesis import strategies as st

from ir import Program
from ir.interpret import evaluate

try:  # the validator may land after this helper; use it when it exists
    from ir.validate import validate as _validate
except ImportError:  # pragma: no cover - depends on what the tree holds
    _validate = None


def _per_function(program: Program, inputs: Mapping) -> dict:
    """{function name: {input name: array}}; a plain input dict means 'main'."""
    if inputs and all(isinstance(v, Mapping) for v in inputs.values()):
        unknown = set(inputs) - set(program.functions)
        if unknown:
            raise ValueError(f"inputs given for unknown functions {sorted(unknown)}")
        return dict(inputs)
    return {"main": dict(inputs)}


def _compare(fname: str, before: dict, after: dict, atol: float, rtol: float, why: str) -> None:
    assert list(before) == list(after), f"{fname}: output names changed {list(before)} -> {list(after)}"
    for name in before:
        b, a = np.asarray(before[name]), np.asarray(after[name])
        assert a.dtype == b.dtype, f"{fname}.{name}: dtype changed {b.dtype} -> {a.dtype}"
        assert a.shape == b.shape, f"{fname}.{name}: shape changed {b.shape} -> {a.shape}"
        if atol == 0 and rtol == 0:
            ok = np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        else:
            ok = np.allclose(a.astype(np.float64), b.astype(np.float64), atol=atol, rtol=rtol, equal_nan=True)
        if not ok:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            raise AssertionError(
                f"{fname}.{name}: outputs differ (max abs diff {np.nanmax(diff) if diff.size else 0}, "
                f"allowed atol={atol} rtol={rtol}{'; ' + why if why else ''})")


def assert_equivalent(program: Program, stage: Callable, inputs: Mapping, *, atol: float = 0.0,
                      rtol: float = 0.0, why: str = "") -> Program:
    """Run `stage` on `program` and check purity, validity and equal interpreter outputs.

    `inputs` is {input name: array} for "main", or {function name: {input name: array}}.
    With atol = rtol = 0 (the default) outputs must be bit-identical; otherwise say
    in `why` which rounding the stage is allowed to change.
    """
    digest = program.digest
    after = stage(program)
    assert isinstance(after, Program), f"stage returned {type(after).__name__}, not a Program"
    assert program.digest == digest, "the stage mutated its input program"
    from ir.digest import program_digest  # recompute: the memo would hide a mutation
    assert program_digest(program) == digest, "the stage mutated its input program"
    if _validate is not None:
        _validate(after)
    for fname, ins in _per_function(program, inputs).items():
        want = evaluate(program, ins, function=fname)
        got = evaluate(after, ins, function=fname)
        _compare(fname, want, got, atol, rtol, why)
    return after


def assert_idempotent(program: Program, stage: Callable) -> Program:
    """stage(stage(p)) has the same digest as stage(p), and a second run changes nothing."""
    once = stage(program)
    twice = stage(once)
    assert twice.digest == once.digest, "applying the stage twice differs from applying it once"
    return once


# ---- inputs -----------------------------------------------------------------

def _array_for(var_type, low: float, high: float):
    dt = var_type.dt
    shape = tuple(d if isinstance(d, int) else 2 for d in var_type.shape)
    n = int(np.prod(shape)) if shape else 1
    if dt.is_float:
        width = 16 if dt.name in ("fp16", "bf16") else 32
        elems = st.floats(low, high, allow_nan=False, allow_infinity=False, width=width)
    elif dt.is_integer:
        elems = st.integers(int(max(dt.min, low)), int(min(dt.max, high)))
    else:
        elems = st.booleans()
    return st.lists(elems, min_size=n, max_size=n).map(
        lambda xs: np.asarray(xs, dtype=dt.storage).reshape(shape))


def inputs_for(program: Program, function: str = "main", *, low: float = -8.0, high: float = 8.0,
               int_range: Optional[tuple] = None):
    """A strategy for {input name: array} matching a function's inputs (symbolic dims become 2).
    Floats are drawn in [low, high]; integers in their dtype's range (or int_range)."""
    fn = program.functions[function]
    parts = {}
    for v in fn.inputs:
        dt = v.type.dt
        if dt.is_integer:
            lo, hi = int_range or (max(dt.min, -2**31), min(dt.max, 2**31 - 1))
        else:
            lo, hi = low, high
        parts[v.name] = _array_for(v.type, lo, hi)
    return st.fixed_dictionaries(parts)


__all__ = ["assert_equivalent", "assert_idempotent", "inputs_for", "op_types", "find_op"]


# ---- reading programs in tests -------------------------------------------------

def op_types(program: Program, function: str = "main", *, consts: bool = False) -> list:
    """Op types of a function's top block, in order (consts left out unless asked)."""
    return [op.op_type for op in program.functions[function].ops if consts or op.op_type != "const"]


def find_op(program: Program, name: str, function: str = "main"):
    """The op called name anywhere in the function (nested blocks included)."""
    for op in program.functions[function].block.walk():
        if op.name == name:
            return op
    raise KeyError(name)
