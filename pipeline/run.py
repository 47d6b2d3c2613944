"""Running a pipeline: the step loop, the cache, verification and instruments.

    Pipeline.run(program, cache=None, verify=None, progress=False, executor=None,
                 instruments=())

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
"""
from __future__ import annotations

import time
import warnings
from contextlib import ExitStack
from dataclasses import replace, dataclass
from typing import Optional

from pyrsistent import freeze, pmap
from toolz import reduce

from ir import Program
from pipeline.errors import EquivalenceError, PipelineError, StageFailed, UncacheableWarning
from pipeline.instruments import CrashReproducer, ProgressBar, StepEvent, call_hook, weight_progress
from pipeline.trace import ProgramStore, Step, Trace, materialize

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
                            require_change=opts.get("require_change", False), index=step.index)
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
        call_hook(run.instruments, "on_error", event, exc)
        repro = [i.last for i in run.instruments if isinstance(i, CrashReproducer)]
        where = f"; reproducer saved to {repro[0]}" if repro else ""
        raise StageFailed(f"step {index} ({event.spec}) raised {type(exc).__name__}: {exc}{where}",
                          index, st, repro[0] if repro else None) from exc


def _one_step(run: _Run, steps: tuple, indexed) -> tuple:
    from pipeline.core import stage_spec

    index, st = indexed
    n_done = len(steps)
    in_digest = run.input_digest if n_done == 0 else steps[-1].output_digest
    input_program = lambda: materialize(run.store, run.input_digest, steps, n_done, run.context)  # noqa: E731
    spec = stage_spec(st)
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
        out = run.store.add(result.program)
        if run.cache is not None and key is not None:
            run.cache.store(in_digest, key, out, result.stats)
        step = Step(index, st, spec, freeze(st.all_params), key, in_digest, out.digest, seconds,
                    out is not program, False, pmap(result.stats))
    done = steps + (step,)
    output_program = lambda: materialize(run.store, run.input_digest, done, n_done + 1, run.context)  # noqa: E731
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
           stack: ExitStack, n_steps: int) -> _Run:
    from pipeline.executors import make_context

    instruments = tuple(instruments) + ((ProgressBar(n_steps),) if progress else ())
    context = make_context(executor, stack, weight_progress if progress else None)
    return _Run(pipeline.spec(), program_or_store, cache, context, _verify_options(verify), instruments,
                input_digest)


def _finish(run: _Run, pipeline, steps: tuple) -> Trace:
    trace = Trace(pipeline, steps, run.input_digest, run.store, run.cache)
    if run.verify is not None and run.verify["mode"] == "final" and trace.result_digest != trace.input_digest:
        _verified(run, trace.program_at(0), trace.result, f"pipeline {pipeline.spec()}", len(steps) - 1, None)
    call_hook(run.instruments, "after_run", trace)
    return trace


def run_pipeline(pipeline, program: Program, cache=None, verify=None, progress=False, executor=None,
                 instruments=()) -> Trace:
    if not isinstance(program, Program):
        raise PipelineError(f"Pipeline.run: expected a Program, got {type(program).__name__}")
    with ExitStack() as stack:
        run = _start(pipeline, ProgramStore(cache, [program]), program.digest, cache, verify, progress,
                     executor, instruments, stack, len(pipeline))
        return _finish(run, pipeline, run_steps(run, pipeline.stages, 0))


def _replaced(stages: tuple, from_step: int, new) -> tuple:
    if new is None:
        return stages
    if isinstance(new, dict):
        bad = [i for i in new if not 0 <= i < len(stages)]
        if bad:
            raise PipelineError(f"replay: no step {bad[0]} (the pipeline has {len(stages)})")
        return tuple(new.get(i, st) for i, st in enumerate(stages))
    from pipeline.core import Pipeline

    return stages[:from_step] + Pipeline.coerce(new).stages


def replay(trace: Trace, from_step: int, new_stages, options: dict) -> Trace:
    from pipeline.core import Pipeline

    n = len(trace.steps)
    if not 0 <= from_step <= n:
        raise PipelineError(f"replay: from_step={from_step} outside 0..{n}")
    if isinstance(new_stages, dict) and new_stages:
        from_step = min(from_step, *new_stages) if from_step else min(new_stages)
    stages = _replaced(trace.pipeline.stages, from_step, new_stages)
    pipeline = Pipeline._from_stages(stages)
    cache = options.pop("cache", trace.cache)
    store = trace.store if cache is trace.cache else ProgramStore(cache, [])
    trace.program_at(from_step)  # make sure the starting point is reachable before anything runs
    if store is not trace.store:
        store = store.merged(trace.store)
    with ExitStack() as stack:
        run = _start(pipeline, store, trace.input_digest, cache, options.pop("verify", None),
                     options.pop("progress", False), options.pop("executor", None),
                     options.pop("instruments", ()), stack, len(stages) - from_step)
        if options:
            raise PipelineError(f"replay: unknown option(s) {sorted(options)}")
        return _finish(run, pipeline, run_steps(run, stages[from_step:], from_step,
                                                         tuple(replace(s, reused=True) for s in trace.steps[:from_step])))
