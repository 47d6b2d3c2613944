"""Import side of the exporter's compressed-weight record (see exporter.RECORD_KEY).

A model weightpress exported carries, in its metadata, one entry per
constexpr op: its type, the nodes that decode it, the ONNX values it defines
and where each input lies. When the graph still matches the record (every
named node present, nothing outside the decode nodes reads their inner
values, every referenced initializer present), the importer skips the decode
nodes and rebuilds the constexpr ops, so compressed weights come back
compressed. Anything that does not match leaves the graph as it is: the
decode nodes then import as ordinary ops, which compute the same values.
"""
from __future__ import annotations

import json
from typing import NamedTuple, Optional

import numpy as np

from ir.construct import new_op
from ir.dtypes import dtype as lookup_dtype
from ir.packing import unpack

RECORD_KEY = "weightpress.constexpr"


class Plan(NamedTuple):
    records: list
    skip: frozenset  # decode node names
    due: dict  # node name -> record indices to build once that node is reached


def plan(model) -> Optional[Plan]:
    """The records of `model` when they still describe its graph, else None."""
    raw = next((p.value for p in model.metadata_props if p.key == RECORD_KEY), None)
    if raw is None:
        return None
    try:
        records = json.loads(raw)
        return _check(model, records)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # a damaged or foreign record: import the graph as it stands


def _check(model, records) -> Optional[Plan]:
    g = model.graph
    order = {n.name: i for i, n in enumerate(g.node)}
    inits = {t.name for t in g.initializer}
    skip = set()
    exposed = set()
    due: dict = {}
    for i, r in enumerate(records):
        nodes = r["nodes"]
        if not all(isinstance(n, str) and n in order for n in nodes):
            return None
        skip.update(nodes)
        exposed.update(o for o in r["outputs"] if o)
        for src in r["inputs"].values():
            if "init" in src and src["init"] not in inits:
                return None
            if "op" in src and not 0 <= int(src["op"]) < i:
                return None
        if nodes:
            last = max(nodes, key=order.__getitem__)
            due.setdefault(last, []).append(i)
    if not records or not _sealed(g, skip, exposed):
        return None
    if len(skip) != sum(len(r["nodes"]) for r in records):
        return None  # a node claimed twice
    return Plan(records, frozenset(skip), due)


def _sealed(g, skip: set, exposed: set) -> bool:
    """No node outside the decode nodes (and no graph output) reads their inner values."""
    inner = {o for n in g.node if n.name in skip for o in n.output if o} - exposed
    readers = [i for n in g.node if n.name not in skip for i in n.input]
    return not inner.intersection(readers) and not inner.intersection(o.name for o in g.output)


def build(c, records: list, i: int, built: dict) -> None:
    """Rebuild record i as a constexpr op in the importer context `c`."""
    if i in built:
        return
    r = records[i]
    inputs = {slot: _input(c, records, src, built, f"{r['name']}_{slot}") for slot, src in r["inputs"].items()}
    op = new_op(r["op"], c.names.fresh(r["name"]), inputs)
    c.ops.append(op)
    built[i] = op.outputs
    for name, var in zip(r["outputs"], op.outputs):
        if name:
            c.env[name] = var


def _input(c, records, src: dict, built: dict, hint: str):
    if "op" in src:
        j = int(src["op"])
        if j not in built:  # an op with no decode nodes of its own (its reader decodes it)
            build(c, records, j, built)
        return built[j][int(src["output"])]
    if "onnx" in src:
        return c.var(src["onnx"])
    dt = lookup_dtype(src["dtype"])
    shape = tuple(int(d) for d in src["shape"])
    if "value" in src:
        arr = np.asarray(src["value"], dt.storage).reshape(shape)
    else:
        arr = _from_initializer(c, src, dt, shape)
    return c.const(hint, arr, dt.name)


def _from_initializer(c, src: dict, dt, shape) -> np.ndarray:
    arr = np.asarray(c.tensor_array(c.initializers[src["init"]])[0])
    if src.get("layout"):
        arr = _unlayout(arr, src)
    elif src.get("nbits"):  # bit-packed bytes; int4 as two's complement nibbles
        nbits = int(src["nbits"])
        packed_as = dt.name if dt.is_subbyte and dt.bits == nbits else f"uint{nbits}"
        arr = unpack(arr.astype(np.uint8).tobytes(), packed_as, shape)
    size = int(np.prod(shape, dtype=np.int64))
    if arr.size != size:  # a parameter the exporter broadcast (one zero point for every channel)
        if arr.size == 0 or not np.all(arr == arr.reshape(-1)[0]):
            raise ValueError(f"initializer {src['init']!r} does not hold {shape}")
        arr = np.full(shape, arr.reshape(-1)[0])
    return arr.reshape(shape).astype(dt.storage)


def _unlayout(arr: np.ndarray, src: dict) -> np.ndarray:
    """A value stored in another runtime's layout (MatMulNBits, see nbits.py) back as the
    IR holds it: `stored` is its shape as stored; nbits-bit unsigned codes packed LSB first
    (each row on its own bytes when `rows`), less `shift`; then transposed by `perm`."""
    layout = src["layout"]
    stored = [int(d) for d in layout["stored"]]
    nbits = int(src.get("nbits") or 0)
    if nbits:
        raw = arr.astype(np.uint8)
        if layout.get("rows"):
            rows = raw.reshape(stored[0], -1)
            codes = np.stack([unpack(r.tobytes(), f"uint{nbits}", stored[1:]) for r in rows])
        else:
            codes = unpack(raw.tobytes(), f"uint{nbits}", stored)
        arr = codes.astype(np.int16) - int(layout.get("shift", 0))
    else:
        arr = arr.reshape(stored)
    perm = layout.get("perm")
    return arr.transpose([int(p) for p in perm]) if perm else arr
