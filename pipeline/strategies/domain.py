"""What values a model's inputs can meaningfully take, read off the graph.

Random int64 token ids index past an embedding table and a random attention mask is
not a mask: a real model fails, or computes nonsense, on such inputs. So before
generating inputs, each input is followed forward through the ops that only move or
convert its values (cast, reshape, unsqueeze, transpose, slice, concat, ... in their
core and ONNX forms) to the ops that use it:

- **index**: an integer input that reaches the indices of a gather (ONNX Gather /
  GatherElements: embedding lookups) takes values in [0, n), n the smallest table size
  along the gather's axis among the gathers it reaches (only static sizes count);
- **mask**: an input named like a mask (`attention_mask`, `padding_mask`, ...) or one
  that reaches the condition of a select (ONNX Where) takes 0/1 values, ones first in
  each row (a real padding mask: at least one position attended, so a softmax over
  masked scores stays finite);
- **choice**: an integer input compared for equality with constants (silero-vad's
  sample rate `sr`: `If(sr == 16000)`, the other branch made for 8000) takes one of
  those constants' values: any other value selects a path the model was not built to
  run on valid data, and a drawn input that always fails checks nothing.

Anything else has no domain (None): the strategies' defaults apply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ir import Program

# op type -> the input slots whose values pass through unchanged (moved, converted, copied)
PASS_THROUGH = {
    "cast": ("x",), "reshape": ("x",), "expand_dims": ("x",), "squeeze": ("x",), "transpose": ("x",),
    "tile": ("x",), "slice_by_index": ("x",), "concat": ("values",),
    "onnx.Cast": ("in0",), "onnx.Reshape": ("in0",), "onnx.Unsqueeze": ("in0",), "onnx.Squeeze": ("in0",),
    "onnx.Transpose": ("in0",), "onnx.Flatten": ("in0",), "onnx.Identity": ("in0",), "onnx.Expand": ("in0",),
    "onnx.Slice": ("in0",), "onnx.Tile": ("in0",), "onnx.Concat": None,  # None: every input slot
}

# op type -> (indices slot, table slot): the indices must stay inside the table along its axis
INDEX_CONSUMERS = {"gather": ("indices", "x"), "onnx.Gather": ("in1", "in0"),
                   "onnx.GatherElements": ("in1", "in0")}

# op type -> the slot holding a condition
MASK_CONSUMERS = {"select": "cond", "onnx.Where": "in0"}

# op type -> its two compared slots: an input compared with a constant takes that constant's values
EQUALITY_CONSUMERS = {"equal": ("x", "y"), "onnx.Equal": ("in0", "in1")}
MAX_CHOICES = 16  # constants of more elements than this are not a set of choices

MASK_NAME = re.compile(r"mask", re.IGNORECASE)
MAX_DEPTH = 32  # pass-through ops followed from an input before giving up on that path


@dataclass(frozen=True)
class Domain:
    kind: str  # "index": integers in [0, high); "mask": 0/1, ones first in each row; "choice": one of values
    high: Optional[int] = None
    values: tuple = ()  # "choice": the values, sorted

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.values)}"
        return f"index < {self.high}" if self.kind == "index" else self.kind


def _consumers(fn) -> dict:
    """value name -> [(op, slot)] over the function's top-level block."""
    found: dict = {}
    for op in fn.block.ops:
        for slot, v in op.inputs.items():
            for var in v if isinstance(v, tuple) else (v,):
                found.setdefault(var.name, []).append((op, slot))
    return found


def _const_value(fn, var):
    for op in fn.block.ops:
        if op.op_type == "const" and op.outputs[0].name == var.name:
            return np.asarray(op.attrs["val"])
    return None


def _gather_axis(fn, op) -> int:
    if op.op_type.startswith("onnx."):
        return int(op.attrs.get("axis", 0))
    axis = op.inputs.get("axis")
    value = _const_value(fn, axis) if axis is not None else None
    return 0 if value is None else int(np.asarray(value).reshape(-1)[0])


