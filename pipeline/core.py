"""Pipeline: an immutable, declarative sequence of stages.

    p = Pipeline([stage_a, stage_b(n=2)]) + Pipeline.from_spec("c{k=1}")
    p.then(stage_d).spec()         # "a,b{n=2},c{k=1},d"
    trace = p.run(program, cache=DiskCache(path))

Without tracing, a pipeline is plain function composition: `p(program)`.
"""
from __future__ import annotations

import json
from typing import Iterable, Union

from toolz import concat, reduce

import stages as stage_registry
from ir import Program
from pipeline import presets as preset_table
from pipeline import spec as spec_text
from pipeline.calibration import bind_paths, calibrate_stage, check_against
from pipeline.combinators import COMBINATORS, FIXED_POINT
from pipeline.errors import PipelineError, PresetError, SpecError
from pipeline.params import check_params
from pipeline.recipe import recipe_stages
from pipeline.run import replay as replay_run
from pipeline.run import run_pipeline
from pipeline.trace import TRACE_FORMAT, Trace
from stages.base import DEFAULT_CONTEXT, Stage, StageContext, StageError, Uncacheable


def stage_spec(st: Stage) -> str:
    """The spec text of one stage (Stage.spec, the one printer; kept for callers of this name)."""
    return st.spec()


def _spec_fail(name: str):
    return lambda key, reason: SpecError(f"pipeline spec: stage {name!r}: {reason}")


def resolve_step(name: str, params: dict, fail=None) -> tuple:
    """The stages a spec step names: a combinator, a registered stage, or a preset."""
    fail = fail or _spec_fail(name)
    if name in COMBINATORS:
        check_params(FIXED_POINT, params, fail)
        try:
            return (COMBINATORS[name](**params),)
        except (ValueError, TypeError) as e:
            raise fail("steps", str(e)) from None
    try:
        st = stage_registry.get(name)
    except StageError:
        if name in preset_table.PRESETS:
            if params:
                raise fail(next(iter(params)), f"preset {name!r} takes no parameters") from None
            return Pipeline.preset(name).stages
        raise SpecError(f"pipeline spec: unknown stage {name!r}; known stages: "
                        f"{', '.join(stage_registry.names())}; presets: {', '.join(preset_table.names())}") from None
    check_params(st, params, fail)
    return (st.bind(**bind_paths(name, params)),)


def _flatten(item) -> tuple:
    if isinstance(item, Pipeline):
        return item.stages
    if isinstance(item, Stage):
        return (item,)
    if isinstance(item, str):
        return Pipeline.from_spec(item).stages
    raise PipelineError(f"a pipeline step must be a Stage, a Pipeline or a spec string, "
                        f"got {type(item).__name__}")


