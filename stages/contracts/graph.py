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
