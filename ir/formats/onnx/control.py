"""ONNX control flow run by the interpreter: If, Loop and Scan.

Their subgraphs are the op's nested blocks (the importer makes them, in the
order of the op's graph attributes, named in the op's `_blocks` attr). A
block reads the values of its enclosing scopes directly, as an ONNX subgraph
does, so a kernel only passes each block its own inputs.
"""
from __future__ import annotations

import numpy as np

from ir.ops import OpError, register_block_kernel

BLOCK_ATTRS = "_blocks"


def _block(op, attr: str):
    names = tuple(op.attrs.get(BLOCK_ATTRS, ()))
    if attr not in names:
        raise OpError(f"{op.op_type} {op.name!r}: no {attr!r} subgraph")
    return op.blocks[names.index(attr)]


def _positional(vals: dict) -> list:
    """A foreign op's inputs by position ('inN' keys); None for an empty slot."""
    idx = [int(k[2:]) for k in vals if k.startswith("in")]
    return [vals.get(f"in{i}") for i in range(max(idx) + 1)] if idx else []


def _truth(value, what: str) -> bool:
    arr = np.asarray(value)
    if arr.size != 1:
        raise OpError(f"{what} must hold one element, got shape {arr.shape}")
    return bool(arr.reshape(-1)[0])


def if_kernel(op, vals, out_types, run_block):
    branch = "then_branch" if _truth(vals["in0"], "If condition") else "else_branch"
    return list(run_block(_block(op, branch), ()))


def _stacked(items: list, t) -> np.ndarray:
    """Scan outputs of every iteration along a new leading axis (empty when none ran)."""
    if items:
        return np.stack([np.asarray(x) for x in items])
    tail = t.shape[1:] if t.shape is not None else ()
    return np.zeros((0,) + tuple(d if isinstance(d, int) else 0 for d in tail), t.dt.storage)


def loop_kernel(op, vals, out_types, run_block):
    ins = _positional(vals) + [None, None]  # the trip count and the condition may be absent
    trip, cond, carried = ins[0], ins[1], ins[2:-2]
    body = _block(op, "body")
    n_carried = len(carried)
    limit = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
    if limit is None and cond is None:
        raise OpError(f"Loop {op.name!r}: neither a trip count nor a condition: it would never end")
    go = True if cond is None else _truth(cond, "Loop condition")
    scans: list = [[] for _ in range(len(body.outputs) - 1 - n_carried)]
    i = 0
    while go and (limit is None or i < limit):
        outs = run_block(body, [np.array(i, np.int64), np.array(go)] + carried)
        go = _truth(outs[0], "Loop body condition")
        carried = list(outs[1:1 + n_carried])
        for acc, x in zip(scans, outs[1 + n_carried:]):
            acc.append(x)
        i += 1
    return carried + [_stacked(acc, t) for acc, t in zip(scans, out_types[n_carried:])]


def _ints(op, key: str, n: int) -> list:
    v = op.attrs.get(key)
    return [0] * n if v is None else [int(x) for x in v]


def scan_kernel(op, vals, out_types, run_block):
    if int(op.attrs.get("_opset", 9)) < 9:
        return _scan8(op, vals, out_types, run_block)
    return _scan(op, _positional(vals), out_types, run_block)


def _scan8(op, vals, out_types, run_block):
    """Opset 8's Scan: every input has a leading batch axis and the scan axis is 1;
    sequence_lens (input 0) cuts each batch entry's sequence short."""
    ins = _positional(vals)
    lens, rest = ins[0], [np.asarray(x) for x in ins[1:]]
    m = int(op.attrs["num_scan_inputs"])
    n_states = len(rest) - m
    per_batch = []
    for b in range(rest[0].shape[0]):
        n = rest[n_states].shape[1] if lens is None else int(np.asarray(lens).reshape(-1)[b])
        row = [x[b] for x in rest[:n_states]] + [x[b, :n] for x in rest[n_states:]]
        per_batch.append(_scan(op, row, [_unbatched(t) for t in out_types], run_block,
                               directions_key="directions"))
    return [np.stack([r[i] for r in per_batch]) for i in range(len(out_types))]


def _unbatched(t):
    return t if t.shape is None else type(t)(t.dtype, t.shape[1:])


def _scan(op, ins, out_types, run_block, directions_key="scan_input_directions"):
    m = int(op.attrs["num_scan_inputs"])
    states, xs = list(ins[:len(ins) - m]), [np.asarray(x) for x in ins[len(ins) - m:]]
    in_axes = [a % x.ndim for a, x in zip(_ints(op, "scan_input_axes", m), xs)]
    in_dirs = _ints(op, directions_key, m)
    lengths = {x.shape[a] for x, a in zip(xs, in_axes)}
    if len(lengths) != 1:
        raise OpError(f"Scan {op.name!r}: scan inputs disagree on the sequence length {sorted(lengths)}")
    steps = lengths.pop()
    body = _block(op, "body")
    k = len(body.outputs) - len(states)
    out_axes, out_dirs = _ints(op, "scan_output_axes", k), _ints(op, "scan_output_directions", k)
    scans: list = [[] for _ in range(k)]
    for t in range(steps):
        slices = [np.take(x, steps - 1 - t if d else t, axis=a) for x, a, d in zip(xs, in_axes, in_dirs)]
        outs = run_block(body, states + slices)
        states = list(outs[:len(states)])
        for acc, y in zip(scans, outs[len(states):]):
            acc.append(np.asarray(y))
    results = []
    for acc, axis, d, t in zip(scans, out_axes, out_dirs, out_types[len(states):]):
        stacked = _stacked(acc[::-1] if d else acc, t)
        results.append(np.moveaxis(stacked, 0, axis % stacked.ndim))
    return states + results


def sequence_map_kernel(op, vals, out_types, run_block):
    """Runs the body once per element of the input sequence; each further input is a
    sequence read at the same position, or a tensor passed to every run."""
    ins = _positional(vals)
    seq, extra = list(ins[0]), ins[1:]
    body = _block(op, "body")
    results: list = [[] for _ in body.outputs]
    for i, item in enumerate(seq):
        args = [item] + [x[i] if isinstance(x, list) else x for x in extra]
        for acc, y in zip(results, run_block(body, args)):
            acc.append(y)
    return results


for _type, _kernel in {"onnx.If": if_kernel, "onnx.Loop": loop_kernel, "onnx.Scan": scan_kernel,
                       "onnx.SequenceMap": sequence_map_kernel}.items():
    register_block_kernel(_type, _kernel)
