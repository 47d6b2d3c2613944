"""decompress_weights: every constexpr form back to a plain const.

Every constexpr op of ir/ops/quant.py whose inputs are (chains of) consts is
folded by `ir.fold.fold_program`: the values come from the op kernels themselves,
so each new const is bit for bit what evaluating the program gives. A chain
(e.g. a quantized LUT feeding a LUT lookup feeding a per-channel scale, or
lut_to_sparse + sparse_to_dense) becomes one const named like the value its
consumers read; the consts and constexprs used only inside the chain go.
"""
from __future__ import annotations

from pyrsistent import freeze

from ir.fold import fold_program_counted
from stages.base import DEFAULT_CONTEXT, StageResult, stage
from stages.contracts import decompress_bound, lossy


@stage("decompress_weights", contract=lossy(decompress_bound, "bit for bit: outputs exact, each const the oracle's decoding"))
def decompress_weights(program, *, context=DEFAULT_CONTEXT):
    """Fold every constexpr chain into a plain const (values from the op kernels)."""
    new, folded, counts = fold_program_counted(program)
    return StageResult(new, freeze({"weights": folded, "decompressed": len(folded), "patterns": counts}))
