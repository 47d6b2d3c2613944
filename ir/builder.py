"""Building programs in code, in the style of coremltools' `mb.program`.

    @program(inputs={"x": TensorSpec((1, 64), "fp32")})
    def net(b, x):
        w = b.const(np.ones((32, 64), np.float32), name="w")
        return b.relu(x=b.linear(x=x, weight=w))

`b.<op_type>(...)` exists for every registered op. Inputs may be Vars or
plain values (numpy arrays, python scalars, lists, dtype strings), which
become const ops. Names are optional and made unique.
"""
from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Optional

from ir.core import Block, Function, Program, TensorType, Var, gc_paused
from ir.construct import const_op, new_op
from ir.ops import REGISTRY, OpError, schema


class TensorSpec(NamedTuple):
    shape: tuple
    dtype: str = "fp32"

    def type(self) -> TensorType:
        return TensorType.of(self.dtype, self.shape)


class _Names:
    """Unique names across a function (nested blocks included)."""

    def __init__(self):
        self.used: set = set()
        self.counters: dict = {}

    def fresh(self, hint: str) -> str:
        if hint not in self.used:
            self.used.add(hint)
            return hint
        for i in itertools.count(self.counters.get(hint, 1)):
            cand = f"{hint}_{i}"
            if cand not in self.used:
                self.counters[hint] = i + 1
                self.used.add(cand)
                return cand

    def auto(self, op_type: str) -> str:
        for i in itertools.count(self.counters.get(op_type, 0)):
            cand = f"{op_type}_{i}"
            if cand not in self.used:
                self.counters[op_type] = i + 1
                self.used.add(cand)
                return cand


class Builder:
    def __init__(self, names: Optional[_Names] = None):
        self.names = names or _Names()
        self.ops: list = []
        self.inputs: list = []

    # -- values ---------------------------------------------------------------
    def input(self, name: str, spec) -> Var:
        t = spec.type() if isinstance(spec, TensorSpec) else spec
        v = Var(self.names.fresh(name), t)
        self.inputs.append(v)
        return v

    def const(self, val, name: Optional[str] = None, dtype: Optional[str] = None) -> Var:
        op = const_op(self.names.fresh(name) if name else self.names.auto("const"), val, dtype)
        self.ops.append(op)
        return op.outputs[0]

    def _as_input(self, op_name: str, key: str, value, variadic: bool = False):
        if value is None or isinstance(value, Var):
            return value
        if variadic and isinstance(value, (list, tuple)):  # each entry is one Var (or a value)
            return tuple(self._as_input(op_name, f"{key}_{i}", v) for i, v in enumerate(value))
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Var) for v in value):
            return tuple(value)
        return self.const(value, name=f"{op_name}_{key}")

    # -- ops ------------------------------------------------------------------
    def add_op(self, op_type: str, name: Optional[str] = None, attrs: Optional[dict] = None,
               blocks: tuple = (), out_types=None, **inputs):
        name = self.names.fresh(name) if name else self.names.auto(op_type)
        specs = REGISTRY[op_type].specs if op_type in REGISTRY else {}
        ins = {}
        for k, v in inputs.items():
            if v is None or v.__class__ is Var:  # the common case, without a call
                ins[k] = v
            else:
                spec = specs.get(k)
                ins[k] = self._as_input(name, k, v, spec is not None and spec.variadic)
        op = new_op(op_type, name, ins, attrs, blocks, out_types)
        self.ops.append(op)
        return op.outputs[0] if len(op.outputs) == 1 else op.outputs

    def foreign(self, op_type: str, out_types, name=None, attrs=None, **inputs):
        """An op the core set does not model (e.g. 'onnx.Softmax'), with given output types."""
        if "." not in op_type:
            raise OpError(f"foreign op type {op_type!r} needs a prefix, e.g. 'onnx.{op_type}'")
        return self.add_op(op_type, name, attrs, out_types=list(out_types), **inputs)

    def block(self, body: Callable, inputs=()) -> Block:
        """A nested block built by body(b, *block_inputs); it may use outer Vars."""
        child = Builder(self.names)
        args = [child.input(n, s) for n, s in inputs]
        outs = body(child, *args)
        return Block.make(args, child.ops, _as_tuple(outs))

    def cond(self, pred, true_fn: Callable, false_fn: Callable, name=None):
        blocks = (self.block(true_fn), self.block(false_fn))
        t, f = ([v.type for v in b.outputs] for b in blocks)
        if t != f:
            raise OpError(f"cond {name or ''}: branches return {t} and {f}")
        return self.add_op("cond", name, blocks=blocks, pred=pred)

    def while_loop(self, cond_fn: Callable, body_fn: Callable, loop_vars, name=None):
        """MIL's while_loop: while cond_fn(b, *vars) (a scalar bool) holds, vars = body_fn(b, *vars);
        returns the vars' final values. Plain values in loop_vars become consts."""
        base = name or "while_loop"
        init = [self._as_input(base, f"loop_vars_{i}", v) for i, v in enumerate(loop_vars)]
        carried = [(f"{base}_{v.name}", v.type) for v in init]
        blocks = (self.block(cond_fn, carried), self.block(body_fn, carried))
        if [v.type for v in blocks[1].outputs] != [v.type for v in init]:
            raise OpError(f"while_loop {name or ''}: the body returns {[str(v.type) for v in blocks[1].outputs]}, "
                          f"the loop variables are {[str(v.type) for v in init]}")
        return self.add_op("while_loop", name, blocks=blocks, loop_vars=tuple(init))

    def __getattr__(self, op_type: str):
        if op_type.startswith("_") or op_type not in REGISTRY:
            raise AttributeError(f"no op type {op_type!r}")
        if schema(op_type).n_blocks:
            raise AttributeError(f"{op_type} has blocks: use the builder's own method for it")
        method = lambda name=None, **kw: self.add_op(op_type, name, **kw)  # noqa: E731
        setattr(self, op_type, method)  # found directly next time, without __getattr__
        return method

    def function(self, name: str = "main", outputs=(), opset: str = "iOS18") -> Function:
        return Function(name, Block.make(self.inputs, self.ops, _as_tuple(outputs)), opset)


def _as_tuple(outs) -> tuple:
    if isinstance(outs, Var):
        return (outs,)
    return tuple(outs)


def build_function(fn: Callable, inputs: dict, name: str = "main", opset: str = "iOS18") -> Function:
    with gc_paused():
        b = Builder()
        args = [b.input(k, spec) for k, spec in inputs.items()]
        return b.function(name, fn(b, *args), opset)


def program(inputs: dict, opset: str = "iOS18", name: str = "main"):
    """Decorator: the decorated `fn(b, *inputs)` becomes a one-function Program."""

    def wrap(fn: Callable) -> Program:
        return Program.make([build_function(fn, inputs, name, opset)])

    return wrap
