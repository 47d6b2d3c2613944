"""Evaluating foreign `onnx.<OpType>` ops with onnx's own reference evaluator.

Each op runs as a one-node model. Building a ReferenceEvaluator costs far more
than running it, so evaluators are cached by everything that shapes the node:
op type, domain, opset, attributes, which input slots are filled and their
element types.
"""
from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ir.digest import encode_value
from ir.dtypes import dtype as lookup_dtype
from ir.formats.onnx.common import attr_from_ir, elem_type, onnx_attrs
from ir.ops import register_foreign

PREFIX = "onnx"


def slot_names(op) -> list:
    """Positional ONNX input names of a foreign op: 'inN' keys, '' for an empty slot."""
    idx = sorted(int(k[2:]) for k in op.inputs if k.startswith("in"))
    n = idx[-1] + 1 if idx else 0
    return [f"in{i}" if f"in{i}" in op.inputs else "" for i in range(n)]


def node_proto(op, input_names, output_names):
    node = helper.make_node(op.op_type.split(".", 1)[1], input_names, output_names,
                            domain=op.attrs.get("_domain", ""))
    node.attribute.extend(attr_from_ir(k, v) for k, v in sorted(onnx_attrs(op.attrs).items()))
    return node


def _build_evaluator(op, in_types, n_out):
    slots = slot_names(op)
    node = node_proto(op, slots, [f"out{i}" for i in range(n_out)])
    inputs = [helper.make_tensor_value_info(s, elem_type(t), None) for s, t in zip(slots, in_types) if s]
    outputs = [helper.make_tensor_value_info(f"out{i}", 0, None) for i in range(n_out)]
    graph = helper.make_graph([node], "foreign", inputs, outputs)
    domain = op.attrs.get("_domain", "")
    opsets = [helper.make_opsetid(domain, int(op.attrs.get("_opset", 21)))]
    if domain:
        opsets.append(helper.make_opsetid("", 21))
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets))


def _cache_key(op, in_types) -> bytes:
    return (op.op_type.encode() + b"|" + encode_value(dict(op.attrs)) + b"|"
            + ",".join(slot_names(op)).encode() + b"|" + ",".join(in_types).encode())


_BUILT: dict = {}


def evaluator_for(op, in_types: tuple, n_out: int):
    key = _cache_key(op, in_types) + f"|{n_out}".encode()
    ev = _BUILT.get(key)
    if ev is None:
        if len(_BUILT) > 1024:  # bounded: drop everything rather than track recency
            _BUILT.clear()
        ev = _build_evaluator(op, in_types, n_out)
        _BUILT[key] = ev
    return ev


def _to_onnx_value(arr: np.ndarray, ir_name: str):
    """Sub-byte IR data (int8/uint8 storage) as the ml_dtypes type onnx expects."""
    if ir_name in ("int4", "uint4"):
        import ml_dtypes

        return np.asarray(arr).astype(getattr(ml_dtypes, ir_name))
    return arr


def compute(op, vals, out_types):
    slots = [s for s in slot_names(op) if s]
    in_types = tuple(op.inputs[s].dtype for s in slots)
    ev = evaluator_for(op, in_types, len(out_types))
    feeds = {s: _to_onnx_value(vals[s], t) for s, t in zip(slots, in_types)}
    results = ev.run(None, feeds)
    return [np.asarray(r).astype(lookup_dtype(t.dtype).storage, copy=False) for r, t in zip(results, out_types)]


register_foreign(PREFIX, compute)
