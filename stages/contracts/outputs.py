"""The contract on a step's outputs over runtime inputs, every evaluation by ir.oracle."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ir import oracle
from ir.core import Program
from stages.contracts.kinds import Contract, Violation, effective
from stages.contracts.weights import weight_cases


def _outputs_problems(ref: dict, got: dict, rtol: float, promise: str, eps: float = 0.0) -> list:
    problems = []
    for (name, r), g in zip(ref.items(), got.values()):
        r, g = np.asarray(r), np.asarray(g)
        if r.dtype != g.dtype or r.shape != g.shape:
            problems.append(Violation(promise, f"output {name!r}", f"{g.dtype}{list(g.shape)} instead of "
                                                                  f"{r.dtype}{list(r.shape)}"))
            continue
        if (rtol or eps) and r.dtype.kind == "f":
            tol = max(rtol, eps * float(np.finfo(r.dtype).eps))
            r64, g64 = r.astype(np.float64), g.astype(np.float64)
            fin = np.isfinite(r64)
            scale = float(np.max(np.abs(r64[fin]))) if fin.any() else 0.0
            same = (r64 == g64) | (np.isnan(r64) & np.isnan(g64))
            with np.errstate(invalid="ignore"):
                bad = ~same & ~(np.abs(r64 - g64) <= tol * scale)
            why = None if not bad.any() else (f"{int(bad.sum())} element(s) beyond rtol {tol:g} of "
                                              f"max |output| {scale:.6g}")
        else:
            why = oracle.differs(r, g, ulps=0)
        if why is not None:
            problems.append(Violation(promise, f"output {name!r}", why))
    return problems


def _kernel_problems(*runs) -> list:
    seen, out = set(), []
    for run in runs:
        for d in run.disagreements:
            key = (d.op_type, d.op_name, d.output)
            if key not in seen:
                seen.add(key)
                out.append(Violation("kernel", f"op {d.op_type} {d.op_name!r}", str(d)))
    return out


def _quantized_names(fn, op_type: str) -> list:
    return [op.outputs[0].name for op in fn.block.walk() if op.op_type == op_type]


def check_outputs(before: Program, after: Program, contract: Contract, inputs, stats=None,
                  function: str = "main", stage=None, found=None, caches: Optional[dict] = None) -> list:
    """The contract on the outputs of `function` over `inputs` (a list of input dicts); every
    evaluation by ir.oracle, kernel disagreements included. Inputs the reference program
    cannot run on are skipped."""
    from ir.interpret import EvaluationError

    contract = effective(contract)
    if contract is None or function not in before.functions or function not in after.functions:
        return []
    cache_b, cache_a = (caches or {}).get(function, ({}, {}))
    pins_lossy = _lossy_pins(found or weight_cases(before, after, stage, stats), function) \
        if contract.kind == "lossy" else {}
    problems: list = []
    evaluated, last_error = 0, None
    for inputs_one in inputs:
        try:
            rb = oracle.evaluate(before, inputs_one, function, cache=cache_b,
                                 pin=pins_lossy if contract.kind == "lossy" else None)
        except EvaluationError as e:
            last_error = e
            continue
        evaluated += 1
        try:
            ra = oracle.evaluate(after, inputs_one, function, cache=cache_a)
        except (EvaluationError, ValueError, TypeError, IndexError) as e:  # OpError too: a broken program
            problems.append(Violation(contract.describe(), "the new program", f"fails where the old one runs: {e}"))
            break
        found = _kernel_problems(rb, ra)
        if contract.kind == "within":
            found += _within(after, contract, rb, ra, inputs_one, function, cache_a)
        else:
            found += _outputs_problems(rb.outputs, ra.outputs, 0.0, contract.describe())
        if found:
            return problems + found
    if inputs and not evaluated:
        problems.append(Violation(contract.describe(), "the old program",
                                  f"fails on every one of the {len(inputs)} inputs, so nothing was checked "
                                  f"({last_error})"))
    return problems


def _within(after, contract, rb, ra, inputs_one, function, cache_a) -> list:
    promise = contract.describe()
    pins, problems = {}, []
    for name in _quantized_names(after.functions[function], contract.values):
        if name not in rb.values or name not in ra.values:
            continue
        b, a = np.asarray(rb.values[name]), np.asarray(ra.values[name])
        if b.shape != a.shape:
            continue
        moved = np.abs(a.astype(np.int64) - b.astype(np.int64)) if a.dtype.kind in "iu" else None
        if moved is None or not moved.any():
            continue
        if moved.max() > contract.steps:
            problems.append(Violation(promise, f"quantized value {name!r}",
                                      f"moved by {int(moved.max())} step(s), more than {contract.steps}"))
        pins[name] = b
    if problems:
        return problems
    if pins:
        ra = oracle.evaluate(after, inputs_one, function, pin=pins, cache=cache_a)
    return _outputs_problems(rb.outputs, ra.outputs, contract.rtol, promise, contract.eps)


def _lossy_pins(found, function) -> dict:
    """{weight name in before: its decoded value after}, for the weights the step compressed."""
    cases, _ = found
    return {c.name: np.asarray(c.decoded).astype(np.asarray(c.original).dtype, copy=False)
            for c in cases if c.function == function and np.shape(c.decoded) == np.shape(c.original)}