class Pipeline:
    """An immutable tuple of stages; equal pipelines have equal stages."""

    __slots__ = ("_stages",)

    def __init__(self, steps: Iterable = ()):
        object.__setattr__(self, "_stages", tuple(concat(map(_flatten, steps))))

    def __setattr__(self, name, value):
        raise AttributeError("Pipeline is immutable")

    # -- construction ---------------------------------------------------------
    @classmethod
    def coerce(cls, value) -> "Pipeline":
        if isinstance(value, Pipeline):
            return value
        if isinstance(value, (Stage, str)):
            return cls([value])
        return cls(value)

    @classmethod
    def from_spec(cls, text: str) -> "Pipeline":
        steps = spec_text.parse(text)
        return cls._from_stages(concat(resolve_step(s.name, s.params) for s in steps))

    @classmethod
    def preset(cls, name: str) -> "Pipeline":
        text = preset_table.spec_of(name)
        try:
            return cls.from_spec(text)
        except SpecError as e:
            raise PresetError(f"preset {name!r} ({text}): {e}") from None

    @classmethod
    def from_recipe(cls, source) -> "Pipeline":
        return cls._from_stages(recipe_stages(source, resolve_step))

    @classmethod
    def _from_stages(cls, stages_iter) -> "Pipeline":
        p = cls.__new__(cls)
        object.__setattr__(p, "_stages", tuple(stages_iter))
        return p

    # -- composition ----------------------------------------------------------
    @property
    def stages(self) -> tuple:
        return self._stages

    def __add__(self, other) -> "Pipeline":
        return Pipeline._from_stages(self._stages + Pipeline.coerce(other).stages)

    def __radd__(self, other) -> "Pipeline":
        return Pipeline.coerce(other) + self

    def then(self, step) -> "Pipeline":
        return self + step

    def __len__(self) -> int:
        return len(self._stages)

    def __iter__(self):
        return iter(self._stages)

    def __getitem__(self, i) -> Union[Stage, "Pipeline"]:
        got = self._stages[i]
        return Pipeline._from_stages(got) if isinstance(i, slice) else got

    def __eq__(self, other) -> bool:
        return isinstance(other, Pipeline) and self._stages == other._stages

    def __hash__(self) -> int:
        return hash(self.spec())

    # -- text and keys --------------------------------------------------------
    def spec(self) -> str:
        return ",".join(st.spec() for st in self._stages)

    def __repr__(self) -> str:
        return f"Pipeline({self.spec()!r})"

    def to_dict(self) -> dict:
        """What a combinator's cache key sees: every stage's key (Uncacheable if one has none)."""
        keys = [st.key() for st in self._stages]
        if None in keys:
            bad = self._stages[keys.index(None)]
            raise Uncacheable(f"stage {bad.spec()} has no cache key")
        return {"pipeline": keys}

    # -- running --------------------------------------------------------------
    def apply(self, program: Program, context: StageContext = DEFAULT_CONTEXT) -> Program:
        """Run every stage in order, untraced and uncached."""
        return reduce(lambda p, st: st.run(p, context).program, self._stages, program)

    def __call__(self, program: Program) -> Program:
        return self.apply(program)

    def run(self, program: Program, cache=None, verify=None, progress: bool = False,
            executor=None, instruments: Iterable = (), validate=True, calibration=None) -> Trace:
        """Run every stage, recording a Trace (see pipeline.run for the options).

        calibration: a .npz path, a directory of them, arrays or CalibrationData
        (pipeline.calibration): a `calibrate` step on that data runs first, so the
        calibrated stages after it find their statistics; the trace records it as step 0."""
        if calibration is not None:
            return (Pipeline([calibrate_stage(calibration, self._stages)]) + self).run(
                program, cache=cache, verify=verify, progress=progress, executor=executor,
                instruments=instruments, validate=validate)
        if isinstance(program, Program):
            check_against(program, self._stages)
        return run_pipeline(self, program, cache=cache, verify=verify, progress=progress,
                            executor=executor, instruments=tuple(instruments), validate=validate)

    def replay_trace(self, trace: Trace, from_step: int = 0, stages=None, **run_options) -> Trace:
        """Trace.replay: re-run `trace` (a run of this pipeline) from from_step with `stages` in
        place (a list replacing all of them, or {step index: stage})."""
        n = len(trace.steps)
        if not 0 <= from_step <= n:
            raise PipelineError(f"replay: from_step={from_step} outside 0..{n}")
        if isinstance(stages, dict) and stages:
            from_step = min(from_step, *stages) if from_step else min(stages)
        return replay_run(trace, Pipeline._from_stages(_replaced(self._stages, from_step, stages)), from_step,
                          dict(run_options))


def _replaced(stages: tuple, from_step: int, new) -> tuple:
    if new is None:
        return stages
    if isinstance(new, dict):
        bad = [i for i in new if not 0 <= i < len(stages)]
        if bad:
            raise PipelineError(f"replay: no step {bad[0]} (the pipeline has {len(stages)})")
        return tuple(new.get(i, st) for i, st in enumerate(stages))
    return stages[:from_step] + Pipeline.coerce(new).stages


def load_trace(path, cache) -> Trace:
    """The Trace that Trace.save wrote to `path`, its programs found in `cache`."""
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != TRACE_FORMAT:
        raise PipelineError(f"{path}: not a weightpress trace (format "
                            f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    return Trace.from_json(doc, Pipeline.from_spec(doc["pipeline"]), cache, where=str(path))
