"""What changed between two programs: structural facts plus a text diff.

Ops are matched by (function, op name). An op present only in the new
program was added, only in the old one removed; a matched op whose input
wiring differs was rewired; a matched const whose value differs is a
constant change, summarised numerically (max / mean abs difference, the
fraction of elements that changed).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from ir import Program
from ir.digest import tensor_digest
from pipeline.instruments import program_text


class Rewiring(NamedTuple):
    function: str
    op: str
    input: str
    old: str
    new: str


class ConstChange(NamedTuple):
    function: str
    name: str
    old_type: str
    new_type: str
    max_abs_diff: Optional[float]  # None when the shapes or kinds differ
    mean_abs_diff: Optional[float]
    changed_fraction: Optional[float]

    def __str__(self) -> str:
        if self.max_abs_diff is None:
            return f"{self.name}: {self.old_type} -> {self.new_type}"
        return (f"{self.name}: {self.old_type}, max |d| {self.max_abs_diff:.3g}, mean |d| "
                f"{self.mean_abs_diff:.3g}, {100 * self.changed_fraction:.1f}% of elements changed")


@dataclass(frozen=True)
class ProgramDiff:
    added: tuple  # (function, op name, op type)
    removed: tuple
    rewired: tuple  # Rewiring
    constants_changed: tuple  # ConstChange
    text: str  # unified diff of the text forms

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.rewired or self.constants_changed or self.text)

    def __str__(self) -> str:
        lines = [f"+ {t} {n}" for _f, n, t in self.added] + [f"- {t} {n}" for _f, n, t in self.removed]
        lines += [f"~ {r.op}.{r.input}: {r.old} -> {r.new}" for r in self.rewired]
        lines += [f"= {c}" for c in self.constants_changed]
        return "\n".join(lines) or "(no change)"


def _ops(program: Program) -> dict:
    return {(f.name, op.name): op for f, op in program.walk()}


def _wiring(op) -> dict:
    return {k: ",".join(x.name for x in v) if isinstance(v, tuple) else v.name for k, v in op.inputs.items()}


def _rewirings(fname, old, new) -> list:
    a, b = _wiring(old), _wiring(new)
    return [Rewiring(fname, new.name, k, a.get(k, "-"), b.get(k, "-"))
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _type_of(op) -> str:
    return str(op.outputs[0].type) if op.outputs else "?"


def _const_change(fname, old, new) -> Optional[ConstChange]:
    va, vb = old.attrs.get("val"), new.attrs.get("val")
    if va is None or vb is None:
        return None
    same_type = _type_of(old) == _type_of(new)
    if same_type and va.dtype == vb.dtype and tensor_digest(va) == tensor_digest(vb):
        return None
    if va.shape != vb.shape or va.dtype.kind not in "fiub" or vb.dtype.kind not in "fiub":
        return ConstChange(fname, new.name, _type_of(old), _type_of(new), None, None, None)
    d = np.abs(va.astype(np.float64) - vb.astype(np.float64))
    return ConstChange(fname, new.name, _type_of(old), _type_of(new), float(d.max(initial=0.0)),
                       float(d.mean()) if d.size else 0.0, float(np.count_nonzero(d) / max(d.size, 1)))


def diff_programs(old: Program, new: Program, context: int = 2) -> ProgramDiff:
    a, b = _ops(old), _ops(new)
    added = tuple((f, n, b[(f, n)].op_type) for f, n in b if (f, n) not in a)
    removed = tuple((f, n, a[(f, n)].op_type) for f, n in a if (f, n) not in b)
    kept = [(k, a[k], b[k]) for k in b if k in a]
    replaced = [(k, x, y) for k, x, y in kept if x.op_type != y.op_type]
    added += tuple((f, n, y.op_type) for (f, n), _x, y in replaced)
    removed += tuple((f, n, x.op_type) for (f, n), x, _y in replaced)
    same_type = [(k, x, y) for k, x, y in kept if x.op_type == y.op_type and x is not y]
    rewired = tuple(r for (f, _n), x, y in same_type for r in _rewirings(f, x, y))
    consts = tuple(c for (f, _n), x, y in same_type if x.op_type == "const"
                   for c in [_const_change(f, x, y)] if c is not None)
    text = "" if old is new or old.digest == new.digest else "".join(difflib.unified_diff(
        program_text(old).splitlines(True), program_text(new).splitlines(True),
        fromfile=f"before {old.digest[:12]}", tofile=f"after {new.digest[:12]}", n=context))
    return ProgramDiff(added, removed, rewired, consts, text)
