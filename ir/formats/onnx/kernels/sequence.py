"""Sequence and optional ops over the interpreter's runtime values: a sequence
is a Python list of arrays, an optional is None (empty) or its value.

Kernels never change a list they are given: an insert or erase returns a new
list. Positions may be negative (counted from the end); SequenceInsert accepts
the length itself (append), everything else a position inside the sequence.
"""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, ints, need, norm_axis, scalar


def _seq(v, what: str) -> list:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{what}: expected a sequence, got {type(v).__name__}")
    return list(v)


def _position(pos, n: int, what: str, allow_end: bool = False) -> int:
    p = int(scalar(pos))
    hi = n if allow_end else n - 1
    if not -n <= p <= hi:
        raise ValueError(f"{what}: position {p} is out of range for a sequence of {n}")
    return p + n if p < 0 else p


def sequence_empty(ins, attrs, node):
    return [[]]


def sequence_construct(ins, attrs, node):
    xs = [x for x in ins if x is not None]
    if len({x.dtype for x in xs}) > 1:
        raise ValueError(f"SequenceConstruct: tensors of different types {sorted({str(x.dtype) for x in xs})}")
    return [list(xs)]


def sequence_at(ins, attrs, node):
    s = _seq(need(ins, 0, "input_sequence"), "SequenceAt")
    return [s[_position(need(ins, 1, "position"), len(s), "SequenceAt")]]


def sequence_insert(ins, attrs, node):
    s = _seq(need(ins, 0, "input_sequence"), "SequenceInsert")
    t, pos = need(ins, 1, "tensor"), arg(ins, 2)
    p = len(s) if pos is None else _position(pos, len(s), "SequenceInsert", allow_end=True)
    return [s[:p] + [t] + s[p:]]


def sequence_erase(ins, attrs, node):
    s = _seq(need(ins, 0, "input_sequence"), "SequenceErase")
    if not s:
        raise ValueError("SequenceErase: the sequence is empty")
    pos = arg(ins, 1)
    p = len(s) - 1 if pos is None else _position(pos, len(s), "SequenceErase")
    return [s[:p] + s[p + 1:]]


def sequence_length(ins, attrs, node):
    return [np.array(len(_seq(need(ins, 0, "input_sequence"), "SequenceLength")), np.int64)]


def split_to_sequence(ins, attrs, node):
    x, split = need(ins, 0, "input"), arg(ins, 1)
    axis = norm_axis(attrs.get("axis", 0), x.ndim)
    n = x.shape[axis]
    if split is None:  # pieces of one, the axis dropped unless keepdims
        parts = [np.take(x, i, axis=axis) for i in range(n)]
        if int(attrs.get("keepdims", 1)):
            parts = [np.expand_dims(p, axis) for p in parts]
        return [parts]
    if np.ndim(split) == 0:  # equal chunks of that size, the last one smaller
        k = int(split)
        if k <= 0:
            raise ValueError(f"SplitToSequence: split {k} must be positive")
        sizes = [min(k, n - i) for i in range(0, n, k)]
    else:
        sizes = ints(split)
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(f"SplitToSequence: sizes {sizes} do not add up to the axis length {n}")
    return [[np.array(p) for p in np.split(x, np.cumsum(sizes)[:-1], axis=axis)]]


def concat_from_sequence(ins, attrs, node):
    s = _seq(need(ins, 0, "input_sequence"), "ConcatFromSequence")
    if not s:
        raise ValueError("ConcatFromSequence: the sequence is empty")
    new_axis = int(attrs.get("new_axis", 0))
    axis = norm_axis(attrs["axis"], s[0].ndim + new_axis)
    return [np.stack(s, axis=axis) if new_axis else np.concatenate(s, axis=axis)]


def optional(ins, attrs, node):
    return [arg(ins, 0)]  # no input: the empty optional of the `type` attribute


def optional_has_element(ins, attrs, node):
    return [np.array(arg(ins, 0) is not None)]


def optional_get_element(ins, attrs, node):
    v = arg(ins, 0)
    if v is None:
        raise ValueError("OptionalGetElement: the optional is empty")
    return [v]


KERNELS = {
    "SequenceEmpty": sequence_empty, "SequenceConstruct": sequence_construct, "SequenceAt": sequence_at,
    "SequenceInsert": sequence_insert, "SequenceErase": sequence_erase, "SequenceLength": sequence_length,
    "SplitToSequence": split_to_sequence, "ConcatFromSequence": concat_from_sequence,
    "Optional": optional, "OptionalHasElement": optional_has_element, "OptionalGetElement": optional_get_element,
}
