"""Running a pipeline: the step loop, the cache, verification and instruments.

    Pipeline.run(program, cache=None, verify=None, progress=False, executor=None,
                 instruments=(), validate=True)

- cache: MemoryCache / DiskCache / anything with the cache interface. A step
  whose (input digest, stage key) is cached is not executed, and its programs
  are not even loaded unless something needs them.
- verify: None; "each" (every step by its stage's own contract, pipeline.contracts:
  no tolerance from the user; a stage without a contract by verify() with the
  options given); "final" (the result against the input by verify()); or a dict
  of verify() options plus "mode", and for "each": "samples", "inputs", "seed",
  "require_change" (True, or stage names / step indices that must change the
  program; default False), "contracts" (False: every changed step by verify()).
  A failing check raises EquivalenceError naming the step, the stage and what broke.
- progress: a tqdm bar over steps, and per weight through StageContext.progress.
- executor: see pipeline.executors.
- instruments: see pipeline.instruments.
- validate: True (default) checks every step whose stage returned a new
  program (not when `new is old`, nor for cache hits) with ir.validate; a stage
  that returns an invalid program fails with InvalidStepOutput naming the step
  and the broken rule. The ops a stage built are checked in full; the ops it
  took over unchanged from its input (same objects reading the same values)
  only for where they sit, since nothing else about them changed ("full":
  every op in full, for a pipeline input that was never validated; False: off).
  The cost is recorded per step (Step.validate_seconds), apart from Step.seconds.
"""
from __future__ import annotations

import time
import warnings
from contextlib import ExitStack
from dataclasses import replace, dataclass
from typing import Optional

from pyrsistent import freeze, pmap
from toolz import reduce

from ir import InvalidProgram, Program
from ir.validate import validate as validate_program
from pipeline.errors import (BrokenContractOutput, EquivalenceError, InvalidStepOutput, PipelineError,
                             StageFailed, UncacheableWarning)
from pipeline.instruments import CrashReproducer, ProgressBar, StepEvent, call_hook, weight_progress
from pipeline.trace import ProgramStore, Step, Trace, find_or_recompute

_VERIFY_MODES = ("each", "final")
_CONTRACT_OPTIONS = ("mode", "require_change", "contracts")  # not verify() options


@dataclass(frozen=True)
class _Run:
    """Everything one run shares between its steps."""
    pipeline_spec: str
    store: ProgramStore
    cache: object
    context: object
    verify: Optional[dict]
    instruments: tuple
    input_digest: str
    validate: object = True  # True | False | "full"


def _verify_options(verify) -> Optional[dict]:
    if verify is None or verify is False:
        return None
    if isinstance(verify, str):
        verify = {"mode": verify}
    opts = dict(verify)
    opts.setdefault("mode", "each")
    if opts["mode"] not in _VERIFY_MODES:
        raise PipelineError(f"verify mode {opts['mode']!r}: expected one of {', '.join(_VERIFY_MODES)}")
    return opts


def _validate_option(validate):
    if validate not in (True, False, "full"):
        raise PipelineError(f"validate={validate!r}: expected True, False or 'full'")
    return validate


def stage_key(st) -> Optional[str]:
    key = st.key()
    if key is None:
        warnings.warn(f"stage {st.name!r}: a parameter has no stable key (e.g. a lambda without "
                      "source); it runs uncached", UncacheableWarning, stacklevel=4)
    return key


def _verified(run: _Run, before: Program, after: Program, what: str, index: int, stage):
    """The verify() report of before against after; EquivalenceError naming `what` when it fails."""
    from pipeline.verify import verify as verify_programs

    opts = {k: v for k, v in run.verify.items() if k not in _CONTRACT_OPTIONS}
    report = verify_programs(before, after, **opts)
    if not report.passed:
        raise EquivalenceError(f"{what} broke equivalence: {report.summary()}", index, stage, report)
    return report


def _kernels_agree(run: _Run, program: Program, pipeline, index: int, report) -> None:
    """verify="final" trusts no kernel either: the result's quantize / decoder ops against ir.oracle."""
    from pipeline.contracts import check_kernels

    found = check_kernels(program, samples=min(int(run.verify.get("samples", 8)), 8), inputs=run.verify.get("inputs"),
                          seed=run.verify.get("seed", 0), dims=run.verify.get("dims"))
    if found:
        raise EquivalenceError(f"pipeline {pipeline.spec()}: {'; '.join(map(str, found[:3]))}", index, None, report)


