"""Ops are data: one OpSchema per op type.

A schema lists the op's inputs (by name, with which are optional, variadic or
must be known at build time), how to infer output types from input Vars, and
how to compute outputs with numpy. The builder, the validator, the
interpreter and the text parser all read this one table.

Foreign ops (types with a dotted prefix, e.g. ``onnx.Softmax``) carry their
own output types; a format module registers an evaluator for its prefix.
Which module provides a prefix is a table (PROVIDERS): the first lookup of an
``onnx.*`` op imports it, so evaluating a loaded .wpz does not depend on what
the caller happened to import before.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional

from ir.types import TensorType


class OpError(ValueError):
    """Wrong inputs for an op: the message names the op and the mismatch."""


@dataclass(frozen=True)
class In:
    name: str
    optional: bool = False
    variadic: bool = False
    const: bool = False  # the value must be known when the op is built


@dataclass(frozen=True)
class Context:
    """What a kernel may need besides its input values."""

    out_types: tuple
    attrs: dict
    run_block: Optional[Callable] = None  # (block, args) -> outputs, for ops with blocks
    op: object = None


@dataclass(frozen=True)
class OpSchema:
    op_type: str
    inputs: tuple  # tuple[In]
    infer: Callable  # (ins: dict[str, Var|tuple|None], attrs) -> list[TensorType]
    compute: Callable  # (vals: dict[str, ndarray|tuple|None], ctx: Context) -> list[ndarray]
    n_blocks: int = 0
    doc: str = ""
    # derived once from `inputs`: every op built looks its inputs up here
    specs: dict = field(init=False, repr=False, compare=False)  # name -> In
    required: tuple = field(init=False, repr=False, compare=False)  # names of required inputs

    def __post_init__(self):
        object.__setattr__(self, "specs", {i.name: i for i in self.inputs})
        object.__setattr__(self, "required", tuple(i.name for i in self.inputs if not i.optional))

    @property
    def input_names(self) -> tuple:
        return tuple(i.name for i in self.inputs)

    def spec(self, name: str) -> Optional[In]:
        return self.specs.get(name)


REGISTRY: dict[str, OpSchema] = {}


@dataclass(frozen=True)
class ForeignHandler:
    infer: Optional[Callable]  # may be None: foreign ops keep the types they were given
    compute: Callable  # (op, vals: dict[str, ndarray], out_types) -> list[ndarray]


FOREIGN: dict[str, ForeignHandler] = {}


class DuplicateRegistration(ValueError):
    """An op type (or foreign prefix, or block kernel) registered twice."""


def _refuse_twice(table: dict, key: str, what: str) -> None:
    if key in table:
        raise DuplicateRegistration(f"{what} {key!r} is already registered; "
                                    "two definitions of one name would make lookups depend on import order")


def register(op_type: str, inputs, infer, compute, n_blocks=0, doc=""):
    _refuse_twice(REGISTRY, op_type, "op type")
    REGISTRY[op_type] = OpSchema(op_type, tuple(inputs), infer, compute, n_blocks, doc)
    return REGISTRY[op_type]


def op(op_type: str, inputs, infer, n_blocks=0):
    """Decorator form: the decorated function is the kernel."""

    def wrap(compute):
        register(op_type, inputs, infer, compute, n_blocks, (compute.__doc__ or "").strip())
        return compute

    return wrap


# foreign-op prefix -> the module whose import registers its evaluator and block kernels
PROVIDERS: dict = {"onnx": "ir.formats.onnx.importer"}


def _load_provider(prefix: str) -> None:
    module = PROVIDERS.get(prefix)
    if module is not None:
        importlib.import_module(module)  # registers through register_foreign / register_block_kernel


def register_foreign(prefix: str, compute, infer=None):
    _refuse_twice(FOREIGN, prefix, "foreign op prefix")
    FOREIGN[prefix] = ForeignHandler(infer, compute)


# Foreign ops that own nested blocks (ONNX If / Loop / Scan) run here, not through their
# format's per-op evaluator: only the interpreter can run a block.
# op type -> kernel(op, vals, out_types, run_block) -> outputs; run_block(block, args) -> outputs
BLOCK_KERNELS: dict = {}


def register_block_kernel(op_type: str, kernel) -> None:
    _refuse_twice(BLOCK_KERNELS, op_type, "block kernel")
    BLOCK_KERNELS[op_type] = kernel


def _prefix(op_type: str) -> str:
    return op_type.split(".", 1)[0]


def block_kernel(op_type: str):
    """The block kernel of a foreign op type (its provider imported on first use), or None."""
    if is_foreign(op_type) and _prefix(op_type) not in FOREIGN:
        _load_provider(_prefix(op_type))
    return BLOCK_KERNELS.get(op_type)


def is_foreign(op_type: str) -> bool:
    return "." in op_type


def foreign_handler(op_type: str) -> Optional[ForeignHandler]:
    prefix = _prefix(op_type)
    handler = FOREIGN.get(prefix)
    if handler is None and prefix in PROVIDERS:
        _load_provider(prefix)
        handler = FOREIGN.get(prefix)
    return handler


def schema(op_type: str) -> OpSchema:
    try:
        return REGISTRY[op_type]
    except KeyError:
        raise OpError(f"unknown op type {op_type!r}") from None


# ---- helpers shared by schema modules -------------------------------------

def value(ins: dict, name: str, default=None):
    """The build-time value of an input (a Var with .val), or default when absent."""
    v = ins.get(name)
    if v is None:
        return default
    if v.val is None:
        raise OpError(f"input {name!r} must be a constant")
    return v.val


def tt(dtype, shape) -> TensorType:
    return TensorType.of(dtype, shape)
