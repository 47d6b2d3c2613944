"""Checking a program against the IR rules, in one linear pass.

`validate(program)` returns the program when it is well formed and raises
InvalidProgram naming the function, the op and the broken rule otherwise:
unknown op types, wrong or missing input names, values used before their
definition or defined twice (anywhere in a function, nested blocks
included), declared output types that disagree with the schema's inference,
sub-byte constants out of range, writeable arrays, and block outputs that
are not defined.
"""
from __future__ import annotations

import numpy as np

from ir.core import Block, Function, InvalidProgram, Op, Program, TensorType, Var
from ir.dtypes import UnknownDType, dtype as lookup_dtype, fits
from ir.lazy import known_range
from ir.ops import OpError, foreign_handler, is_foreign, schema
from ir.ops.registry import REGISTRY


class _Scope:
    """Values visible at a point of a function: nested blocks see outer values,
    and what they define goes out of scope when they end."""

    def __init__(self, fn: Function, trusted: frozenset = frozenset()):
        self.fn = fn
        self.trusted = trusted  # ids of ops already validated (alive: their program is held)
        self.visible: dict = {}  # name -> defining Var
        self.ever: set = set()  # every value name defined anywhere in the function
        self.op_names: set = set()
        self.frames: list = []

    def fail(self, where: str, msg: str):
        raise InvalidProgram(f"function {self.fn.name!r}: {where}: {msg}")

    def define(self, where: str, var: Var):
        if var.name in self.ever:
            self.fail(where, f"value %{var.name} is defined twice")
        self.ever.add(var.name)
        self.visible[var.name] = var
        self.frames[-1].append(var.name)

    def lookup(self, where: str, var: Var, role: str) -> Var:
        d = self.visible.get(var.name)
        if d is None:
            self.fail(where, f"{role} uses %{var.name} before its definition (or out of its scope)")
        if d is not var and d.type != var.type:
            self.fail(where, f"{role} refers to %{var.name} as {var.type}, but it is defined as {d.type}")
        return d

    def enter(self):
        self.frames.append([])

    def leave(self):
        for name in self.frames.pop():
            del self.visible[name]


def _where(op: Op) -> str:
    return f"{op.op_type} {op.name!r}"


# ---- arrays ------------------------------------------------------------------

