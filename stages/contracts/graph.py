"""Plain readings of a function the checks share: producers, readers, block outputs,
const values, the constexpr chain that produces a value."""
from __future__ import annotations

from typing import Optional

_AFFINE_OPS = ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize",
               "constexpr_sparse_blockwise_shift_scale")
_LUT_OPS = ("constexpr_lut_to_dense", "constexpr_lut_to_sparse")


def _producers(fn) -> dict:
    prod = {}
    for op in fn.block.walk():
        for v in op.outputs:
            prod[v.name] = op
    return prod


def _consumers(fn) -> dict:
    cons: dict = {}
    for op in fn.block.walk():
        for v in op.input_vars():
            cons.setdefault(v.name, []).append(op)
    return cons


def _readers(fn) -> dict:
    return {k: v for k, v in _consumers(fn).items()}


def _block_outputs(fn) -> set:
    names = set()

    def visit(block):
        names.update(v.name for v in block.outputs)
        for op in block.ops:
            for b in op.blocks:
                visit(b)
    visit(fn.block)
    return names


def _blocks_of(fn):
    def visit(block):
        yield block
        for op in block.ops:
            for b in op.blocks:
                yield from visit(b)
    return visit(fn.block)


def _const_of(prod, var):
    if var is None:
        return None
    op = prod.get(var.name)
    return op.outputs[0].val if op is not None and op.op_type == "const" else None


def find_form(fn, value_name: str, op_types) -> Optional[object]:
    """The nearest op of one of op_types among the constexpr ops producing value_name."""
    prod = _producers(fn)
    todo, seen = [value_name], set()
    while todo:
        op = prod.get(todo.pop(0))
        if op is None or id(op) in seen or not op.op_type.startswith("constexpr_"):
            continue
        seen.add(id(op))
        if op.op_type in op_types:
            return op
        todo.extend(v.name for v in op.input_vars())
    return None


def _renamed(before_fn, after_fn, name: str) -> Optional[str]:
    """The value after's readers read where before's readers read `name` (same name if it
    still exists; else through a reader op that kept its name)."""
    after_prod = _producers(after_fn)
    if name in after_prod:
        return name
    after_ops = {op.name: op for op in after_fn.block.walk()}
    for reader in _consumers(before_fn).get(name, []):
        twin = after_ops.get(reader.name)
        if twin is None:
            continue
        for key, v in reader.inputs.items():
            if not isinstance(v, tuple) and v.name == name and key in twin.inputs:
                return twin.inputs[key].name
    return None


def _split_key(key: str) -> tuple:
    return tuple(key.split("/", 1)) if "/" in key else ("main", key)


# The layout of a weight's consumer, the contract's own reading of the op definitions
# (DESIGN.md: linear weight [out, in], conv [C_out, C_in/groups, ...], conv_transpose
# [C_in, C_out/groups, ...], matmul y [..., in, out]; an ONNX RNN's W / R are
# [directions, gates * hidden, input]). Deliberately not imported from the stages it checks.
_RNN_SLOTS = {(f"onnx.{t}", s): (1, 2) for t in ("LSTM", "GRU", "RNN") for s in ("in1", "in2")}
# (op type, input slot) -> (output-channel axis, input (reduction) axis)
WEIGHT_AXES = {("linear", "weight"): (0, 1), ("conv", "weight"): (0, 1), ("conv_transpose", "weight"): (1, 0),
               ("matmul", "y"): (-1, -2), ("matmul", "x"): (-2, -1),
               ("onnx.MatMul", "in1"): (-1, -2), ("onnx.MatMul", "in0"): (-2, -1),
               ("onnx.Conv", "in1"): (0, 1), ("onnx.ConvTranspose", "in1"): (1, 0), **_RNN_SLOTS}


def consumer_axes(fn, value_name: str, rank: int) -> Optional[tuple]:
    """(output axis, input axis) of a weight, both in [0, rank), when every reader of
    `value_name` in `fn` is an op of WEIGHT_AXES and they agree; None otherwise (no reader,
    an op this table does not know, readers that disagree, a rank the layout does not fit)."""
    found = set()
    for op in _consumers(fn).get(value_name, []):
        slots = [k for k, v in op.inputs.items() if not isinstance(v, tuple) and v.name == value_name]
        for slot in slots:
            axes = WEIGHT_AXES.get((op.op_type, slot))
            if axes is None:
                return None
            found.add(axes)
    if len(found) != 1 or rank < 2:
        return None
    out, inp = found.pop()
    out, inp = out % rank if -rank <= out < rank else None, inp % rank if -rank <= inp < rank else None
    return None if out is None or inp is None or out == inp else (out, inp)
