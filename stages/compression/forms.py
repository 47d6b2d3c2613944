"""Small helpers shared by the compression stages: opset rules and const/op builders."""
from __future__ import annotations

import numpy as np

from ir.construct import const_op, new_op
from ir.core import ios_version
from stages.compression.numeric.errors import CompressionError


def opset_version(opset: str) -> int:
    """18 for "iOS18"; opsets that are not Core ML's (e.g. a fresh IR program) get the newest forms."""
    v = ios_version(opset)
    return 18 if v is None else v


def require_ios18(view, what: str) -> None:
    if opset_version(view.opset) < 18:
        raise CompressionError(f"{view.name}: {what} needs the iOS18 opset; function {view.function!r} "
                               f"targets {view.opset}")


def require_constexpr(view) -> int:
    v = opset_version(view.opset)
    if v < 16:
        raise CompressionError(f"{view.name}: compressed weights need opset iOS16 or newer; "
                               f"function {view.function!r} targets {view.opset}")
    return v


class Emitter:
    """Collects the new ops of one replacement, naming them from the reserved names."""

    def __init__(self, names):
        self.names = names
        self.ops = []

    def const(self, role: str, value, dt=None):
        op = const_op(self.names(role), np.asarray(value), dt)
        self.ops.append(op)
        return op.outputs[0]

    def op(self, op_type: str, name: str, **inputs):
        op = new_op(op_type, name, inputs)
        self.ops.append(op)
        return op
