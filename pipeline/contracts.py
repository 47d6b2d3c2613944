"""verify="each": every step checked by its stage's own contract (stages/contracts/).

    report = check_step(before, after, stage, stats, samples=8)   # a ContractReport
    report.passed, report.violations, report.summary()

    Pipeline([...]).run(prog, verify="each")                      # this, for every step
    Pipeline([...]).run(prog, verify={"mode": "each", "require_change": True})
    Pipeline([...]).run(prog, verify={"mode": "each", "require_change": ["sparsify_weights"]})

No tolerance comes from the user: an exact stage must give bit-identical outputs, a
`within` stage may move its quantized values by its own k steps, a lossy stage must keep
its promise about every weight (decoded by ir.oracle) and change nothing else. Every
evaluation compares the production quantize / decoder kernels with the oracle's.

Runtime inputs: `inputs=` (a dict or a list of dicts), else `samples` draws of
pipeline.strategies.inputs_for (seeded, so a run is reproducible). A stage without a
contract (one a user wrote) is checked by verify() with the run's options instead, as
before contracts existed; so is every step when the options name a tolerance (rtol, atol,
snr_db) together with "contracts": False.

Checking never raises for what it finds: a check that fails while reading the new program (an
oracle or interpreter error, a layout no check expected) is a violation ("checkable") naming the
stage and the error; a step whose output breaks an IR rule (ir.validate between steps) fails as
BrokenContractOutput, both an InvalidStepOutput and an EquivalenceError naming the step. A stage
that raises is still the stage's error (StageFailed).

require_change (default False): True, or the names of stages / step indices that must
change the program. Off by default because a pipeline legitimately holds stages that do
not apply to a given program; the report checks (a stage's stats must match what it did)
are always on and cannot fail on correct code. See stages.contracts for what each checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from ir import Program
from stages.contracts import Violation, check_step as check_stage_step, contract_of

DEFAULT_SAMPLES = 8


@dataclass(frozen=True)
class ContractReport:
    passed: bool
    samples: int
    contract: str
    violations: tuple = ()
    stats: Mapping = field(default_factory=dict, repr=False)
    reason: str = ""

    def summary(self) -> str:
        if self.passed:
            return f"passed: {self.contract} over {self.samples} samples"
        shown = "; ".join(map(str, self.violations[:4]))
        more = f" (+{len(self.violations) - 4} more)" if len(self.violations) > 4 else ""
        return f"FAILED ({self.contract}): {shown}{more}"


def draw_inputs(program: Program, samples: int = DEFAULT_SAMPLES, seed: int = 0, function: str = "main",
                dims=None) -> list:
    """`samples` input dicts for `function`, drawn by hypothesis from pipeline.strategies (the
    model's domain respected; `dims`: sizes of symbolic dimensions)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from pipeline.strategies import inputs_for

    if function not in program.functions:
        return []
    drawn: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=samples, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.generate,))
    @given(inputs_for(program, function, dims=dims))
    def collect(inputs):
        drawn.append(inputs)

    collect()
    return drawn[:samples]


def runnable_dims(program: Program, samples: int, seed: int, dims=None, function: str = "main") -> dict:
    """`dims`, plus sizes for the free symbolic dims when the program fails on every input drawn
    without them (an STFT front end needs more samples than the small drawn sizes): found by
    verify's probe, so verify() and verify="each" run a model on the same sizes."""
    from ir.interpret import evaluate
    from pipeline.strategies import symbols_of
    from pipeline.verify import probe_dims, RunFailed

    dims = dict(dims or {})
    free = [s for s in symbols_of(program.functions[function]) if s not in dims]
    if not free or any(_runs(evaluate, program, one) for one in draw_inputs(program, samples, seed, dims=dims)):
        return dims

    def reference(inputs):
        if not _runs(evaluate, program, inputs):
            raise RunFailed("the program fails on this input")
    return {**dims, **(probe_dims(reference, program, function, dims, free) or {})}


def _runs(evaluate, program: Program, inputs) -> bool:
    try:
        evaluate(program, inputs)
    except Exception:  # noqa: BLE001 - any failure on an input: try other sizes
        return False
    return True


def _as_list(program: Program, inputs, function: str = "main") -> Optional[list]:
    """The feeds of each evaluation, read as verify() reads `inputs` (pipeline.samples)."""
    if inputs is None:
        return None
    from pipeline.samples import batches

    return batches(program.functions[function], inputs)


def requires_change(require_change, stage, index: Optional[int]) -> bool:
    if isinstance(require_change, bool) or require_change is None:
        return bool(require_change)
    if isinstance(require_change, (str, int)):
        require_change = (require_change,)
    return getattr(stage, "name", None) in require_change or (index is not None and index in require_change)


def check_step(before: Program, after: Program, stage, stats=None, *, samples: int = DEFAULT_SAMPLES,
               inputs=None, seed: int = 0, require_change=False, index: Optional[int] = None,
               dims=None) -> ContractReport:
    """The step before -> after checked by `stage`'s contract (see the module docstring)."""
    contract = contract_of(stage)
    changed = after is not before and after.digest != before.digest
    needs_inputs = contract is not None and changed and "main" in before.functions
    drawn = []
    if needs_inputs:
        given = _as_list(before, inputs)
        drawn = given if given is not None else draw_inputs(before, samples, seed,
                                                            dims=runnable_dims(before, samples, seed, dims))
    try:
        violations = check_stage_step(before, after, stage, stats, drawn,
                                      require_change=requires_change(require_change, stage, index))
    except Exception as e:  # noqa: BLE001 - checking the new program failed: that is the finding
        violations = [Violation("checkable", f"stage {getattr(stage, 'name', 'stage')!r}",
                                f"checking its output raised {type(e).__name__}: {e}")]
    what = contract.describe() if contract is not None else "no contract"
    return ContractReport(not violations, len(drawn), what, tuple(violations), stats or {},
                          "; ".join(map(str, violations[:2])))


def check_kernels(program: Program, *, samples: int = DEFAULT_SAMPLES, inputs=None, seed: int = 0,
                  dims=None) -> list:
    """Violations where the production quantize / decoder kernels disagree with ir.oracle while
    `program` runs on the inputs (verify="final" runs this on the result)."""
    from ir import oracle
    from ir.interpret import EvaluationError
    from stages.contracts import Violation as V

    if "main" not in program.functions:
        return []
    given = _as_list(program, inputs)
    found, seen, cache = [], set(), {}
    for one in given if given is not None else draw_inputs(program, samples, seed, dims=dims):
        try:
            run = oracle.evaluate(program, one, cache=cache)
        except EvaluationError:
            continue
        for d in run.disagreements:
            if (d.op_name, d.output) not in seen:
                seen.add((d.op_name, d.output))
                found.append(V("kernel", f"op {d.op_type} {d.op_name!r}", str(d)))
    return found


__all__ = ["check_kernels", "ContractReport", "Violation", "check_step", "draw_inputs", "requires_change", "DEFAULT_SAMPLES"]
