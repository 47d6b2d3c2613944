"""Trace: the immutable record of one pipeline run.

Step i ran `stages[i]` on `program_at(i)` and produced `program_at(i + 1)`;
`program_at(0)` is the input and `program_at(len(steps))` (= `result`) the
output. Programs are reached by digest: from memory, else from the cache,
else recomputed from the step before (so a cache that lost or corrupted a
program costs time, never a wrong answer).
"""
from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass, field
from typing import Optional

from pyrsistent import PMap, pmap

from ir import Program
from ir.atomic import write_text
from pipeline.cache import jsonable_stats
from pipeline.diff import diff_programs
from pipeline.errors import PipelineError
from stages.base import DEFAULT_CONTEXT, Stage

TRACE_FORMAT = "weightpress-trace/1"


@dataclass(frozen=True)
class Step:
    index: int
    stage: Stage
    spec: str
    params: PMap
    key: Optional[str]  # None: the stage could not be cached
    input_digest: str
    output_digest: str
    seconds: float
    changed: bool
    cached: bool
    stats: PMap = field(default_factory=pmap)
    verification: object = None  # a VerificationReport when verify= checked this step
    reused: bool = field(default=False, compare=False)  # taken as it was by a replay
    validate_seconds: float = field(default=0.0, compare=False)  # ir.validate of the output (run option)

    def to_json(self) -> dict:
        return {"index": self.index, "spec": self.spec, "stage": self.stage.name,
                "version": self.stage.version, "params": jsonable_stats(self.params), "key": self.key,
                "input_digest": self.input_digest, "output_digest": self.output_digest,
                "seconds": self.seconds, "validate_seconds": self.validate_seconds, "changed": self.changed, "cached": self.cached,
                "stats": jsonable_stats(self.stats)}


class ProgramStore:
    """digest -> Program: a memo in front of a cache; loading is idempotent."""

    def __init__(self, cache=None, programs=()):
        self.cache = cache
        self._programs = {p.digest: p for p in programs}
        self._lock = threading.Lock()

    def add(self, program: Program) -> Program:
        with self._lock:
            return self._programs.setdefault(program.digest, program)

    def find(self, digest: str) -> Optional[Program]:
        p = self._programs.get(digest)
        if p is None and self.cache is not None:
            p = self.cache.get_program(digest)
            if p is not None:
                p = self.add(p)
        return p

    def merged(self, other: "ProgramStore") -> "ProgramStore":
        out = ProgramStore(self.cache if self.cache is not None else other.cache)
        out._programs = {**other._programs, **self._programs}
        return out


def find_or_recompute(store: ProgramStore, input_digest: str, steps, i: int, context=DEFAULT_CONTEXT) -> Program:
    """program_at(i) of a run whose steps are `steps`: found in the store (memory, then the
    cache), else recomputed from the nearest earlier program it holds."""
    digest = input_digest if i == 0 else steps[i - 1].output_digest
    found = store.find(digest)
    if found is not None:
        return found
    if i == 0:
        raise PipelineError(f"the input program {digest[:12]} is neither in memory nor in the cache")
    step = steps[i - 1]
    previous = find_or_recompute(store, input_digest, steps, i - 1, context)
    out = step.stage.run(previous, context).program
    if out.digest != digest:
        warnings.warn(f"step {step.index} ({step.spec}) recomputed to {out.digest[:12]}, the trace "
                      f"recorded {digest[:12]}: the stage is not deterministic", RuntimeWarning, stacklevel=2)
    if store.cache is not None and step.key is not None:
        store.cache.store(step.input_digest, step.key, out, step.stats)
    return store.add(out)


# the old name, kept importable (it clashed with the constexpr fold, now ir.fold)
materialize = find_or_recompute


@dataclass(frozen=True)
class Trace:
    pipeline: object  # the Pipeline that ran
    steps: tuple
    input_digest: str
    store: ProgramStore = field(repr=False, compare=False)
    cache: object = field(default=None, repr=False, compare=False)

    @property
    def result(self) -> Program:
        return self.program_at(len(self.steps))

    @property
    def result_digest(self) -> str:
        return self.steps[-1].output_digest if self.steps else self.input_digest

    def program_at(self, i: int) -> Program:
        n = len(self.steps)
        if not -(n + 1) <= i <= n:
            raise IndexError(f"program_at({i}): the trace has programs 0..{n}")
        return find_or_recompute(self.store, self.input_digest, self.steps, i % (n + 1))

    def digest_at(self, i: int) -> str:
        return self.input_digest if i == 0 else self.steps[i - 1].output_digest

    @property
    def executed(self) -> tuple:
        """Indices of the steps that really ran (not served by the cache)."""
        return tuple(s.index for s in self.steps if not (s.cached or s.reused))

    def diff(self, i: int, j: int):
        return diff_programs(self.program_at(i), self.program_at(j))

    def replay(self, from_step: int = 0, stages=None, **run_options) -> "Trace":
        """Re-run steps from_step.. with `stages` in their place (a list replacing all of
        them, or {step index: stage}); steps before from_step are reused as they are.
        The pipeline that ran re-runs it (Pipeline.replay_trace): the record does not
        know how to run stages."""
        return self.pipeline.replay_trace(self, from_step, stages, **run_options)

    def summary(self) -> str:
        rows = [f"{s.index:>3} {s.spec[:48]:<48} {s.seconds * 1e3:9.1f} ms "
                f"{'reused' if s.reused else 'cached' if s.cached else 'ran':>6} "
                f"{'changed' if s.changed else 'same':>7}"
                for s in self.steps]
        return "\n".join(rows)

    # -- persistence ----------------------------------------------------------
    def save(self, path, cache=None) -> None:
        """Write the trace as JSON; its programs go to `cache` (default: the run's cache)."""
        cache = self.cache if cache is None else cache
        if cache is None:
            raise PipelineError("Trace.save: the programs need a cache (pass cache=DiskCache(...))")
        for i in range(len(self.steps) + 1):
            program = self.program_at(i)
            cache.put_program(program)
        doc = {"format": TRACE_FORMAT, "pipeline": self.pipeline.spec(), "input_digest": self.input_digest,
               "steps": [s.to_json() for s in self.steps]}
        write_text(path, json.dumps(doc, indent=1))

    @classmethod
    def from_json(cls, doc: dict, pipeline, cache, where: str = "trace") -> "Trace":
        """The Trace a save() wrote, given its pipeline already parsed from doc["pipeline"]
        (pipeline.core.load_trace reads the file)."""
        if doc.get("format") != TRACE_FORMAT:
            raise PipelineError(f"{where}: not a weightpress trace (format {doc.get('format')!r})")
        if len(pipeline) != len(doc["steps"]):
            raise PipelineError(f"{where}: {len(doc['steps'])} steps but the pipeline has {len(pipeline)} stages")
        steps = tuple(Step(d["index"], st, d["spec"], pmap(d["params"]), d["key"], d["input_digest"],
                           d["output_digest"], d["seconds"], d["changed"], d["cached"], pmap(d["stats"]),
                           validate_seconds=d.get("validate_seconds", 0.0))
                      for st, d in zip(pipeline.stages, doc["steps"]))
        return cls(pipeline, steps, doc["input_digest"], ProgramStore(cache), cache)
