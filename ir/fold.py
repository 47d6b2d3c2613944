"""Folding: the value a const, or a chain of ops over consts, stands for. The one place.

Every folded value is computed by the op kernels themselves (`ir.interpret.run_op`, the
function the interpreter runs), so it is bit for bit what evaluating the program yields:
there is no second implementation of any op's arithmetic here.

Vocabulary shared by every function below:

* `producer(var) -> Op | None`: who makes a value (`use_def(fn).producer`, or a dict's
  lookup wrapped by `producer_of`); None for function / block inputs.
* `env`: name -> array, the values known so far. It is filled as values are computed (a
  memo shared by the chains of one function) and a caller may seed it with replacements
  (a compression stage trying a candidate LUT reconstructs the weight with it).
* `admit(op) -> bool`: which ops may be folded. The default admits the constexpr ops (what
  a compressed weight is made of); the ONNX exporter admits every core op without blocks
  (any value knowable without inputs becomes an initializer).

Users: `decompress_weights` (`fold_program`), the compression stages (`fold_value`,
`evaluate_ops`), the report (`constant_values`), the ONNX exporter (`static_value`).
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional

import numpy as np
from pyrsistent import freeze

from ir.analysis import use_def
from ir.construct import const_op
from ir.core import Function, Op, Program, Var
from ir.interpret import run_op
from ir.rewrite import Pattern, Rewrite, map_functions, sweep_function

Producer = Callable[[Var], Optional[Op]]


class NotFoldable(ValueError):
    """A value asked for by fold_value depends on something that is not a const or an admitted op."""


def is_constexpr(op: Optional[Op]) -> bool:
    return op is not None and op.op_type.startswith("constexpr_")


def producer_of(ops: Iterable[Op]) -> Producer:
    """A producer function over a list of ops (by output name)."""
    made = {out.name: op for op in ops for out in op.outputs}
    return lambda var: made.get(var.name)


def _chain(var: Var, producer: Producer, admit, known, unknown: set) -> Optional[list]:
    """The ops to run, inputs first, to compute `var` from known values and consts; None
    when some value on the way is neither (every value found to depend on it joins
    `unknown`, so that later questions about it end at once). Iterative: a chain of
    admitted ops may be as long as the program."""
    ops, opened, done = [], {}, set()
    stack = [(var, None)]
    while stack:
        v, finished = stack.pop()
        if finished is not None:
            ops.append(finished)
            done.add(id(finished))
            continue
        if known(v):
            continue
        op = producer(v)
        # (a const reaches here only when its var holds no value: nothing to read)
        if v.name in unknown or op is None or op.op_type == "const" or not admit(op):
            unknown.add(v.name)
            # every op opened and not finished lies on the path to v: all depend on it
            unknown.update(out.name for key, o in opened.items() if key not in done for out in o.outputs)
            return None
        if id(op) in opened:
            continue
        opened[id(op)] = op
        stack.append((None, op))
        stack.extend((u, None) for u in reversed(list(op.input_vars())))
    return ops


def _knower(env: dict):
    def known(v: Var) -> bool:
        if v.name in env:
            return True
        if v.val is not None:
            env[v.name] = v.val
            return True
        return False
    return known


def _run(ops: list, env: dict) -> None:
    with np.errstate(all="ignore"):  # inf / nan propagate as each op's numpy semantics say
        for op in ops:
            for out, value in zip(op.outputs, run_op(op, env)):
                env[out.name] = value


def static_value(var: Optional[Var], producer: Producer, env: Optional[dict] = None, *,
                 admit: Callable[[Op], bool] = is_constexpr,
                 unknown: Optional[set] = None) -> Optional[np.ndarray]:
    """var's value when it is a const or every op on the way back to consts is admitted;
    else None. `env` memoizes values, `unknown` the names found not foldable."""
    if var is None:
        return None
    env = {} if env is None else env
    unknown = set() if unknown is None else unknown
    known = _knower(env)
    if known(var):
        return env[var.name]
    ops = _chain(var, producer, admit, known, unknown)
    if ops is None:
        return None
    _run(ops, env)
    return env[var.name]


def fold_value(var: Var, producer: Producer, env: Optional[dict] = None, *,
               admit: Callable[[Op], bool] = is_constexpr) -> np.ndarray:
    """The value of `var`, a const or the output of a chain of admitted ops over consts;
    NotFoldable when it depends on anything else (an input, an op not admitted)."""
    value = static_value(var, producer, env, admit=admit)
    if value is None:
        raise NotFoldable(f"{var.name!r} is not a const nor made from consts by constexpr ops only")
    return value


def is_foldable(var: Var, producer: Producer, *, admit: Callable[[Op], bool] = is_constexpr) -> bool:
    """Whether fold_value(var, producer) would succeed, without computing anything."""
    return _chain(var, producer, admit, lambda v: v.val is not None, set()) is not None


def evaluate_ops(ops: Iterable[Op], target: Var, known: Optional[Mapping] = None) -> np.ndarray:
    """The value of `target` computed from a list of new ops (consts and constexprs not yet
    in any program), `known` giving values of names they read from outside."""
    ops = list(ops)
    return fold_value(target, producer_of(ops), dict(known or {}), admit=lambda op: True)


def constant_values(fn: Function, *, admit: Callable[[Op], bool] = is_constexpr) -> dict:
    """name -> value of every const and every foldable output of an admitted op in `fn`
    (nested blocks included), in program order."""
    ud = use_def(fn)
    env: dict = {}
    unknown: set = set()
    values = {}
    for op in fn.block.walk():
        if op.op_type != "const" and not admit(op):
            continue
        for out in op.outputs:
            value = static_value(out, ud.producer, env, admit=admit, unknown=unknown)
            if value is not None:
                values[out.name] = value
    return values


# ---- the program transform -------------------------------------------------------------

def _plan(fn: Function):
    """(ends: foldable constexpr ops whose values leave their chain, removable: ops only
    chains read)."""
    ud = use_def(fn)
    folded = [op for op in fn.block.walk()
              if is_constexpr(op) and all(is_foldable(v, ud.producer) for v in op.input_vars())]
    if not folded:
        return [], set()
    inside = {id(op) for op in folded}

    def read_outside(op):
        # a constexpr nothing reads at all is folded as an end too (it stays a dead const)
        return not any(_used(ud, out) for out in op.outputs) or any(
            ud.is_block_output(out) or any(id(c) not in inside for c in ud.consumers_of(out))
            for out in op.outputs)

    leaves = [read_outside(op) for op in folded]
    ends = [op for op, leaving in zip(folded, leaves) if leaving]
    removable = {id(op) for op, leaving in zip(folded, leaves) if not leaving}
    # consts that only folded ops read go with them (one pass: `inside` is fixed)
    removable.update(id(op) for op in fn.block.walk() if op.op_type == "const" and _read_only_by(ud, op, inside))
    return ends, removable


def _read_only_by(ud, op, inside: set) -> bool:
    out = op.outputs[0]
    readers = ud.consumers_of(out)
    return bool(readers) and not ud.is_block_output(out) and all(id(c) in inside for c in readers)


def _used(ud, var) -> bool:
    return bool(ud.consumers_of(var)) or ud.is_block_output(var)


def _fold_function(fn: Function, folded: dict) -> Function:
    ends, removable = _plan(fn)
    if not ends:
        return fn
    ud = use_def(fn)
    env: dict = {}
    end_ids = {id(op) for op in ends}

    def match(op, ctx):
        return op if id(op) in end_ids or id(op) in removable else None

    def rewrite(op, ctx):
        if id(op) in removable:
            return Rewrite(claims=(op,))
        consts = []
        used = [out for out in op.outputs if _used(ud, out)] or list(op.outputs)
        for out in used:
            consts.append(const_op(out.name, fold_value(out, ud.producer, env), out.dtype))
            folded[out.name] = freeze({"from": op.op_type, "dtype": out.dtype, "shape": list(out.shape)})
        return Rewrite(claims=(op,), new_ops=tuple(consts), replace={c.outputs[0].name: c.outputs[0] for c in consts})

    return sweep_function(fn, (Pattern("fold_constexpr_chains", match, rewrite),))


def fold_program(program: Program):
    """(program with every constexpr chain over consts folded into one const, folded).

    A chain (a quantized LUT feeding a LUT lookup feeding a per-channel scale, or
    lut_to_sparse + sparse_to_dense) becomes one const named like the value its consumers
    read; the consts and constexprs only the chain read go. `folded`: value name -> {"from": op type, "dtype", "shape"} of each
    new const. One sweep of the shared rewrite driver; the input itself comes back when
    nothing folds."""
    folded: dict = {}
    new = map_functions(program, lambda fn: _fold_function(fn, folded))
    return new, folded
