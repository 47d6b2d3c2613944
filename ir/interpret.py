"""The reference interpreter: runs a program in numpy, op by op.

It is the oracle for every equivalence check, so it does exactly what each
op's schema kernel says and nothing more. Foreign ops are delegated to the
evaluator their format registered.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ir.core import Block, Op, Program
from ir.ops import Context, block_kernel, OpError, foreign_handler, is_foreign, schema


class EvaluationError(ValueError):
    """Running a program failed: the message names the op or input."""


def _gather(op: Op, env: dict) -> dict:
    vals = {}
    for k, v in op.inputs.items():
        vals[k] = tuple(env[x.name] for x in v) if isinstance(v, tuple) else env[v.name]
    return vals


def conform_value(t, r, what: str, check_shape: bool = True):
    """A run-time value as its declared type holds it: a tensor in its storage dtype with
    the declared static shape; a sequence as a list; a map as a dict; an optional as None
    or its element's value. Raises EvaluationError naming `what` on a mismatch."""
    if t.is_tensor:
        if isinstance(r, (list, dict)) or r is None:
            raise EvaluationError(f"{what}: expected a tensor {t}, got {type(r).__name__}")
        arr = np.asarray(r).astype(t.dt.storage, copy=False)
        if t.shape is not None and check_shape:
            if arr.ndim != len(t.shape) or any(isinstance(d, int) and d != n for d, n in zip(t.shape, arr.shape)):
                raise EvaluationError(f"{what} has shape {arr.shape}, expected {t.shape}")
        return arr
    if t.kind == "optional":
        return None if r is None else conform_value(t.elem, r, what, check_shape)
    if t.kind == "sequence":
        if not isinstance(r, (list, tuple)):
            raise EvaluationError(f"{what}: expected a sequence {t}, got {type(r).__name__}")
        # ONNX shape inference gives a sequence one element shape even when its elements
        # differ (a Loop that appends growing tensors): only their dtype is checked
        return [conform_value(t.elem, x, f"{what}[{i}]", check_shape=False) for i, x in enumerate(r)]
    if not isinstance(r, dict):
        raise EvaluationError(f"{what}: expected a map {t}, got {type(r).__name__}")
    return {k: conform_value(t.value, x, f"{what}[{k!r}]") for k, x in r.items()}


def _conform(op: Op, results) -> list:
    if len(results) != len(op.outputs):
        raise EvaluationError(f"{op.op_type} {op.name!r}: produced {len(results)} outputs, declared {len(op.outputs)}")
    return [conform_value(var.type, r, f"{op.op_type} {op.name!r}: output {var.name!r}")
            for var, r in zip(op.outputs, results)]


def run_op(op: Op, env: dict) -> list:
    vals = _gather(op, env)
    try:
        kernel = block_kernel(op.op_type) if op.blocks else None
        if kernel is not None:
            results = kernel(op, vals, [v.type for v in op.outputs],
                                                lambda block, args: run_block(block, args, env))
        elif is_foreign(op.op_type):
            handler = foreign_handler(op.op_type)
            if handler is None:
                raise EvaluationError(f"{op.op_type} {op.name!r}: no evaluator registered for this foreign op")
            results = handler.compute(op, vals, [v.type for v in op.outputs])
        else:
            ctx = Context(tuple(v.type for v in op.outputs), op.attrs,
                          lambda block, args: run_block(block, args, env), op)
            results = schema(op.op_type).compute(vals, ctx)
    except (EvaluationError, OpError):
        raise
    except (ValueError, TypeError, IndexError, FloatingPointError, MemoryError) as e:
        raise EvaluationError(f"{op.op_type} {op.name!r}: {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001 - a format's evaluator (onnx's reference) raises anything
        if not is_foreign(op.op_type):
            raise
        raise EvaluationError(f"{op.op_type} {op.name!r}: {type(e).__name__}: {e}") from e
    return _conform(op, results)


def run_block(block: Block, args, outer: dict) -> tuple:
    env = dict(outer)
    for var, a in zip(block.inputs, args):
        env[var.name] = a
    with np.errstate(all="ignore"):  # inf / nan propagate as the op's numpy semantics say
        for op in block.ops:
            for var, r in zip(op.outputs, run_op(op, env)):
                env[var.name] = r
    return tuple(env[v.name] for v in block.outputs)


def _bind_inputs(fn, inputs: Mapping) -> dict:
    env = {}
    for var in fn.inputs:
        if var.name not in inputs:
            raise EvaluationError(f"missing input {var.name!r} (expected {[v.name for v in fn.inputs]})")
        given = inputs[var.name]
        if var.type.is_tensor and isinstance(given, (list, tuple)):
            given = np.asarray(given)  # a nested list is a tensor a user typed in
        env[var.name] = conform_value(var.type, given, f"input {var.name!r}")
    return env


def evaluate(program: Program, inputs: Mapping, function: str = "main") -> dict:
    """Run `function` of `program` on named numpy inputs; returns {output name: array}."""
    if function not in program.functions:
        raise EvaluationError(f"no function {function!r} (have {sorted(program.functions)})")
    fn = program.functions[function]
    outs = run_block(fn.block, (), _bind_inputs(fn, inputs))
    return {v.name: o for v, o in zip(fn.outputs, outs)}
