"""check_step: every check of one step by its stage's own contract."""
from __future__ import annotations

import inspect

from ir.core import Program
from stages.contracts.kinds import Violation, contract_of, effective
from stages.contracts.outputs import check_outputs
from stages.contracts.postconditions import no_new_bad_scales
from stages.contracts.report import check_report
from stages.contracts.weights import check_weights, weight_cases


def check_step(before: Program, after: Program, stage, stats=None, inputs=(), require_change=False,
               contract=None) -> list:
    """Every check of one step by the stage's own contract: the report (no silent no-op), the
    weights (lossy bounds), and the outputs over `inputs` (none given: weights and report
    only). Returns the violations, empty when the step keeps its promise."""
    contract = effective(contract) if contract is not None else contract_of(stage)
    problems = check_report(before, after, stage, stats, require_change)
    name = f"stage {getattr(stage, 'name', 'stage')!r}"
    if contract is not None and contract.leaves is not None:
        problems += [Violation("postcondition", name, p) for p in _postcondition(contract.leaves, after, before)]
    if contract is None or after is before:
        return problems
    problems += [Violation("finite positive scales", name, p) for p in no_new_bad_scales(after, before)]
    caches: dict = {}
    found = weight_cases(before, after, stage, stats, caches) if contract.kind == "lossy" else None
    problems += check_weights(before, after, stage, stats, contract, found)
    inputs = list(inputs or ())
    if inputs:
        problems += check_outputs(before, after, contract, inputs, stats, stage=stage, found=found, caches=caches)
    return problems


def _postcondition(leaves, after: Program, before: Program) -> list:
    """leaves(after), or leaves(after, before) for a postcondition about what the step built."""
    try:
        takes_before = len(inspect.signature(leaves).parameters) >= 2
    except (TypeError, ValueError):
        takes_before = False
    return list(leaves(after, before) if takes_before else leaves(after))
