"""The value a constexpr chain stands for, computed by the op kernels themselves.

`materialize(var, producer)` follows `var` back through constexpr ops to the
consts they read and runs each op with `ir.interpret.run_op`, the function the
interpreter uses: so a decompressed const is bit for bit what evaluating the
program yields (one source of truth for the arithmetic of every form).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ir.core import Op, Var
from ir.interpret import run_op


def is_constexpr(op: Optional[Op]) -> bool:
    return op is not None and op.op_type.startswith("constexpr_")


def is_foldable(var: Var, producer: Callable, _memo: Optional[dict] = None) -> bool:
    """Whether var is a const, or a constexpr op whose inputs all are (recursively)."""
    memo = {} if _memo is None else _memo
    op = producer(var)
    if op is None:
        return False
    if id(op) in memo:
        return memo[id(op)]
    if op.op_type == "const":
        ok = var.val is not None
    else:
        ok = is_constexpr(op) and all(is_foldable(v, producer, memo) for v in op.input_vars())
    memo[id(op)] = ok
    return ok


def materialize(var: Var, producer: Callable, env: Optional[dict] = None) -> np.ndarray:
    """The value of `var` (a const, or the output of a chain of constexpr ops over consts).

    `producer(var) -> Op`; `env` (name -> array) memoizes values shared by several chains.
    """
    env = {} if env is None else env
    if var.name in env:
        return env[var.name]
    if var.val is not None:
        env[var.name] = var.val
        return var.val
    op = producer(var)
    if not is_constexpr(op):
        raise ValueError(f"{var.name!r} is not made by a const or constexpr op")
    for v in op.input_vars():
        materialize(v, producer, env)
    with np.errstate(all="ignore"):
        for out, value in zip(op.outputs, run_op(op, env)):
            env[out.name] = value
    return env[var.name]


def evaluate_ops(ops, target: Var, known: Optional[dict] = None) -> np.ndarray:
    """The value of `target` computed from a list of new ops (consts and constexprs, in order)."""
    env = dict(known or {})
    with np.errstate(all="ignore"):
        for op in ops:
            if op.op_type == "const":
                env[op.outputs[0].name] = op.outputs[0].val
                continue
            for v in op.input_vars():
                if v.name not in env and v.val is not None:
                    env[v.name] = v.val
            for out, value in zip(op.outputs, run_op(op, env)):
                env[out.name] = value
    return env[target.name]
