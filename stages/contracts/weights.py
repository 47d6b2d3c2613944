"""What a lossy bound sees: one WeightCase per weight a step compressed (or decompressed),
decoded before and after by ir.oracle; the reported error figures; check_weights."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from ir import oracle
from ir.core import Program
from stages.contracts.graph import _renamed, _split_key
from stages.contracts.kinds import Violation, contract_of


@dataclass
class WeightCase:
    """One weight a lossy step compressed (or decompressed).

    name: the weight's value name in `before` (the stats key, without a function prefix);
    original: its value before (decoded by the oracle); decoded: the value its readers get
    after (decoded by the oracle); after_name: that value's name in `after`; params: the
    stage's parameters; stats: the stage's record of this weight; after / values_after:
    the function after and its const values (to read the emitted form's parameters)."""
    name: str
    function: str
    original: np.ndarray
    decoded: np.ndarray
    after_name: str
    params: Mapping
    stats: Mapping
    after: object
    values_after: dict
    values_before: dict
    before: object


def weight_cases(before: Program, after: Program, stage, stats, caches: Optional[dict] = None) -> tuple:
    """(WeightCase for every weight the stats report compressed / decompressed, problems).

    `caches`: {function name: (cache before, cache after)} for ir.oracle, filled here and
    reused by the output checks so each decoder runs (and is compared) once per program."""
    weights = (stats or {}).get("weights", {}) or {}
    cases, problems, consts = [], [], {}
    caches = {} if caches is None else caches
    params = dict(getattr(stage, "all_params", {}) or {})
    for key, st in weights.items():
        if "skipped" in st:
            continue
        fname, name = _split_key(key)
        if fname not in before.functions or fname not in after.functions:
            problems.append(Violation("report", f"weight {key!r}", f"function {fname!r} is missing"))
            continue
        if fname not in consts:
            cb_cache, ca_cache = caches.setdefault(fname, ({}, {}))
            consts[fname] = (oracle.const_values(before, fname, cache=cb_cache),
                             oracle.const_values(after, fname, cache=ca_cache))
        (cb, ca) = consts[fname]
        new_name = _renamed(before.functions[fname], after.functions[fname], name)
        if name not in cb.values or new_name is None or new_name not in ca.values:
            problems.append(Violation("report", f"weight {key!r}",
                                      "reported compressed, but its value cannot be found before and after"))
            continue
        cases.append(WeightCase(name, fname, cb.values[name], ca.values[new_name], new_name, params, st,
                                after.functions[fname], ca.values, cb.values, before.functions[fname]))
    for fname, (cb, ca) in consts.items():
        for d in cb.disagreements + ca.disagreements:
            problems.append(Violation("kernel", f"op {d.op_type} {d.op_name!r}", str(d)))
    return cases, problems


def _input(case, op, name):
    v = op.inputs.get(name) if hasattr(op.inputs, "get") else None
    return None if v is None else case.values_after.get(v.name)


def figure_problems(case: WeightCase) -> list:
    """The error figures the stage reports for a weight are those of its decoded value (to the
    precision stages/compression/figures.py states: 2**-24 relative for the maximum, 2e-6 for
    the mean square; a little more room here)."""
    st = case.stats
    if "max_abs_error" not in st or np.shape(case.decoded) != np.shape(case.original):
        return []
    err = np.abs(np.asarray(case.decoded, np.float64) - np.asarray(case.original, np.float64))
    if not np.all(np.isfinite(err)):
        return []
    problems = []
    actual = float(err.max()) if err.size else 0.0
    reported = float(st["max_abs_error"])
    if abs(reported - actual) > 1e-5 * actual + 1e-30:
        problems.append(f"reports max |error| {reported:.9g}, the decoded weight has {actual:.9g}")
    if "mse" in st and err.size:
        mse = float(np.mean(err * err))
        if abs(float(st["mse"]) - mse) > 1e-4 * mse + 1e-30:
            problems.append(f"reports mse {float(st['mse']):.9g}, the decoded weight has {mse:.9g}")
    return problems


def check_weights(before: Program, after: Program, stage, stats, contract=None, found=None) -> list:
    """The lossy bound on every weight the stats report compressed, decoded by the oracle
    (`found`: weight_cases' result when the caller has it already)."""
    contract = contract or contract_of(stage)
    if contract is None or contract.kind != "lossy":
        return []
    cases, problems = found or weight_cases(before, after, stage, stats)
    problems = list(problems)
    for case in cases:
        where = f"weight {case.name!r}"
        problems += [Violation("reported figures", where, p) for p in figure_problems(case)]
        for p in contract.bound(case):
            p = p[len(where) + 2:] if p.startswith(where + ": ") else p
            problems.append(Violation(getattr(contract.bound, "__name__", "lossy"), where, p))
    return problems
