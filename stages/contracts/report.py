"""No silent no-op: a stage's report must match the program it returned."""
from __future__ import annotations

import numpy as np

from ir.core import Program
from stages.contracts.graph import _consumers, _producers, _split_key
from stages.contracts.kinds import Violation
from stages.contracts.selection import LARGE, selection_problems


def check_report(before: Program, after: Program, stage, stats, require_change=False) -> list:
    """No silent no-op: the stage's report matches the program (see the module docstring)."""
    stats = stats or {}
    name = getattr(stage, "name", "stage")
    problems = []
    changed = after is not before and after.digest != before.digest
    patterns = stats.get("patterns")
    if patterns:
        for pname, c in patterns.items():
            if int(c.get("rewritten", 0)) > int(c.get("matched", 0)):
                problems.append(Violation("report", f"pattern {pname!r}",
                                          f"rewritten {c.get('rewritten')} > matched {c.get('matched')}"))
        total = sum(int(c.get("rewritten", 0)) for c in patterns.values())
        if changed and total == 0:
            problems.append(Violation("report", f"stage {name!r}", "changed the program but reports no rewrite"))
        if after is before and total > 0:  # "changed" is `new is not old` (DESIGN.md)
            problems.append(Violation("report", f"stage {name!r}",
                                      f"reports {total} rewrite(s) but returned the program unchanged"))
    weights = stats.get("weights")
    if weights is not None and name != "decompress_weights":
        problems += _weight_report(before, after, name, weights, changed)
        if name in _WEIGHT_STAGES:
            params = dict(getattr(stage, "all_params", {}) or {})
            problems += [Violation("selection", where, detail)
                         for where, detail in selection_problems(before, params, weights)]
    if require_change and not changed:
        detail = "required to change the program, but returned it unchanged"
        if patterns:
            detail += "; patterns: " + ", ".join(f"{k} matched {v.get('matched')} rewritten {v.get('rewritten')}"
                                                 for k, v in patterns.items())
        if weights:
            reasons = sorted({str(v.get('skipped')) for v in weights.values() if 'skipped' in v})
            detail += f"; {len(weights)} weight(s) skipped: " + "; ".join(reasons[:3])
        problems.append(Violation("require_change", f"stage {name!r}", detail))
    return problems


def _weight_report(before, after, name, weights, changed) -> list:
    problems = []
    compressed = [k for k, v in weights.items() if "skipped" not in v]
    if compressed and not changed:
        problems.append(Violation("report", f"stage {name!r}",
                                  f"reports {len(compressed)} weight(s) compressed but returned the program unchanged"))
    if changed and not compressed and not before.functions.keys() - after.functions.keys() \
            and name in ("affine_quantize_weights", "palettize_weights", "sparsify_weights"):
        problems.append(Violation("report", f"stage {name!r}", "changed the program but reports no weight compressed"))
    if name in _WEIGHT_STAGES:
        for key in _unreported(before, weights):
            problems.append(Violation("report", f"weight {key!r}",
                                      f"a float weight of {name} is neither compressed nor skipped with a reason"))
    for key, v in weights.items():
        if "skipped" in v and not str(v["skipped"]).strip():
            problems.append(Violation("report", f"weight {key!r}", "skipped without a reason"))
    consts_b = {}
    for key, v in weights.items():
        fname, wname = _split_key(key)
        if fname not in before.functions or fname not in after.functions:
            continue
        if fname not in consts_b:
            consts_b[fname] = (_producers(before.functions[fname]), _producers(after.functions[fname]))
        pb, pa = consts_b[fname]
        if "skipped" in v:
            if wname in pb and wname in pa and pb[wname] is not pa[wname] and _value_of(pb[wname]) is not None \
                    and not _same_value(pb[wname], pa[wname]):
                problems.append(Violation("report", f"weight {key!r}", "reported skipped, but it changed"))
        elif wname in pb and wname in pa and pa[wname].op_type == "const" and pb[wname].op_type == "const" \
                and _same_value(pb[wname], pa[wname]):
            problems.append(Violation("report", f"weight {key!r}", "reported compressed, but it is still the same const"))
    return problems


_WEIGHT_STAGES = ("affine_quantize_weights", "palettize_weights", "sparsify_weights")


_LARGE = LARGE  # the seed's size rule: weights above it are compressed or skipped with a reason


def _unreported(program, weights) -> list:
    """Keys of large float consts read by a plain (non-constexpr) op that the report omits."""
    missing = []
    for fname, fn in program.functions.items():
        readers = _consumers(fn)
        for op in fn.block.walk():
            if op.op_type != "const" or len(op.outputs) != 1:
                continue
            var = op.outputs[0]
            val = var.val
            if val is None or np.asarray(val).dtype.kind != "f" or np.size(val) <= _LARGE:
                continue
            plain = [r for r in readers.get(var.name, []) if not r.op_type.startswith("constexpr_")]
            key = var.name if fname == "main" else f"{fname}/{var.name}"
            if plain and key not in weights:
                missing.append(key)
    return missing


def _value_of(op):
    return op.outputs[0].val if op.op_type == "const" else None


def _same_value(a, b) -> bool:
    va, vb = _value_of(a), _value_of(b)
    if va is None or vb is None:
        return a.op_type == b.op_type
    return va.dtype == vb.dtype and va.shape == vb.shape and np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")
