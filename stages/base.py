"""What a stage is: a named, versioned, curried, pure Program -> Program.

    @stage("palettize_weights", version="1")
    def palettize_weights(program, *, nbits=4, ..., context=None) -> Program | StageResult

`palettize_weights(nbits=4)` is a Stage with those parameters bound;
`palettize_weights(prog, nbits=4)` runs it. A stage's function may return a
plain Program or a StageResult carrying statistics for the pipeline.

The Stage is the one place a stage's contract lives (as xDSL's passes: the
options are typed fields). Its options are read once from the function's
keyword-only parameters: name, default, type (the annotation's, else the
default's) and choices (a `Literal[...]` annotation), so the stage modules
declare them where they are used. Binding checks names, the stage's own
`check`, then types and choices; spec text (`Stage.spec`, printed by
stages.spec) parses back to an equal stage with the same cache key; the CLI
reads its choices from here; a name is registered once.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pyrsistent import PMap, pmap

from ir import Program
from ir.gcpause import gc_paused
from stages.canonical import Uncacheable, canonical  # noqa: F401  (re-exported: keys and specs)
from stages.spec import format_step


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
    # where big results go so that only the weights in flight are in memory (ir.lazy.Spill:
    # .put(array) -> an equal, file-backed array); None: results stay in memory
    spill: Optional[object] = None

    def track(self, items, desc: str = "", total: Optional[int] = None):
        return items if self.progress is None else self.progress(items, desc=desc, total=total)


DEFAULT_CONTEXT = StageContext()


@dataclass(frozen=True)
class StageResult:
    program: Program
    stats: PMap = field(default_factory=pmap)


# expected option type -> the value types accepted for it (ints where floats are expected,
# lists where tuples are; nothing else is converted)
_ACCEPTS = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
    tuple: (list, tuple),
    list: (list, tuple),
    dict: (dict,),
}
# values a spec or recipe can hold: only these are type-checked; anything else (a numpy
# dtype, a callable, a Pipeline) is the stage's own check's business
_TEXT_KINDS = (bool, int, float, str, list, tuple, dict)


@dataclass(frozen=True)
class Option:
    """One typed option of a stage: a keyword-only parameter of its function.

    The type is the annotation's when there is one (`int`, `Optional[int]`,
    `Literal[1, 2, 4]` which also gives the choices), else the default's
    type; a default of None with no annotation accepts anything."""

    name: str
    default: Any
    type: Optional[type] = None
    choices: Optional[tuple] = None

    def problem(self, value) -> Optional[str]:
        """Why `value` does not fit this option (None when it fits)."""
        if value is None or not isinstance(value, _TEXT_KINDS):
            return None
        accepted = _ACCEPTS.get(self.type)
        if accepted is not None:
            if isinstance(value, bool) and bool not in accepted:
                return f"expected {self.type.__name__}, got bool"
            if not isinstance(value, accepted):
                return f"expected {self.type.__name__}, got {type(value).__name__}"
        if self.choices is not None and isinstance(value, (int, float, str)) and value not in self.choices:
            return f"{value!r} is not one of {list(self.choices)}"
        return None

    def coerce(self, value):
        """A list given for a tuple option becomes a tuple (what the spec parser reads back)."""
        return tuple(value) if self.type is tuple and isinstance(value, list) else value


def _strip_optional(hint):
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _option(name: str, default, hint) -> Option:
    hint = _strip_optional(hint)
    if typing.get_origin(hint) is typing.Literal:
        choices = tuple(typing.get_args(hint))
        return Option(name, default, type(choices[0]) if choices else None, choices)
    if hint in _ACCEPTS:
        return Option(name, default, hint)
    return Option(name, default, type(default) if type(default) in _ACCEPTS else None)


@functools.lru_cache(maxsize=None)
def options_of(fn: Callable) -> tuple:
    """The typed options of a stage function: its keyword-only parameters but `context`."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: fall back to defaults
        hints = {}
    params = inspect.signature(fn).parameters.values()
    return tuple(_option(p.name, p.default, hints.get(p.name)) for p in params
                 if p.kind == p.KEYWORD_ONLY and p.name != "context")


@dataclass(frozen=True)
class Stage:
    """A named, versioned, curried stage; its options are the typed keywords of `fn`.

    `check(params)` (optional) is the stage's own check of the parameters bound so far
    (ranges, combinations); it runs at every bind, before the option types are checked,
    so a stage's error names what the stage knows. `contract` is the stage's declared
    contract (stages.contracts), consulted by verify="each"."""

    name: str
    fn: Callable
    version: str
    params: PMap = field(default_factory=pmap)
    contract: object = None
    check: Optional[Callable] = field(default=None, compare=False)

    @property
    def options(self) -> tuple:
        return options_of(self.fn)

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise StageError(self.unknown(name))

    def unknown(self, key: str) -> str:
        return (f"unknown parameter {key!r} for stage {self.name!r}; "
                f"known: {', '.join(sorted(o.name for o in self.options)) or '(none)'}")

    def problem(self, key: str, value) -> Optional[str]:
        """Why `key=value` does not fit this stage (unknown or wrongly typed), or None."""
        known = {o.name: o for o in self.options}
        if key not in known:
            return self.unknown(key)
        why = known[key].problem(value)
        return f"parameter {key!r} of stage {self.name!r}: {why}" if why else None

    @property
    def defaults(self) -> dict:
        return {o.name: o.default for o in self.options}

    def bind(self, **params) -> "Stage":
        known = {o.name: o for o in self.options}
        for k in params:
            if k not in known:
                raise StageError(f"stage {self.name}: {self.unknown(k)}")
        params = {k: known[k].coerce(v) for k, v in params.items()}
        bound = self.params.update(params)
        if self.check is not None:
            self.check(dict(bound))
        for k, v in params.items():
            why = known[k].problem(v)
            if why:
                raise StageError(f"stage {self.name}: parameter {k!r}: {why}")
        return Stage(self.name, self.fn, self.version, bound, self.contract, self.check)

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
        """The spec text `name{k=v,...}` of the parameters set explicitly; the pipeline
        spec parser reads it back to an equal stage."""
        return format_step(self.name, dict(self.params))

    def __repr__(self) -> str:
        return f"<Stage {self.spec()} v{self.version}>"


REGISTRY: dict = {}


def register(st: Stage) -> Stage:
    """Add a stage to the registry; a name registered twice is refused."""
    if st.name in REGISTRY:
        raise StageError(f"stage {st.name!r} is already registered (by {REGISTRY[st.name].fn.__module__}); "
                         "two stages of one name would make a spec mean whichever was imported last")
    st.options  # fail early on a bad signature
    REGISTRY[st.name] = st
    return st


def stage(name: str, version: str = "1", contract: object = None, check: Optional[Callable] = None):
    """Decorator: turn `fn(program, *, params..., context)` into a registered Stage."""

    def wrap(fn: Callable) -> Stage:
        return register(Stage(name, fn, version, contract=contract, check=check))

    return wrap
