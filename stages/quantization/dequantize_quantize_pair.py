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

from ir.rewrite import Pattern, Rewrite, rewrite_program
from stages.base import DEFAULT_CONTEXT, stage
from stages.contracts import exact
from stages.quantization._match import same_const


def _cancels(dequantize, quantize) -> bool:
    return (quantize.output.type == dequantize.input.type
            and same_const(dequantize.scale, quantize.scale)
            and same_const(dequantize.zero_point, quantize.zero_point)
            and same_const(dequantize.axis, quantize.axis))


def match(op, ctx):
    if op.op_type != "dequantize" or ctx.is_block_output(op.output):
        return None
    readers = ctx.consumers(op.output)
    removable = tuple(r for r in readers
                      if r.op_type == "quantize" and r.input.name == op.output.name and ctx.in_block(r)
                      and not ctx.is_block_output(r.output) and _cancels(op, r))
    if not removable:
        return None
    whole_pair = len(removable) == len(readers)  # nothing else reads the dequantize
    return op, removable, whole_pair


def rewrite(m, ctx):
    dequantize, removable, whole_pair = m
    claims = removable + ((dequantize,) if whole_pair else ())
    return Rewrite(claims=claims, replace={q.output.name: dequantize.input for q in removable})


PATTERNS = (Pattern("dequantize_quantize_pair_elimination", match, rewrite),)


@stage("dequantize_quantize_pair_elimination", contract=exact())
def dequantize_quantize_pair_elimination(program, *, context=DEFAULT_CONTEXT):
    return rewrite_program(program, PATTERNS)
