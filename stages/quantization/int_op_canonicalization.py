"""int_op_canonicalization: run integer-exact ops on the integers.

A quantized op is written dequantize -> float op -> quantize. For ops that do
no arithmetic (reshape), the round trip through float is unnecessary:

    q -> dequantize -> reshape -> quantize -> out
becomes
    q -> reshape -> out          (the int reshape takes the quantize's name)

The dequantize stays (other ops may read it; dead_code_elimination removes it
otherwise). As in the seed, the quantize's own scale / zero point are not
compared with the dequantize's: the pattern is taken to re-quantize the same
quantized tensor.

Opset rule (the seed's, exactly): the float op's implementation version must
be one where the int form exists. The seed allows reshape only when its op
version is iOS17; reshape was last redefined in iOS17, so a function whose
opset is iOS17 or later (iOS18, iOS26) runs the iOS17 reshape and qualifies,
while iOS16 and earlier (reshape from iOS15) do not.
"""
from __future__ import annotations

from functools import lru_cache

from ir.core import ios_version
from ir.rewrite import Pattern, Rewrite
from stages.base import DEFAULT_CONTEXT, stage
from stages.rewriting import rewrite_stage
from stages.contracts import exact
from stages.contracts.postconditions import int_ops_fit_opset
from stages.quantization._match import only_reader, rebuilt_as

# the opsets in which each op was (re)defined, oldest first
OP_DEFINED_IN = {"reshape": ("iOS15", "iOS17")}

# op versions whose int form the backend accepts
INT_OP_VERSIONS = {"reshape": frozenset({"iOS17"})}


@lru_cache(maxsize=256)  # asked once per candidate op; a pure function of two names
def op_version(op_type: str, opset: str):
    """The opset whose definition of op_type a function targeting `opset` uses."""
    target = ios_version(opset)
    if target is None:
        return None
    defined = [v for v in OP_DEFINED_IN.get(op_type, ()) if ios_version(v) <= target]
    return defined[-1] if defined else None


def match(op, ctx):
    if op.op_type not in INT_OP_VERSIONS or op_version(op.op_type, ctx.opset) not in INT_OP_VERSIONS[op.op_type]:
        return None
    dequantize = ctx.producer(op.x)
    if dequantize is None or dequantize.op_type != "dequantize":
        return None
    quantize = only_reader(ctx, op.output, "quantize")
    if quantize is None:
        return None
    return dequantize, op, quantize


def _int_reshape(dequantize, op, quantize):
    return rebuilt_as(quantize, "reshape", {"x": dequantize.input, "shape": op.shape})


# how each int op is rebuilt on the dequantize's integer input
BUILD_INT_OP = {"reshape": _int_reshape}


def rewrite(m, ctx):
    dequantize, op, quantize = m
    name = quantize.output.name
    int_op = BUILD_INT_OP[op.op_type](dequantize, op, quantize)
    if int_op.output.type != quantize.output.type:  # e.g. int8 data re-quantized as uint8
        return None
    return Rewrite(claims=(op, quantize), new_ops=(int_op,), replace={name: int_op.output})


PATTERNS = (Pattern("int_op_canonicalization", match, rewrite, frozenset(INT_OP_VERSIONS)),)


# as the seed, the quantize is taken to re-quantize the same tensor (its scale / zero point
# equal the dequantize's); under that assumption the int reshape is bit-exact
ASSUMES = "exact when the quantize re-quantizes with the dequantize's parameters (the seed's assumption)"


@stage("int_op_canonicalization", contract=exact(ASSUMES, leaves=int_ops_fit_opset))
def int_op_canonicalization(program, *, context=DEFAULT_CONTEXT):
    return rewrite_stage(program, PATTERNS)
