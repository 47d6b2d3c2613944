"""const_deduplication: equal constants become one.

Within each block, a const equal to an earlier const of the block (same dtype,
shape and values, found by tensor digest) is removed and its uses read the
earlier one, which keeps its name. Like coremltools' pass, consts with fewer
than `const_threshold` elements (default 100) are left alone: sharing tiny
scalars saves nothing and would tie unrelated ops together. A duplicate that is
a block output is kept (its name is part of the block's signature).

Then constexpr_* ops (on-device decompression) with the same op type and the
same inputs (constant inputs compared by value, others by the value they
resolve to) are merged the same way.

Blocks are deduplicated separately (a value of a nested block is not visible
outside it), and functions cannot share values. One sweep reaches the fixed
point: duplicates are resolved as they are found.
"""
from __future__ import annotations

from ir.digest import tensor_digest
from ir.rewrite import Pattern, Rewrite, rewrite_program
from stages.base import DEFAULT_CONTEXT, stage
from stages.contracts import exact


class _Seen:
    """First occurrences per block, and what each removed duplicate became."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.blocks: dict = {}  # id(block) -> (block, {key: canonical op})
        self.renamed: dict = {}  # removed output name -> canonical output name

    def firsts(self, block) -> dict:
        entry = self.blocks.get(id(block))
        if entry is None or entry[0] is not block:
            entry = self.blocks[id(block)] = (block, {})
        return entry[1]


def _value_key(var) -> tuple:
    return (var.type, tensor_digest(var.val))


def _const_key(op, seen: _Seen):
    var = op.outputs[0]
    if var.val is None or var.val.dtype.kind == "O" or var.val.size < seen.threshold:
        return None
    return ("const",) + _value_key(var)


def _input_key(var, seen: _Seen):
    if var.val is not None:
        return _value_key(var)  # constants compare by value, whichever const op holds them
    return seen.renamed.get(var.name, var.name)


def _constexpr_key(op, seen: _Seen):
    ins = []
    for k in sorted(op.inputs):
        v = op.inputs[k]
        vs = v if isinstance(v, tuple) else (v,)
        ins.append((k, tuple(_input_key(x, seen) for x in vs)))
    attrs = tuple(sorted((k, repr(v)) for k, v in op.attrs.items()))
    return (op.op_type, tuple(ins), attrs, tuple(v.type for v in op.outputs))


# what makes two ops of a kind interchangeable
KEY_OF = {"const": _const_key}


def _key(op, seen):
    if op.op_type in KEY_OF:
        return KEY_OF[op.op_type](op, seen)
    if op.op_type.startswith("constexpr_"):
        return _constexpr_key(op, seen)
    return None


def _patterns(threshold: int) -> tuple:
    seen = _Seen(threshold)

    def match(op, ctx):
        key = _key(op, seen)
        if key is None:
            return None
        firsts = seen.firsts(ctx.block)
        first = firsts.setdefault(key, op)
        if first is op or any(ctx.is_block_output(v) for v in op.outputs):
            return None
        return op, first

    def rewrite(m, ctx):
        dup, first = m
        replace = {d.name: f for d, f in zip(dup.outputs, first.outputs)}
        seen.renamed.update({d: f.name for d, f in replace.items()})
        return Rewrite(claims=(dup,), replace=replace)

    return (Pattern("const_deduplication", match, rewrite),)


@stage("const_deduplication", contract=exact())
def const_deduplication(program, *, const_threshold: int = 100, context=DEFAULT_CONTEXT):
    if not isinstance(const_threshold, int) or isinstance(const_threshold, bool) or const_threshold < 0:
        raise ValueError(f"const_deduplication: const_threshold must be a non-negative int, got {const_threshold!r}")
    return rewrite_program(program, _patterns(const_threshold), max_sweeps=1)