def _check(run: _Run, step: Step, before: Program, after: Program) -> Step:
    report = _verified(run, before, after, f"step {step.index} ({step.spec})", step.index, step.stage)
    return replace(step, verification=report)


def _check_each(run: _Run, step: Step, before, after) -> Step:
    """verify="each" for one step: its stage's contract (pipeline.contracts), or verify() with
    the run's options for a stage that declares none (or with "contracts": False)."""
    from pipeline.contracts import check_step
    from stages.contracts import contract_of

    opts = run.verify
    use_contract = opts.get("contracts", True) and contract_of(step.stage) is not None
    if use_contract or opts.get("require_change"):
        report = check_step(before(), after(), step.stage, step.stats,
                            samples=opts.get("samples", 8), inputs=opts.get("inputs"), seed=opts.get("seed", 0),
                            require_change=opts.get("require_change", False), index=step.index,
                            dims=opts.get("dims"))
        if not report.passed:
            raise EquivalenceError(f"step {step.index} ({step.spec}), stage {step.stage.name!r}, broke its "
                                   f"contract: {report.summary()}", step.index, step.stage, report)
        if use_contract:
            return replace(step, verification=report) if step.changed else step
    return _check(run, step, before(), after()) if step.changed else step


def _execute(run: _Run, st, index: int, program: Program, event: StepEvent):
    try:
        t0 = time.perf_counter()
        result = st.run(program, run.context)
        return result, time.perf_counter() - t0
    except Exception as exc:
        repro = _reproduce(run, event, exc)
        where = f"; reproducer saved to {repro}" if repro else ""
        raise StageFailed(f"step {index} ({event.spec}) raised {type(exc).__name__}: {exc}{where}",
                          index, st, repro) from exc


def _reproduce(run: _Run, event: StepEvent, exc: Exception) -> Optional[str]:
    """Tell the instruments a step failed; the crash reproducer's path, if one saved it."""
    call_hook(run.instruments, "on_error", event, exc)
    repro = [i.last for i in run.instruments if isinstance(i, CrashReproducer)]
    return repro[0] if repro else None


def _validated(run: _Run, st, index: int, event: StepEvent, before: Program, after: Program) -> float:
    """Seconds spent checking `after` against the IR rules (0 when it is the input itself)."""
    if not run.validate or after is before:
        return 0.0
    t0 = time.perf_counter()
    try:
        validate_program(after, trusted=None if run.validate == "full" else before)
    except InvalidProgram as e:
        repro = _reproduce(run, event, e)  # a stage that breaks the IR is a failing stage
        where = f"; reproducer saved to {repro}" if repro else ""
        if run.verify is not None and run.verify["mode"] == "each":
            raise _broken_contract(st, index, event.spec, e, where) from None
        raise InvalidStepOutput(f"step {index} ({event.spec}) returned an invalid program: {e}{where}",
                                index, st) from None
    return time.perf_counter() - t0


def _broken_contract(st, index: int, spec: str, error: InvalidProgram, where: str) -> BrokenContractOutput:
    """verify="each": an invalid step output is a failed check of the step's contract."""
    from pipeline.contracts import ContractReport
    from stages.contracts import Violation, contract_of

    contract = contract_of(st)
    violation = Violation("a valid program (ir.validate)", f"stage {st.name!r}", str(error))
    report = ContractReport(False, 0, contract.describe() if contract is not None else "no contract",
                            (violation,), {}, str(violation))
    return BrokenContractOutput(f"step {index} ({spec}), stage {st.name!r}, broke its contract: returned an "
                                f"invalid program: {error}{where}", index, st, report)


