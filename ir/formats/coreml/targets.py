"""Core ML deployment targets, as one table.

A function's `opset` is its deployment target ("iOS17"); the model file
records it twice: as the model's specification version and as the name of
each MIL function's opset ("CoreML7").
"""
from __future__ import annotations

from typing import NamedTuple


class Target(NamedTuple):
    name: str  # what Function.opset holds, and what users pass (--target iOS18)
    spec_version: int  # Model.specificationVersion
    mil_opset: str  # the MIL function's opset name


TARGETS = {t.name: t for t in (
    Target("iOS15", 6, "CoreML5"),
    Target("iOS16", 7, "CoreML6"),
    Target("iOS17", 8, "CoreML7"),
    Target("iOS18", 9, "CoreML8"),
    Target("iOS26", 10, "CoreML9"),
)}
BY_MIL_OPSET = {t.mil_opset: t for t in TARGETS.values()}
ORDER = tuple(TARGETS)


class TargetError(ValueError):
    """A deployment target that Core ML (or this version of weightpress) does not have."""


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise TargetError(f"unknown Core ML deployment target {name!r}; one of {', '.join(ORDER)}") from None


def of_mil_opset(opset: str) -> Target:
    try:
        return BY_MIL_OPSET[opset]
    except KeyError:
        raise TargetError(f"unknown MIL opset {opset!r}; this version reads "
                          f"{', '.join(sorted(BY_MIL_OPSET))}") from None


def at_least(name: str, floor: str) -> bool:
    return target(name).spec_version >= target(floor).spec_version
