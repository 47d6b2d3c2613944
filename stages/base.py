"""What a stage is: a named, versioned, curried, pure Program -> Program.

    @stage("palettize_weights", version="1")
    def palettize_weights(program, *, nbits=4, ..., context=None) -> Program | StageResult

`palettize_weights(nbits=4)` is a Stage with those parameters bound;
`palettize_weights(prog, nbits=4)` runs it. A stage's function may return a
plain Program or a StageResult carrying statistics for the pipeline.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from pyrsistent import PMap, pmap

from ir import Program
from ir.core import gc_paused


class StageError(ValueError):
    """A stage was configured or called wrongly; the message names the stage."""


def _serial_map(fn, items):
    return map(fn, items)


@dataclass(frozen=True)
class StageContext:
    """What the runner lends a stage: how to map over weights, how to report progress."""

    # map(fn, items) -> results in input order, yielded as they become ready where the
    # backend can (so a progress bar follows the work); an executor's .map fits here
    map: Callable = _serial_map
    progress: Optional[Callable] = None  # progress(iterable, desc=..., total=...) -> iterable

    def track(self, items, desc: str = "", total: Optional[int] = None):
        return items if self.progress is None else self.progress(items, desc=desc, total=total)


DEFAULT_CONTEXT = StageContext()


@dataclass(frozen=True)
class StageResult:
    program: Program
    stats: PMap = field(default_factory=pmap)


class Uncacheable(Exception):
    """A parameter cannot be turned into a stable key (e.g. a lambda with no source)."""


def _callable_key(fn) -> dict:
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        raise Uncacheable(f"callable {name} has no source to key it by") from None
    return {"callable": name, "source_sha256": hashlib.sha256(src.encode()).hexdigest()}


def canonical(value) -> Any:
    """A JSON-able, order-independent form of a parameter value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        from ir.digest import tensor_digest

        return {"ndarray": tensor_digest(value)}
    if isinstance(value, type):
        return {"type": f"{value.__module__}.{value.__qualname__}"}
    if isinstance(value, np.dtype):
        return {"dtype": value.name}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "items"):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if hasattr(value, "to_dict"):
        return canonical(value.to_dict())
    if callable(value):
        return _callable_key(value)
    raise Uncacheable(f"parameter of type {type(value).__name__} has no stable key")


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable
    version: str
    params: PMap = field(default_factory=pmap)
    contract: Any = field(default=None, compare=False)  # what the stage preserves: stages.contracts

    @property
    def defaults(self) -> dict:
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in sig.parameters.items()
                if p.kind == p.KEYWORD_ONLY and k != "context"}

    def bind(self, **params) -> "Stage":
        known = self.defaults
        for k in params:
            if k not in known:
                raise StageError(f"stage {self.name}: unknown parameter {k!r}; "
                                 f"known: {', '.join(sorted(known)) or '(none)'}")
        return Stage(self.name, self.fn, self.version, self.params.update(params), self.contract)

    def __call__(self, program: Optional[Program] = None, **params):
        if program is None:
            return self.bind(**params)
        return self.bind(**params).run(program).program

    def run(self, program: Program, context: StageContext = DEFAULT_CONTEXT) -> StageResult:
        if not isinstance(program, Program):
            raise StageError(f"stage {self.name}: expected a Program, got {type(program).__name__}")
        # the IR is acyclic, so the cyclic collector only rescans the whole graph again
        # and again while a stage builds its new ops (2.2x per op at 100k ops with it on)
        with gc_paused():
            out = self.fn(program, context=context, **dict(self.params))
        return out if isinstance(out, StageResult) else StageResult(out)

    @property
    def all_params(self) -> dict:
        return {**self.defaults, **dict(self.params)}

    def key(self) -> Optional[str]:
        """Cache key part (name, version, every parameter); None when not cacheable."""
        try:
            body = json.dumps({"stage": self.name, "version": self.version,
                               "params": canonical(self.all_params)}, sort_keys=True)
        except Uncacheable:
            return None
        return hashlib.sha256(body.encode()).hexdigest()

    def spec(self) -> str:
        """Textual form `name{k=v,...}` of the parameters set explicitly."""
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={json.dumps(canonical(v))}" for k, v in sorted(self.params.items()))
        return f"{self.name}{{{inner}}}"

    def __repr__(self) -> str:
        return f"<Stage {self.spec()} v{self.version}>"


REGISTRY: dict = {}


def stage(name: str, version: str = "1", contract=None):
    """Decorator: turn `fn(program, *, params..., context)` into a registered Stage;
    `contract` (stages.contracts) is what verify="each" checks its steps by."""

    def wrap(fn: Callable) -> Stage:
        st = Stage(name, fn, version, contract=contract)
        st.defaults  # fail early on a bad signature
        REGISTRY[name] = st
        return st

    return wrap
