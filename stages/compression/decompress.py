"""decompress_weights: every constexpr form back to a plain const.

Every constexpr op of ir/ops/quant.py whose inputs are (chains of) consts is
folded: the values are computed by the op kernels themselves (through
`ir.interpret.run_op`), so each new const is bit for bit what evaluating the
program gives. A chain (e.g. a quantized LUT feeding a LUT lookup feeding a
per-channel scale, or lut_to_sparse + sparse_to_dense) becomes one const named
like the value its consumers read; the consts and constexprs used only inside
the chain go. One sweep of the shared rewrite driver does it all.
"""
from __future__ import annotations

from pyrsistent import freeze

from ir.analysis import use_def
from ir.construct import const_op
from ir.core import Function
from ir.rewrite import Pattern, Rewrite, map_functions, sweep_function
from stages.base import DEFAULT_CONTEXT, StageResult, stage
from stages.contracts import decompress_bound, lossy
from stages.compression.materialize import is_constexpr, is_foldable, materialize


def _plan(fn: Function):
    """(ends: constexpr ops whose values leave their chain, removable: ops only chains read)."""
    ud = use_def(fn)
    memo: dict = {}
    folded = [op for op in fn.block.walk()
              if is_constexpr(op) and all(is_foldable(v, ud.producer, memo) for v in op.input_vars())]
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


def _decompress_function(fn: Function, stats: dict) -> Function:
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
            value = materialize(out, ud.producer, env)
            consts.append(const_op(out.name, value, out.dtype))
            stats[out.name] = freeze({"from": op.op_type, "dtype": out.dtype, "shape": list(out.shape)})
        return Rewrite(claims=(op,), new_ops=tuple(consts), replace={c.outputs[0].name: c.outputs[0] for c in consts})

    return sweep_function(fn, (Pattern("decompress_weights", match, rewrite),))


@stage("decompress_weights", contract=lossy(decompress_bound, "bit for bit: outputs exact, each const the oracle's decoding"))
def decompress_weights(program, *, context=DEFAULT_CONTEXT):
    """Fold every constexpr chain into a plain const (values from the op kernels)."""
    stats: dict = {}
    new = map_functions(program, lambda fn: _decompress_function(fn, stats))
    return StageResult(new, freeze({"weights": stats, "decompressed": len(stats)}))