def _one_step(run: _Run, steps: tuple, indexed) -> tuple:
    index, st = indexed
    n_done = len(steps)
    in_digest = run.input_digest if n_done == 0 else steps[-1].output_digest
    input_program = lambda: find_or_recompute(run.store, run.input_digest, steps, n_done, run.context)  # noqa: E731
    spec = st.spec()
    event = StepEvent(index, st, spec, run.pipeline_spec, input_program)
    call_hook(run.instruments, "before_step", event)
    key = stage_key(st)
    t0 = time.perf_counter()
    hit = run.cache.lookup(in_digest, key) if run.cache is not None and key is not None else None
    if hit is not None:
        step = Step(index, st, spec, freeze(st.all_params), key, in_digest, hit.output_digest,
                    time.perf_counter() - t0, hit.output_digest != in_digest, True, hit.stats)
    else:
        program = input_program()
        result, seconds = _execute(run, st, index, program, event)
        validate_seconds = _validated(run, st, index, event, program, result.program)
        out = run.store.add(result.program)
        if run.cache is not None and key is not None:
            run.cache.store(in_digest, key, out, result.stats)
        step = Step(index, st, spec, freeze(st.all_params), key, in_digest, out.digest, seconds,
                    out is not program, False, pmap(result.stats), validate_seconds=validate_seconds)
    done = steps + (step,)
    output_program = lambda: find_or_recompute(run.store, run.input_digest, done, n_done + 1, run.context)  # noqa: E731
    if run.verify is not None and run.verify["mode"] == "each":
        step = _check_each(run, step, input_program, output_program)
        done = steps + (step,)
    call_hook(run.instruments, "after_step", StepEvent(index, st, spec, run.pipeline_spec, input_program,
                                                       output_program), step)
    return done


def run_steps(run: _Run, stages: tuple, offset: int, before: tuple = ()) -> tuple:
    """Run stages as steps offset.. after the already-recorded steps `before`."""
    return reduce(lambda steps, indexed: _one_step(run, steps, indexed),
                  enumerate(stages, start=offset), before)


def _start(pipeline, program_or_store, input_digest, cache, verify, progress, executor, instruments,
           stack: ExitStack, n_steps: int, validate=True, spill=None) -> _Run:
    from pipeline.executors import make_context

    instruments = tuple(instruments) + ((ProgressBar(n_steps),) if progress else ())
    context = make_context(executor, stack, weight_progress if progress else None, spill, cache)
    return _Run(pipeline.spec(), program_or_store, cache, context, _verify_options(verify), instruments,
                input_digest, _validate_option(validate))


def _spill_for(program):
    """A spill store (ir.lazy.Spill) when the input's weights are file-backed: a model too
    big to be read in memory gets results too big to be kept there."""
    from ir import lazy

    for _, op in program.walk():
        if op.op_type == "const" and lazy.region_of(op.attrs.get("val")) is not None:
            return lazy.Spill()
    return None


def _finish(run: _Run, pipeline, steps: tuple) -> Trace:
    trace = Trace(pipeline, steps, run.input_digest, run.store, run.cache)
    if run.verify is not None and run.verify["mode"] == "final" and trace.result_digest != trace.input_digest:
        report = _verified(run, trace.program_at(0), trace.result, f"pipeline {pipeline.spec()}", len(steps) - 1, None)
        if run.verify.get("contracts", True):
            _kernels_agree(run, trace.result, pipeline, len(steps) - 1, report)
    call_hook(run.instruments, "after_run", trace)
    return trace


def run_pipeline(pipeline, program: Program, cache=None, verify=None, progress=False, executor=None,
                 instruments=(), validate=True) -> Trace:
    if not isinstance(program, Program):
        raise PipelineError(f"Pipeline.run: expected a Program, got {type(program).__name__}")
    with ExitStack() as stack:
        run = _start(pipeline, ProgramStore(cache, [program]), program.digest, cache, verify, progress,
                     executor, instruments, stack, len(pipeline), validate, _spill_for(program))
        return _finish(run, pipeline, run_steps(run, pipeline.stages, 0))


def replay(trace: Trace, pipeline, from_step: int, options: dict) -> Trace:
    """Run `pipeline` (the trace's, with stages replaced from from_step on: Pipeline.replay_trace
    builds it) from step from_step, reusing the trace's steps before it."""
    cache = options.pop("cache", trace.cache)
    store = trace.store if cache is trace.cache else ProgramStore(cache, [])
    trace.program_at(from_step)  # make sure the starting point is reachable before anything runs
    if store is not trace.store:
        store = store.merged(trace.store)
    stages = pipeline.stages
    with ExitStack() as stack:
        run = _start(pipeline, store, trace.input_digest, cache, options.pop("verify", None),
                     options.pop("progress", False), options.pop("executor", None),
                     options.pop("instruments", ()), stack, len(stages) - from_step,
                     options.pop("validate", True), _spill_for(trace.program_at(0)))
        if options:
            raise PipelineError(f"replay: unknown option(s) {sorted(options)}")
        return _finish(run, pipeline, run_steps(run, stages[from_step:], from_step,
                                                tuple(replace(s, reused=True) for s in trace.steps[:from_step])))
