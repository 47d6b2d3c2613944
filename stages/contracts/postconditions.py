"""Postconditions: what a canonicalization leaves no instance of.

A stage disabled by an off-by-one returns its input unchanged, which every equivalence check
accepts. A canonicalization promises more: afterwards, no site of its pattern is left. These
predicates find such sites with their own, plain reading of the pattern (not the stage's match
functions), so a match that silently declines is caught on any program that has a site.
"""
from __future__ import annotations

import numpy as np

from ir.core import Program
from stages.contracts.graph import _block_outputs, _blocks_of, _const_of, _producers, _readers


def _same_param(prod, a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    va, vb = _const_of(prod, a), _const_of(prod, b)
    if va is None or vb is None:
        return a.name == b.name
    return np.shape(va) == np.shape(vb) and bool(np.all(np.asarray(va) == np.asarray(vb)))


def no_cancelling_pairs(program: Program) -> list:
    """dequantize_quantize_pair_elimination leaves no dequantize -> quantize with the same scale,
    zero point and axis, in one block, neither value a block output, the quantize giving back
    the dequantize's input type."""
    sites = []
    for fn in program.functions.values():
        prod, outs = _producers(fn), _block_outputs(fn)
        for block in _blocks_of(fn):
            here = {id(op) for op in block.ops}
            for q in block.ops:
                if q.op_type != "quantize" or q.outputs[0].name in outs:
                    continue
                d = prod.get(q.inputs["input"].name)
                if d is None or d.op_type != "dequantize" or id(d) not in here or d.outputs[0].name in outs:
                    continue
                if q.outputs[0].type != d.inputs["input"].type:
                    continue
                if all(_same_param(prod, d.inputs.get(k), q.inputs.get(k)) for k in ("scale", "zero_point", "axis")):
                    sites.append(f"{fn.name}: dequantize {d.name!r} -> quantize {q.name!r} still cancel out")
    return sites


_FP16_MAX = 65504.0


_FP16_TINY = float(np.nextafter(np.float16(0), np.float16(1)))


def _normalizable(s_a, s_b, s_z) -> bool:
    """Dividing by s_b (a scalar) keeps s_a / s_b and s_z / s_b inside fp16's range."""
    if s_b is None or np.size(s_b) != 1 or s_a is None or s_z is None:
        return False
    b = np.float32(np.asarray(s_b).reshape(()))
    with np.errstate(all="ignore"):
        q = np.abs(np.concatenate([np.asarray(s_a, np.float32).reshape(-1) / b,
                                   np.asarray(s_z, np.float32).reshape(-1) / b]))
    return bool(np.all(np.isfinite(q)) and q.max() <= _FP16_MAX and q.min() >= _FP16_TINY)


def no_unnormalized_binary_ops(program: Program) -> list:
    """distributive_quantized_binary_op_scale_normalization leaves no quantized add / sub
    (dequantize, dequantize -> add|sub (-> relu) -> quantize, each the only reader of the
    last, no value but the quantize's a block output) where neither input scale is 1 although
    dividing by one of them (a scalar) keeps every scale inside fp16's range."""
    sites = []
    for fn in program.functions.values():
        prod, readers, outs = _producers(fn), _readers(fn), _block_outputs(fn)
        for op in fn.block.walk():
            if op.op_type not in ("add", "sub"):
                continue
            dqs = [prod.get(op.inputs[k].name) for k in ("x", "y")]
            if any(d is None or d.op_type != "dequantize" for d in dqs):
                continue
            chain, tail, end = [op], None, op
            nxt = readers.get(op.outputs[0].name, [])
            if len(nxt) == 1 and nxt[0].op_type == "relu":
                tail = end = nxt[0]
                chain.append(tail)
            nxt = readers.get(end.outputs[0].name, [])
            if len(nxt) != 1 or nxt[0].op_type != "quantize":
                continue
            q = nxt[0]
            if any(v.outputs[0].name in outs for v in dqs + chain):
                continue
            scales = [_const_of(prod, d.inputs["scale"]) for d in dqs]
            s_z = _const_of(prod, q.inputs["scale"])
            if any(s is not None and np.all(np.asarray(s) == 1) for s in scales):
                continue
            scalar = [d.inputs.get("axis") is None for d in dqs]
            if any(scalar[i] and _normalizable(scales[1 - i], scales[i], s_z) for i in (0, 1)):
                sites.append(f"{fn.name}: {op.op_type} {op.name!r} -> quantize {q.name!r} could be "
                             f"normalized by a scalar input scale and was not")
    return sites
