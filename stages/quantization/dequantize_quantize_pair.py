"""dequantize_quantize_pair_elimination: a dequantize followed by a quantize with
identical parameters gives back its input.

    q -> dequantize -> quantize -> op2          becomes   q -> op2
    q -> dequantize -> quantize -> op2
                  \\-> other                      becomes   q -> dequantize -> other
                                                            \\-> op2

Identical means: equal scales, zero points both absent or equal, axes both
absent or equal (the seed's test), and the quantize produces the dequantize's
input type (the seed leaves this implicit; without it the replacement would
change a value's type). A dequantize that is a block output is left alone, and
so is a quantize whose output is a block output (its name is part of the block's
signature). The dequantize is removed when every reader was such a quantize.

The reverse order, quantize -> dequantize, is not redundant: it records the
quantization of a float value, so it is kept.
"""
from __future__ import annotations

from ir.rewrite import Pattern, Rewrite
from stages.base import DEFAULT_CONTEXT, stage
from stages.rewriting import rewrite_stage
from stages.contracts import exact, no_cancelling_pairs
from stages.quantization._match import same_const


# (inputs are read from op.inputs, not as op.scale: attribute access costs ~10x a dict
# lookup, and these run once per dequantize of the program)

def _cancels(dq: dict, q: dict, q_out) -> bool:
    return (q_out.type == dq["input"].type
            and same_const(dq.get("scale"), q.get("scale"))
            and same_const(dq.get("zero_point"), q.get("zero_point"))
            and same_const(dq.get("axis"), q.get("axis")))


def match(op, ctx):
    out = op.outputs[0]
    if op.op_type != "dequantize" or ctx.is_block_output(out):
        return None
    readers = ctx.consumers(out)
    removable = tuple(r for r in readers
                      if r.op_type == "quantize" and r.inputs["input"].name == out.name and ctx.in_block(r)
                      and not ctx.is_block_output(r.outputs[0]) and _cancels(op.inputs, r.inputs, r.outputs[0]))
    if not removable:
        return None
    whole_pair = len(removable) == len(readers)  # nothing else reads the dequantize
    return op, removable, whole_pair


def rewrite(m, ctx):
    dequantize, removable, whole_pair = m
    claims = removable + ((dequantize,) if whole_pair else ())
    source = dequantize.inputs["input"]
    return Rewrite(claims=claims, replace={q.outputs[0].name: source for q in removable})


PATTERNS = (Pattern("dequantize_quantize_pair_elimination", match, rewrite, frozenset({"dequantize"})),)


@stage("dequantize_quantize_pair_elimination", contract=exact(leaves=no_cancelling_pairs))
def dequantize_quantize_pair_elimination(program, *, context=DEFAULT_CONTEXT):
    return rewrite_stage(program, PATTERNS)
