"""The IR data model: TensorType, Var, Op, Block, Function, Program.

Every node is a frozen slots dataclass holding tuples / pyrsistent
collections; numpy arrays inside are read-only. Nodes compare by identity
(`new is old` means "unchanged"); structural equality is `ir.equality`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Optional, Union

import numpy as np
from pyrsistent import PMap, PVector, pmap, pvector

from ir.digest import program_digest
from ir.frozen import FrozenMap
from ir.gcpause import gc_paused  # noqa: F401  (re-exported: builders and loaders pause the collector)
from ir.ops.registry import REGISTRY as _SCHEMAS
from ir.types import MapType, OptionalType, SequenceType, TensorType, ValueType  # noqa: F401

Dim = Union[int, str]  # a str dim is symbolic ("?": unknown)


class InvalidProgram(ValueError):
    """A program breaks an IR rule; the message names the op and the rule."""


def frozen_array(value, storage: Optional[np.dtype] = None) -> np.ndarray:
    """A read-only array; copies only when the input is writeable or the dtype differs."""
    arr = np.asarray(value) if storage is None else np.asarray(value, dtype=storage)
    if arr.flags.writeable:
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


_set = object.__setattr__  # how a frozen node's own __init__ fills its slots


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Var:
    """A value. `val` is set for values known at build time (const outputs)."""

    name: str
    type: TensorType
    val: Optional[np.ndarray] = None

    # hand-written: the generated frozen __init__ looks object.__setattr__ up per field,
    # and a 100k-op program makes 100k Vars
    def __init__(self, name: str, type: TensorType, val: Optional[np.ndarray] = None):
        _set(self, "name", name)
        _set(self, "type", type)
        _set(self, "val", val)

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> Optional[int]:
        return self.type.rank

    @property
    def is_tensor(self) -> bool:
        return self.type.is_tensor

    def __repr__(self) -> str:
        return f"%{self.name}:{self.type}"


OpInput = Union[Var, tuple]  # a Var, or a tuple of Vars for variadic inputs

EMPTY_MAP = FrozenMap()


@dataclass(frozen=True, slots=True, eq=False)
class Block:
    inputs: tuple  # tuple[Var]
    ops: PVector  # PVector[Op], topologically ordered
    outputs: tuple  # tuple[Var]

    @classmethod
    def make(cls, inputs=(), ops=(), outputs=()) -> "Block":
        return cls(tuple(inputs), ops if isinstance(ops, PVector) else pvector(ops), tuple(outputs))

    def replace(self, **changes) -> "Block":
        return Block.make(changes.get("inputs", self.inputs), changes.get("ops", self.ops),
                          changes.get("outputs", self.outputs))

    def walk(self) -> Iterator["Op"]:
        """Every op of this block and of its nested blocks, parents first."""
        for op in self.ops:
            yield op
            for b in op.blocks:
                yield from b.walk()


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Op:
    op_type: str
    name: str
    inputs: FrozenMap  # input name -> Var | tuple[Var]
    outputs: tuple  # tuple[Var]
    attrs: FrozenMap = EMPTY_MAP  # static attributes (const's "val", foreign ops' attributes)
    blocks: tuple = ()  # nested Blocks
    _fp: Any = field(default=None, repr=False)  # memoized local fingerprint

    def __init__(self, op_type: str, name: str, inputs: FrozenMap, outputs: tuple,
                 attrs: FrozenMap = EMPTY_MAP, blocks: tuple = (), _fp: Any = None):
        _set(self, "op_type", op_type)
        _set(self, "name", name)
        _set(self, "inputs", inputs)
        _set(self, "outputs", outputs)
        _set(self, "attrs", attrs)
        _set(self, "blocks", blocks)
        _set(self, "_fp", _fp)

    @classmethod
    def make(cls, op_type, name, inputs=None, outputs=(), attrs=None, blocks=()) -> "Op":
        return cls(op_type, name, _frozen_inputs(inputs), tuple(outputs),
                   _frozen_attrs(attrs), tuple(blocks))

    def replace(self, **changes) -> "Op":
        kw = dict(op_type=self.op_type, name=self.name, inputs=self.inputs,
                  outputs=self.outputs, attrs=self.attrs, blocks=self.blocks)
        kw.update(changes)
        return Op.make(**kw)

    @property
    def output(self) -> Var:
        return self.outputs[0]

    def get(self, input_name: str, default=None):
        return self.inputs.get(input_name, default)

    def input_vars(self) -> Iterator[Var]:
        for v in self.inputs.values():
            if isinstance(v, tuple):
                yield from v
            else:
                yield v

    def __getattr__(self, item):
        # seed-style access: op.x, op.scale -> the input Var. Only the op's own input names
        # resolve (an optional input that is absent -> None); anything else is a typo that
        # must fail loudly, not a match function that silently never matches
        got = self.inputs.get(item)
        if got is not None:
            return got
        schema = _SCHEMAS.get(self.op_type)
        if schema is not None and item in schema.specs:
            return None
        raise AttributeError(f"{self.op_type} op {self.name!r} has no input {item!r}"
                             + (f"; its inputs: {', '.join(schema.input_names)}" if schema else ""))

    def __repr__(self) -> str:
        outs = ", ".join(repr(v) for v in self.outputs)
        return f"<Op {self.op_type} {self.name!r} -> {outs}>"


def _frozen_inputs(inputs) -> FrozenMap:
    """Absent (None) inputs dropped; a FrozenMap without any is kept as it is."""
    if not inputs:
        return EMPTY_MAP
    for v in inputs.values():
        if v is None:
            inputs = {k: v for k, v in inputs.items() if v is not None}
            return FrozenMap(inputs) if inputs else EMPTY_MAP
    return inputs if inputs.__class__ is FrozenMap else FrozenMap(inputs)


def _frozen_attrs(attrs) -> FrozenMap:
    if not attrs:
        return EMPTY_MAP
    return attrs if attrs.__class__ is FrozenMap else FrozenMap(attrs)


def ios_version(opset: str) -> Optional[int]:
    """18 for a function targeting "iOS18"; None for an opset that is not Core ML's."""
    m = re.fullmatch(r"iOS(\d+)", str(opset))
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True, eq=False)
class Function:
    name: str
    block: Block
    opset: str = "iOS18"

    @property
    def inputs(self) -> tuple:
        return self.block.inputs

    @property
    def outputs(self) -> tuple:
        return self.block.outputs

    @property
    def ops(self) -> PVector:
        return self.block.ops

    def replace(self, **changes) -> "Function":
        return Function(changes.get("name", self.name), changes.get("block", self.block),
                        changes.get("opset", self.opset))


@dataclass(frozen=True, slots=True, eq=False)
class Program:
    functions: PMap  # name -> Function
    attrs: PMap = EMPTY_MAP
    _digest: Any = field(default=None, repr=False)

    @classmethod
    def make(cls, functions, attrs=None) -> "Program":
        if not isinstance(functions, dict) and not isinstance(functions, PMap):
            functions = {f.name: f for f in functions}
        return cls(pmap(functions), pmap(attrs) if attrs else pmap())

    @property
    def main(self) -> Function:
        return self.functions["main"]

    def with_function(self, fn: Function) -> "Program":
        return Program(self.functions.set(fn.name, fn), self.attrs)

    def walk(self) -> Iterator[tuple]:
        """(function, op) for every op, nested blocks included."""
        for fname in sorted(self.functions):
            f = self.functions[fname]
            for op in f.block.walk():
                yield f, op

    @property
    def digest(self) -> str:
        d = self._digest
        if d is None:
            d = program_digest(self)
            object.__setattr__(self, "_digest", d)
        return d

    def __repr__(self) -> str:
        n = sum(1 for _ in self.walk())
        return f"<Program {sorted(self.functions)} ops={n} digest={self.digest[:12]}>"
