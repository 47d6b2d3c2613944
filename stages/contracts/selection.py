"""Which weights a compression stage must touch, and whether its reasons for leaving one hold.

The seed's selection rule: without an op_selector or a config, a weight is compressed when it
has more than 2048 elements (the contract's own constant, report._LARGE). So a weight of 2048
elements or fewer reported compressed breaks the rule, and so does one above it reported
"below the size threshold".

A weight the rule selects may still be skipped, for a documented reason that the stage states
with its numbers ("48 channels not divisible by group_size 16", "m=4 > half the axis length 6",
"takes 900 bytes against the weight's 800"). A stage that silently declines (a comparison off by
one, a refusal that always fires) leaves such a reason behind that is false: here every reason
with numbers is checked against them.
"""
from __future__ import annotations

import re

import numpy as np

from stages.contracts.blocks import _largest_divisor
from stages.contracts.graph import _split_key

LARGE = 2048  # the seed's size rule: weights of more elements are compressed by default


def _not_divisible(a, b, *_):
    return None if int(a) % int(b) else f"{a} is divisible by {b}"


def _no_group(g, channels, cd):
    found = _largest_divisor(int(channels), int(g), int(cd))
    return None if found is None else f"a group size of {found} divides {channels} and is a multiple of {cd}"


def _m_too_large(m, length):
    return None if int(m) > int(length) / 2 else f"m={m} is not more than half of {length}"


def _not_smaller(compressed, original):
    return None if int(compressed) >= int(original) else f"{compressed} bytes are fewer than {original}"


# a reason's wording -> what must hold of its numbers (None when it does, else why not)
CLAIMS = (
    (re.compile(r"(\d+) channels not divisible by group_size (\d+)"), _not_divisible),
    (re.compile(r"axis of size (\d+) is not divisible by block size (\d+)"), _not_divisible),
    (re.compile(r"group of (\d+) channels not divisible by cluster_dim (\d+)"), _not_divisible),
    (re.compile(r"no group size <= (\d+) divides the (\d+) channels and is a multiple of cluster_dim (\d+)"),
     _no_group),
    (re.compile(r"m=(\d+) > half the axis length (\d+)"), _m_too_large),
    (re.compile(r"takes (\d+) bytes against the weight's (\d+)"), _not_smaller),
)


def false_claims(reason: str) -> list:
    """Why the numbers a skip reason states do not support it (empty when they do)."""
    return [why for pattern, check in CLAIMS for m in pattern.finditer(reason)
            if (why := check(*m.groups())) is not None]


def _sizes(fn) -> dict:
    """{value name: element count} of every value of the function with a static shape."""
    out = {}
    for op in fn.block.walk():
        for v in op.outputs:
            shape = tuple(getattr(v.type, "shape", ()) or ())
            if all(isinstance(d, (int, np.integer)) for d in shape):
                out[v.name] = int(np.prod(shape, dtype=np.int64))
    return out


def selection_problems(before, params, weights) -> list:
    """(where, detail) for every weight the report handles against the selection rule, and
    every skip reason whose numbers contradict it."""
    default = params.get("op_selector") is None and params.get("config") is None
    sizes: dict = {}
    problems = []
    for key, st in weights.items():
        reason = str(st.get("skipped", "")) if "skipped" in st else None
        if reason is not None:
            for why in false_claims(reason):
                problems.append((f"weight {key!r}", f"skipped because {reason!r}, which does not hold: {why}"))
        if not default:
            continue
        fname, name = _split_key(key)
        if fname not in before.functions:
            continue
        if fname not in sizes:
            sizes[fname] = _sizes(before.functions[fname])
        size = sizes[fname].get(name)
        if size is None:
            continue
        if reason is None and size <= LARGE:
            problems.append((f"weight {key!r}", f"compressed, but it has {size} elements: without an "
                                                f"op_selector only weights of more than {LARGE} are"))
        elif reason is not None and reason.startswith("below the size threshold") and size > LARGE:
            problems.append((f"weight {key!r}", f"skipped as below the size threshold, but it has {size} "
                                                f"elements (more than {LARGE})"))
    return problems
