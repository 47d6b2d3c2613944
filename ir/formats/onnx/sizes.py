"""The bytes each weight takes in an ONNX model, measured from its serialized protos.

A weight is a value the graph reads as data: an initializer, a Constant node, or
the output of a decode subgraph that only initializers feed (DequantizeLinear of
an INT4 initializer, the unpacking of packed bytes, a LUT Gather...). Its bytes
are everything the file holds to make it: every initializer and Constant node it
is computed from, each as it sits in the file (the serialized proto with its field
tag and length prefix, plus its external data), the decode nodes themselves, and
its entry in the import record. Each piece counts once, for the first weight asked
about that reads it (two weights sharing a sparsity mask: the first holds it). A weight the graph only reads inside a fused node (MatMulNBits)
is found through the exporter's import record (records.RECORD_KEY), which names
the initializers holding it.

What no weight claims (shape constants, lookup tables of the decoders) and the
nodes, names, types and metadata make up the rest of the file: `Sizes.other`.
"""
from __future__ import annotations

import json
from typing import Iterable, NamedTuple, Optional

import onnx
from onnx import TensorProto

from ir.formats.onnx.records import RECORD_KEY


class Sizes(NamedTuple):
    weights: dict  # weight name -> bytes in the file (names asked about and found)
    tensors: int  # bytes of every initializer and Constant node
    total: int  # bytes of the whole model: the protobuf plus external data

    @property
    def other(self) -> int:
        """Bytes the weights do not account for: graph structure, metadata, small constants."""
        return self.total - sum(self.weights.values())


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field(body: int) -> int:
    """Bytes an embedded message of `body` bytes takes as a repeated field (tag < 16)."""
    return 1 + _varint_len(body) + body


def external_bytes(t: TensorProto) -> int:
    if t.data_location != TensorProto.EXTERNAL:
        return 0
    return sum(int(e.value) for e in t.external_data if e.key == "length")


def tensor_bytes(t: TensorProto) -> int:
    """What an initializer adds to the model: its proto in the graph and its external data."""
    return _field(t.ByteSize()) + external_bytes(t)


def _constant_bytes(node) -> int:
    return _field(node.ByteSize()) + sum(external_bytes(a.t) for a in node.attribute if a.HasField("t"))


def _walk(graph):
    """(initializers, nodes) of a graph and its subgraphs; a node's subgraph nodes come
    before the node, so values they read from outer scopes are already known."""
    inits, nodes = list(graph.initializer), []
    for n in graph.node:
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for g in subs:
                i, ns = _walk(g)
                inits += i
                nodes += ns
        nodes.append(n)
    return inits, nodes


class _Index:
    def __init__(self, model):
        inits, nodes = _walk(model.graph)
        self.size = {t.name: tensor_bytes(t) for t in inits}
        self.producer = {o: n for n in nodes for o in n.output if o}
        self.const = set(self.size)  # values computed from stored tensors alone
        for n in nodes:
            ins = [i for i in n.input if i]
            if (n.op_type == "Constant" and not n.domain) or (ins and all(i in self.const for i in ins)):
                self.const.update(o for o in n.output if o)
        self.constants = {id(n): _constant_bytes(n) for n in nodes if n.op_type == "Constant" and not n.domain}
        self.records = _records(model)
        self.claimed: set = set()

    def _claim(self, key, size: int) -> int:
        if key in self.claimed:
            return 0
        self.claimed.add(key)
        return size

    def of_value(self, name: str) -> int:
        """Bytes of the stored tensors `name` is computed from (not yet claimed)."""
        total, todo, seen = 0, [name], set()
        while todo:
            v = todo.pop()
            if v in seen or v not in self.const:
                continue
            seen.add(v)
            if v in self.size:
                total += self._claim(v, self.size[v])
                continue
            n = self.producer[v]
            if id(n) in self.constants:
                total += self._claim(id(n), self.constants[id(n)])
            else:  # a decode node: part of what the file spends on this weight
                total += self._claim(id(n), _field(n.ByteSize()))
            todo += [i for i in n.input if i]
        return total

    def of_record(self, i: int) -> int:
        """Bytes of the initializers a record names for its op's inputs (and the ops it nests),
        and of the record's own entry."""
        total = self.record_entry(i)
        for src in self.records[i]["inputs"].values():
            if "init" in src:
                total += self.of_value(src["init"])
            elif "op" in src:
                total += self.of_record(int(src["op"]))
        return total

    def record_entry(self, i: int) -> int:
        """The bytes record i adds to the metadata's JSON list (its text and a comma)."""
        return self._claim(("record", i), len(json.dumps(self.records[i], separators=(",", ":")).encode()) + 1)

    def find(self, name: str) -> Optional[int]:
        if name in self.const:
            size = self.of_value(name)
            for i, r in enumerate(self.records):  # decoded in the graph, and recorded too
                if name in (r.get("outputs") or ()):
                    size += self.record_entry(i)
            return size
        for i, r in enumerate(self.records):
            if name in (r.get("outputs") or ()):
                return self.of_record(i)
        return None


def _records(model) -> list:
    raw = next((p.value for p in model.metadata_props if p.key == RECORD_KEY), None)
    try:
        records = json.loads(raw) if raw else []
        return [r for r in records if isinstance(r, dict) and isinstance(r.get("inputs"), dict)]
    except ValueError:
        return []


def measure(model: onnx.ModelProto, names: Iterable[str]) -> Sizes:
    """The bytes of each weight named (ONNX value names, in the order given: a tensor
    two weights read counts for the first); names the model does not hold as stored
    data are left out."""
    index = _Index(model)
    found = {}
    for name in names:
        size = index.find(name)
        if size is not None:
            found[name] = size
    tensors = sum(index.size.values()) + sum(index.constants.values())
    total = model.ByteSize() + _external_total(model)
    return Sizes(found, tensors, total)


def _external_total(model) -> int:
    inits, nodes = _walk(model.graph)
    return sum(external_bytes(t) for t in inits) + sum(
        external_bytes(a.t) for n in nodes for a in n.attribute if a.HasField("t"))


def measure_file(path, names: Iterable[str]) -> Sizes:
    """`measure` of the model at `path`; external data is sized from its entries, not read."""
    return measure(onnx.load(str(path), load_external_data=False), names)
