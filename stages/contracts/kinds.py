"""The contract kinds (exact, within, lossy, composed), their composition, and a Violation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Contract:
    kind: str                             # "exact" | "within" | "lossy" | "composed"
    steps: int = 0                        # within: steps the named quantized values may move
    values: str = "quantize"              # within: the op type whose outputs are those values
    rtol: float = 0.0                     # within: float outputs may move by rtol * max |output|
    eps: float = 0.0                      # within: ... or by eps machine epsilons of the output's dtype
    bound: Optional[Callable] = None      # lossy: bound(WeightCase) -> list of problems (str)
    parts: tuple = ()                     # composed: the names of the stages it runs
    why: str = ""
    leaves: Optional[Callable] = None     # postcondition: leaves(program) -> [site the stage missed]

    def describe(self) -> str:
        if self.kind == "within":
            extra = f", floats within rtol {self.rtol:g}" if self.rtol else ""
            extra += f" or {self.eps:g} eps of their dtype" if self.eps else ""
            return f"within {self.steps} step(s) of the {self.values} values{extra}"
        if self.kind == "lossy":
            return f"lossy ({getattr(self.bound, '__name__', 'bound')})"
        if self.kind == "composed":
            return f"composed of {', '.join(self.parts)}"
        return self.kind


def exact(why: str = "", leaves: Optional[Callable] = None) -> Contract:
    return Contract("exact", why=why, leaves=leaves)


def within(k: int, values: str = "quantize", rtol: float = 0.0, eps: float = 0.0, why: str = "",
           leaves: Optional[Callable] = None) -> Contract:
    """`rtol` / `eps`: the float outputs may move by max(rtol, eps * machine epsilon of their
    dtype) * max |output| (a reordered computation rounds differently: fp16 by far more)."""
    if k < 0 or rtol < 0 or eps < 0:
        raise ValueError(f"within({k}, rtol={rtol}, eps={eps}): need k, rtol and eps >= 0")
    return Contract("within", steps=int(k), values=values, rtol=float(rtol), eps=float(eps), why=why,
                    leaves=leaves)


def lossy(bound: Callable, why: str = "") -> Contract:
    return Contract("lossy", bound=bound, why=why)


def composed(*stage_names: str, why: str = "") -> Contract:
    return Contract("composed", parts=tuple(stage_names), why=why)


def effective(contract: Optional[Contract]) -> Optional[Contract]:
    """A composed contract resolved from its parts' contracts (None if a part has none)."""
    if contract is None or contract.kind != "composed":
        return contract
    from stages import get

    return _compose([get(n).contract for n in dict.fromkeys(contract.parts)], contract.why)


def _compose(contracts, why: str = "") -> Optional[Contract]:
    parts = [effective(c) for c in contracts]
    if any(p is None for p in parts):
        return None
    if any(p.kind == "lossy" for p in parts):
        bounds = tuple(p.bound for p in parts if p.kind == "lossy")
        return lossy(bounds[0] if len(bounds) == 1 else _all_of(bounds), why=why)
    steps = sum(p.steps for p in parts if p.kind == "within")
    rtol = max((p.rtol for p in parts if p.kind == "within"), default=0.0)
    eps = max((p.eps for p in parts if p.kind == "within"), default=0.0)
    if steps == 0 and rtol == 0.0 and eps == 0.0:
        return exact(why)
    return within(steps, rtol=rtol, eps=eps, why=why)


def _all_of(bounds):
    def every_bound(case):
        return [p for b in bounds for p in b(case)]
    return every_bound


def contract_of(stage) -> Optional[Contract]:
    """The effective contract of a (bound) stage. A combinator (a stage with no contract of its
    own whose `steps` parameter is a pipeline) has its steps' contracts composed, unless one
    of them is lossy (its weight bounds need that stage's own parameters) or has none."""
    own = getattr(stage, "contract", None)
    if own is not None:
        return effective(own)
    steps = getattr(stage, "params", {}).get("steps")
    inner = getattr(steps, "stages", None)
    if not inner:
        return None
    found = [contract_of(s) for s in inner]
    if any(c is None or c.kind == "lossy" for c in found):
        return None
    return _compose(found, f"the steps of {stage.name}")


@dataclass(frozen=True)
class Violation:
    promise: str   # "exact", "within 1 step(s) ...", "affine", "kernel", "report", ...
    where: str     # "output 'y'", "weight 'w'", "op quantize 'q'", "pattern 'p'"
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail} (promise: {self.promise})"
