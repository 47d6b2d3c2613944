"""The reference interpreter: runs a program in numpy, op by op.

It is the oracle for every equivalence check, so it does exactly what each
op's schema kernel says and nothing more. Foreign ops are delegated to the
evaluator their format registered.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ir.core import Block, Op, Program
from ir.ops import Context, OpError, foreign_handler, is_foreign, schema


class EvaluationError(ValueError):
    """Running a program failed: the message names the op or input."""


def _gather(op: Op, env: dict) -> dict:
    vals = {}
    for k, v in op.inputs.items():
        vals[k] = tuple(env[x.name] for x in v) if isinstance(v, tuple) else env[v.name]
    return vals


def _conform(op: Op, results) -> list:
    out = []
    if len(results) != len(op.outputs):
        raise EvaluationError(f"{op.op_type} {op.name!r}: produced {len(results)} outputs, declared {len(op.outputs)}")
    for var, r in zip(op.outputs, results):
        arr = np.asarray(r).astype(var.type.dt.storage, copy=False)
        if var.type.is_static and arr.shape != tuple(var.shape):
            raise EvaluationError(f"{op.op_type} {op.name!r}: output {var.name!r} has shape {arr.shape}, declared {var.shape}")
        out.append(arr)
    return out


def run_op(op: Op, env: dict) -> list:
    vals = _gather(op, env)
    try:
        if is_foreign(op.op_type):
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
        arr = np.asarray(inputs[var.name]).astype(var.type.dt.storage, copy=False)
        if len(arr.shape) != var.rank or any(isinstance(d, int) and d != s for d, s in zip(var.shape, arr.shape)):
            raise EvaluationError(f"input {var.name!r} has shape {arr.shape}, expected {var.shape}")
        env[var.name] = arr
    return env


def evaluate(program: Program, inputs: Mapping, function: str = "main") -> dict:
    """Run `function` of `program` on named numpy inputs; returns {output name: array}."""
    if function not in program.functions:
        raise EvaluationError(f"no function {function!r} (have {sorted(program.functions)})")
    fn = program.functions[function]
    outs = run_block(fn.block, (), _bind_inputs(fn, inputs))
    return {v.name: o for v, o in zip(fn.outputs, outs)}
