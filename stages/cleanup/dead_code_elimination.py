"""dead_code_elimination: remove ops whose results nothing uses.

An op is live when one of its outputs is a block output or is read by a live
op (in its block or in a nested block). One reverse sweep per block decides
this: walking ops last to first, an op is kept only if something already kept
needs one of its outputs, and then its inputs (and what its cleaned nested
blocks read from outside) become needed. Dead chains of any length go in that
one sweep; the cost is linear in the number of ops (times nesting depth).

Function inputs are never removed: they are the function's signature.
"""
from __future__ import annotations

from ir.core import Block, Function
from ir.rewrite import map_functions
from stages.base import DEFAULT_CONTEXT, stage


def _prune(block: Block):
    """(the block without dead ops, every value name the kept ops and outputs read)."""
    needed = {v.name for v in block.outputs}
    kept, changed = [], False
    for op in reversed(block.ops):
        if not any(v.name in needed for v in op.outputs):
            changed = True
            continue
        if op.blocks:
            pruned = [_prune(b) for b in op.blocks]
            for _, reads in pruned:
                needed |= reads
            blocks = tuple(b for b, _ in pruned)
            if any(new is not old for new, old in zip(blocks, op.blocks)):
                op = op.replace(blocks=blocks)
                changed = True
        needed.update(v.name for v in op.input_vars())
        kept.append(op)
    if not changed:
        return block, needed
    kept.reverse()
    return Block.make(block.inputs, kept, block.outputs), needed


def eliminate_dead_code(fn: Function) -> Function:
    block, _ = _prune(fn.block)
    return fn if block is fn.block else fn.replace(block=block)


@stage("dead_code_elimination")
def dead_code_elimination(program, *, context=DEFAULT_CONTEXT):
    # liveness flows backwards, so this is one reverse pass per function rather than
    # the forward pattern driver (which would need one sweep per link of a dead chain)
    return map_functions(program, eliminate_dead_code)
