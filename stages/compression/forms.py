"""Small helpers shared by the compression stages: what a function's target allows, and
const/op builders.

The target rule (as coremltools'): a stage emits the forms its function's Core ML
deployment target (``Function.opset``, "iOS17") has, never newer ones. Before iOS16
there are no compressed weights; iOS16 / iOS17 have per-tensor / per-channel 8-bit
``constexpr_affine_dequantize``, the flat ``constexpr_lut_to_dense`` (one LUT per
weight, 1/2/4/6/8 bits) and the flat ``constexpr_sparse_to_dense``; everything else
(4-bit or per-block quantization, grouped or vector LUTs, per-channel scales, 3-bit
LUTs, joint compression) needs iOS18. A configuration the target cannot express
raises a TargetError saying what needs which target and how to raise it: the
``set_target`` stage (``--target iOS18`` on the command line).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ir.construct import const_op, new_op
from ir.core import ios_version
from stages.compression.numeric.errors import CompressionError

IOS16_LUT_NBITS = (1, 2, 4, 6, 8)  # the flat constexpr_lut_to_dense's LUT sizes
FLAT_FORMS = {"constexpr_sparse_to_dense": "sparse", "constexpr_lut_to_dense": "lut"}


class TargetError(CompressionError):
    """A compression the function's deployment target cannot express; names the target it needs."""


def opset_version(opset: str) -> int:
    """18 for "iOS18"; opsets that are not Core ML's (e.g. a fresh IR program) get the newest forms."""
    v = ios_version(opset)
    return 18 if v is None else v


def how_to_raise(floor: str) -> str:
    """What a user does to get a newer target: one phrase, the same in every message."""
    return f"pass --target {floor} (set_target{{target=\"{floor}\"}} in a pipeline or recipe)"


def target_error(view, what: str, floor: str = "iOS18") -> TargetError:
    """The error for `what` (e.g. "dtype=int4") on a weight whose function targets an older opset."""
    return TargetError(f"{view.name}: {what} needs Core ML {floor} or newer; function {view.function!r} "
                       f"targets {view.opset}: {how_to_raise(floor)}")


def require_ios18(view, what: str) -> None:
    if opset_version(view.opset) < 18:
        raise target_error(view, what, "iOS18")


def require_constexpr(view) -> int:
    v = opset_version(view.opset)
    if v < 16:
        raise target_error(view, "a compressed weight", "iOS16")
    return v


def require_lut_nbits(view, nbits: int) -> None:
    """Before iOS18 a LUT has 2, 4, 16, 64 or 256 entries."""
    if opset_version(view.opset) < 18 and nbits not in IOS16_LUT_NBITS:
        raise target_error(view, f"a {nbits}-bit LUT (before iOS18: {', '.join(map(str, IOS16_LUT_NBITS))} bits)")


def pre_ios18_joint(op, opset: str, kinds) -> Optional[tuple]:
    """(kind, sources, weight Var) for a compressed weight in its pre-iOS18 (flat,
    shape-carrying) form in a function that targets iOS16 / iOS17, when the stage takes
    that kind (None otherwise).

    Compressing such a weight further is joint compression, which needs iOS18. The weight
    finder (weights.weight_views) reports it through this, so that the stage's first call,
    require_ios18, says so instead of the weight being passed over in silence. Only "end"
    is in the sources: the stage stops before it reads any other."""
    kind = FLAT_FORMS.get(op.op_type)
    if kind is None or kind not in kinds or op.get("shape") is None or opset_version(opset) >= 18:
        return None
    return kind, {"end": op}, op.outputs[0]


class Emitter:
    """Collects the new ops of one replacement, naming them from the reserved names."""

    def __init__(self, names):
        self.names = names
        self.ops = []

    def const(self, role: str, value, dt=None):
        value = np.asarray(value)
        if value.flags.writeable and value.flags.owndata and value.base is None:
            # a compressor's fresh result (quantized codes, scales, a LUT): made read-only
            # where it is rather than copied by const_op (a copy of every compressed weight
            # was a third of int4's stage time and as many page faults)
            value.flags.writeable = False
        op = const_op(self.names(role), value, dt)
        self.ops.append(op)
        return op.outputs[0]

    def op(self, op_type: str, name: str, **inputs):
        op = new_op(op_type, name, inputs)
        self.ops.append(op)
        return op