def _table_size(fn, op, table_slot: str) -> Optional[int]:
    """The static size of the gathered table along the gather's axis (None when unknown)."""
    table = op.inputs.get(table_slot)
    if table is None or isinstance(table, tuple):
        return None
    shape = tuple(table.type.shape)
    if not shape:
        return None
    axis = _gather_axis(fn, op)
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape):
        return None
    size = shape[axis]
    return size if isinstance(size, int) else None


def _compared_with(fn, op, slot: str) -> tuple:
    """The values of the constant an equality op compares `slot` with (() when not a small const)."""
    a, b = EQUALITY_CONSUMERS[op.op_type]
    other = op.inputs.get(b if slot == a else a)
    if other is None or isinstance(other, tuple):
        return ()
    value = other.val if other.val is not None else _const_value(fn, other)
    if value is None or np.size(value) > MAX_CHOICES or np.asarray(value).dtype.kind not in "iub":
        return ()
    return tuple(int(x) for x in np.asarray(value).reshape(-1))


def _uses(fn, consumers, name: str) -> tuple:
    """(table sizes of the gathers indexed by the value, whether it reaches a condition,
    the constants it is compared with for equality)."""
    sizes, condition, compared = [], False, set()
    frontier, seen = [(name, 0)], {name}
    while frontier:
        value, depth = frontier.pop()
        for op, slot in consumers.get(value, ()):
            index = INDEX_CONSUMERS.get(op.op_type)
            if index is not None and slot == index[0]:
                size = _table_size(fn, op, index[1])
                if size is not None:
                    sizes.append(size)
            if MASK_CONSUMERS.get(op.op_type) == slot:
                condition = True
            if op.op_type in EQUALITY_CONSUMERS and slot in EQUALITY_CONSUMERS[op.op_type]:
                compared.update(_compared_with(fn, op, slot))
            slots = PASS_THROUGH.get(op.op_type, ())
            if depth < MAX_DEPTH and op.op_type in PASS_THROUGH and (slots is None or slot in slots):
                for out in op.outputs:
                    if out.name not in seen:
                        seen.add(out.name)
                        frontier.append((out.name, depth + 1))
    return sizes, condition, compared


def input_domains(program: Program, function: str = "main") -> dict:
    """input name -> Domain, for the inputs of `function` that have one (module docstring)."""
    fn = program.functions[function]
    consumers = _consumers(fn)
    found = {}
    for var in fn.inputs:
        dt = var.type.dt
        sizes, condition, compared = _uses(fn, consumers, var.name)
        if dt.is_integer and sizes:
            found[var.name] = Domain("index", max(1, min(sizes)))
        elif condition or MASK_NAME.search(var.name):  # before choice: `mask == 0` is a mask
            found[var.name] = Domain("mask")
        elif dt.is_integer and compared:
            found[var.name] = Domain("choice", values=tuple(sorted(compared)))
    return found


__all__ = ["Domain", "input_domains", "PASS_THROUGH", "INDEX_CONSUMERS", "MASK_CONSUMERS"]


# ---- sizes worth trying for symbolic dims ----------------------------------------------------

MAX_CANDIDATE = 4096
SMALL_CONST = 16  # int consts of at most this many elements are read for sizes (shapes, axes)


def size_candidates(program: Program, function: str = "main") -> tuple:
    """Sizes a symbolic input dim may have to take for the model to run, read off the graph:
    static dims of its values and the entries of its small integer consts (reshape targets,
    slice bounds), in 1..MAX_CANDIDATE, ascending. A PyTorch export often bakes the example
    input's sequence length into reshapes while declaring the dim symbolic: that length is
    among these."""
    fn = program.functions[function]
    found: set = set()
    for op in fn.block.ops:
        for out in op.outputs:
            shape = getattr(out.type, "shape", None) or ()
            found.update(d for d in shape if isinstance(d, int))
        if op.op_type == "const":
            val = np.asarray(op.attrs["val"])
            if val.dtype.kind in "iu" and val.size <= SMALL_CONST:
                found.update(int(v) for v in val.reshape(-1))
    return tuple(sorted(d for d in found if 1 <= d <= MAX_CANDIDATE))