def _arrays_in(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _arrays_in(v)
    elif hasattr(value, "items"):
        for v in value.values():
            yield from _arrays_in(v)


def _check_arrays(scope: _Scope, op: Op):
    for k, v in op.attrs.items():
        for arr in _arrays_in(v):
            if arr.flags.writeable:
                scope.fail(_where(op), f"attribute {k!r} holds a writeable array (IR arrays are read-only)")
    for v in op.outputs:
        if v.val is not None and v.val.flags.writeable:
            scope.fail(_where(op), f"output %{v.name} carries a writeable array")


def _fits(val: np.ndarray, dt) -> bool:
    """fits(), from the range a spill remembered when it has one (ir.lazy.known_range):
    reading a spilled weight back from its file only to check its range would cost a pass
    over the file and keep its pages resident."""
    span = known_range(val)
    if span is None:
        return fits(val, dt)
    return dt.min <= span[0] and span[1] <= dt.max


def _check_const(scope: _Scope, op: Op):
    val = op.attrs.get("val")
    if not isinstance(val, np.ndarray):
        scope.fail(_where(op), "a const needs an array attribute 'val'")
    try:
        dt = lookup_dtype(op.attrs.get("dtype", op.outputs[0].dtype if op.outputs else "fp32"))
    except UnknownDType as e:
        scope.fail(_where(op), str(e))
    if dt.is_subbyte:
        if val.dtype != dt.storage:
            scope.fail(_where(op), f"{dt.name} values must be stored as {dt.storage}, got {val.dtype}")
        if not _fits(val, dt):
            scope.fail(_where(op), f"values [{val.min()}, {val.max()}] do not fit in {dt.name} "
                                   f"[{dt.min}, {dt.max}]")


# ---- inputs and types --------------------------------------------------------

def _check_input_names(scope: _Scope, op: Op, sch):
    for k, v in op.inputs.items():
        spec = sch.spec(k)
        if spec is None:
            scope.fail(_where(op), f"unknown input {k!r}; expected one of "
                                   f"{', '.join(sch.input_names) or '(none)'}")
        if spec.variadic != isinstance(v, tuple):
            scope.fail(_where(op), f"input {k!r} must be {'a tuple of values' if spec.variadic else 'one value'}")
    for spec in sch.inputs:
        if not spec.optional and spec.name not in op.inputs:
            scope.fail(_where(op), f"missing required input {spec.name!r}")
    if len(op.blocks) != sch.n_blocks:
        scope.fail(_where(op), f"has {len(op.blocks)} blocks, the op takes {sch.n_blocks}")


def _resolved_inputs(scope: _Scope, op: Op) -> dict:
    ins = {}
    for k, v in op.inputs.items():
        if isinstance(v, tuple):
            ins[k] = tuple(scope.lookup(_where(op), x, f"input {k!r}") for x in v)
        else:
            ins[k] = scope.lookup(_where(op), v, f"input {k!r}")
    return ins


def _inferred_types(scope: _Scope, op: Op, ins: dict):
    """The output types the schema (or a foreign handler) infers; None when it cannot say."""
    try:
        if is_foreign(op.op_type):
            handler = foreign_handler(op.op_type)
            return handler.infer(ins, dict(op.attrs)) if handler and handler.infer else None
        types = schema(op.op_type).infer(ins, dict(op.attrs))
    except OpError as e:
        scope.fail(_where(op), f"inputs do not fit the op: {e}")
    except (TypeError, IndexError, KeyError, AttributeError, ValueError) as e:
        scope.fail(_where(op), f"inputs do not fit the op ({type(e).__name__}: {e})")
    if types is None and op.blocks:  # cond-like ops return their blocks' outputs: every block alike
        _check_block_types(scope, op)
        types = [v.type for v in op.blocks[0].outputs]
    return types


def _check_types(scope: _Scope, op: Op, inferred):
    declared = [v.type for v in op.outputs]
    if inferred is None:
        return
    inferred = [t if hasattr(t, "is_tensor") else TensorType.of(*t) for t in inferred]
    if len(inferred) != len(declared):
        scope.fail(_where(op), f"declares {len(declared)} outputs, the op has {len(inferred)}")
    for v, t in zip(op.outputs, inferred):
        if v.type != t:
            scope.fail(_where(op), f"output %{v.name} is declared {v.type} but the op gives {t}")


def _check_block_types(scope: _Scope, op: Op):
    first = [v.type for v in op.blocks[0].outputs] if op.blocks else None
    for i, b in enumerate(op.blocks[1:], 1):
        if [v.type for v in b.outputs] != first:
            scope.fail(_where(op), f"block {i} returns {[str(v.type) for v in b.outputs]}, "
                                   f"block 0 returns {[str(t) for t in first]}")


# ---- the walk ------------------------------------------------------------------

def _same_inputs(scope: _Scope, op: Op) -> bool:
    """Every input is visible here and is the very Var the op holds (else the full check
    runs and words the problem)."""
    visible = scope.visible
    return all(visible.get(v.name) is v for v in op.input_vars())


def _check_op(scope: _Scope, op: Op):
    if op.name in scope.op_names:
        scope.fail(_where(op), "op name is used twice")
    scope.op_names.add(op.name)
    # An op object taken over unchanged from a validated program, reading the very same
    # Vars: its own checks (names, arrays, inferred types) are functions of the op and
    # those Vars alone, so they hold again; only where it sits (scope, order, uniqueness)
    # is new, and that is checked above and by define().
    if not op.blocks and id(op) in scope.trusted and _same_inputs(scope, op):
        for v in op.outputs:
            scope.define(_where(op), v)
        return
    where = _where(op)
    foreign = is_foreign(op.op_type)
    if not foreign and op.op_type not in REGISTRY:
        scope.fail(where, f"unknown op type {op.op_type!r} (not registered, and no 'prefix.' of a foreign op)")
    if foreign and (op.op_type.startswith(".") or op.op_type.endswith(".")):
        scope.fail(where, f"foreign op type {op.op_type!r} needs a prefix and a name")
    if not foreign:
        _check_input_names(scope, op, schema(op.op_type))
    _check_arrays(scope, op)
    if op.op_type == "const":
        _check_const(scope, op)
    ins = _resolved_inputs(scope, op)
    for i, b in enumerate(op.blocks):
        _check_block(scope, b, f"{where} block {i}")
    # blocks that are alternatives (cond) must agree: checked where the schema says the op returns
    # its blocks' outputs; a foreign op's or a loop's blocks follow their own rules
    _check_types(scope, op, _inferred_types(scope, op, ins))
    for v in op.outputs:
        scope.define(where, v)


def _check_block(scope: _Scope, block: Block, where: str = "block"):
    scope.enter()
    for v in block.inputs:
        scope.define(f"{where} input", v)
    for op in block.ops:
        _check_op(scope, op)
    for v in block.outputs:
        scope.lookup(f"{where} outputs", v, "return")
    scope.leave()


def validate(program: Program, trusted: Program = None) -> Program:
    """The program itself when it follows the IR rules; InvalidProgram naming the op otherwise.

    `trusted`: a program already validated (a stage's input, when this is its output). Ops
    of `program` that are the same objects as ops of `trusted` and read the same Vars are
    not checked again, except for where they sit (scope, order, unique names and values):
    a stage that rewrote a few ops of a large graph costs the validation of those ops."""
    ids = frozenset(id(op) for _, op in trusted.walk()) if trusted is not None else frozenset()
    for name in sorted(program.functions):
        fn = program.functions[name]
        if fn.name != name:
            raise InvalidProgram(f"function {fn.name!r} is filed under the name {name!r}")
        _check_block(_Scope(fn, ids), fn.block, "function")
    return program
