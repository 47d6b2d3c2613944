"""Instruments: the runner's before/after hooks around each step (TVM PassInstrument style).

Stages know nothing of them. An instrument implements any of

    before_step(event)          event.index, .stage, .input_program()
    after_step(event, step)     plus event.output_program() and the recorded Step
    on_error(event, exc)        the stage raised; event.input_program() is what it got
    after_run(trace)

Programs are handed over as thunks: a step served from the cache loads its
programs only when an instrument asks for them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from toolz import groupby, valmap

from ir.atomic import write_text


@dataclass(frozen=True)
class StepEvent:
    index: int
    stage: object
    spec: str
    pipeline_spec: str
    input_program: Callable
    output_program: Optional[Callable] = None


def call_hook(instruments, hook: str, *args) -> None:
    for ins in instruments:
        fn = getattr(ins, hook, None)
        if fn is not None:
            fn(*args)


class Timing:
    """Collects seconds per step; `summary()` groups them by stage name."""

    def __init__(self):
        self.records: list = []

    def after_step(self, event, step) -> None:
        self.records.append((event.spec, step.seconds, step.cached))

    def summary(self) -> dict:
        by_name = groupby(lambda r: r[0], self.records)
        return valmap(lambda rs: sum(r[1] for r in rs), by_name)


def program_text(program) -> str:
    """The text form when ir.text exists, else one line per op."""
    try:
        from ir.text import print_program
    except ImportError:
        print_program = None
    if print_program is not None:
        return print_program(program)
    return "\n".join(_op_line(f, op) for f, op in program.walk())


def _op_line(fn, op) -> str:
    from ir.digest import tensor_digest

    ins = ", ".join(f"{k}=" + (f"({','.join(x.name for x in v)})" if isinstance(v, tuple) else v.name)
                    for k, v in sorted(op.inputs.items()))
    outs = ", ".join(f"%{v.name}:{v.type}" for v in op.outputs)
    val = op.attrs.get("val")
    extra = f" val=sha256:{tensor_digest(val)[:16]}" if val is not None else ""
    return f"{fn.name}: {outs} = {op.op_type}({ins}){extra}  # {op.name}"


class PrintIRAfterChange:
    """Prints the program after every step that changed it (MLIR's print-ir-after-change)."""

    def __init__(self, stream=None):
        self.stream = stream

    def after_step(self, event, step) -> None:
        if step.changed:
            out = self.stream or sys.stdout
            out.write(f"// ----- after step {event.index}: {event.spec} -----\n")
            out.write(program_text(event.output_program()) + "\n")


class CrashReproducer:
    """When a stage raises, saves the pipeline spec, the failing step and its input program.

    The program is saved with ir.serialize when it exists, else in a DiskCache
    under the directory; `reproducer.json` says which and how to re-run.
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.last: Optional[str] = None

    def on_error(self, event, exc) -> None:
        os.makedirs(self.directory, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(self.directory, f"crash-{stamp}-step{event.index}")
        program = event.input_program()
        info = {"pipeline": event.pipeline_spec, "step": event.index, "stage": event.spec,
                "error": f"{type(exc).__name__}: {exc}", "input_digest": program.digest}
        info.update(_save_program(program, base))
        write_text(base + ".json", json.dumps(info, indent=2))
        self.last = base + ".json"


def _save_program(program, base: str) -> dict:
    try:
        from ir.serialize import save
    except ImportError:
        save = None
    if save is not None:
        save(program, base + ".wpz")
        return {"program_file": base + ".wpz", "format": "ir.serialize"}
    from pipeline.diskcache import DiskCache

    DiskCache(base + ".cache").put_program(program)
    return {"program_cache": base + ".cache", "format": "pipeline.DiskCache"}


@dataclass
class ProgressBar:
    """A tqdm bar over the steps; stages get per-weight bars through StageContext.progress."""

    total: int
    bar: object = field(default=None)

    def __post_init__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="pipeline", unit="step")

    def before_step(self, event) -> None:
        self.bar.set_postfix_str(event.spec[:40])

    def after_step(self, event, step) -> None:
        self.bar.update(1)

    def after_run(self, trace) -> None:
        self.bar.close()

    on_error = lambda self, event, exc: self.bar.close()  # noqa: E731


def weight_progress(items, desc: str = "", total=None):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc or "weights", total=total, leave=False, position=1)
