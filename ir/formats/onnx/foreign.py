"""Evaluating foreign `onnx.<OpType>` ops.

A foreign op runs with our numpy kernel for its op type when the kernel table
(ir.formats.onnx.kernels) has one; otherwise, or when the kernel declines the
case (`Unsupported`), with onnx's own ReferenceEvaluator as a one-node model.
Building a ReferenceEvaluator costs far more than running it, so evaluators
are cached by everything that shapes the node: op type, domain, opset,
attributes, which input slots are filled and their element types.

Runtime values on both paths: a tensor is a numpy array, a sequence a list of
arrays, an optional None or its value, a map a dict. int4 / uint4 tensors
(int8 / uint8 storage in the IR) are handed over as ml_dtypes arrays and
brought back to their storage type.
"""
from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ir.digest import encode_value
from ir.dtypes import dtype as lookup_dtype
from ir.formats.onnx.common import attr_from_ir, elem_type, onnx_attrs
from ir.formats.onnx.kernels import Node, Unsupported, kernel_for
from ir.ops import register_foreign

PREFIX = "onnx"


class ForeignOpError(ValueError):
    """A foreign ONNX op could not be evaluated; the message names the op type and why."""


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
    filled = [s for s in slots if s]  # in_types lists the filled slots only
    inputs = [helper.make_tensor_value_info(s, elem_type(t), None) if t is not None
              else helper.make_empty_tensor_value_info(s) for s, t in zip(filled, in_types)]
    outputs = [helper.make_tensor_value_info(f"out{i}", 0, None) for i in range(n_out)]
    graph = helper.make_graph([node], "foreign", inputs, outputs)
    domain = op.attrs.get("_domain", "")
    opsets = [helper.make_opsetid(domain, int(op.attrs.get("_opset", 21)))]
    if domain:
        opsets.append(helper.make_opsetid("", 21))
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets))


def _cache_key(op, in_types) -> bytes:
    return (op.op_type.encode() + b"|" + encode_value(dict(op.attrs)) + b"|"
            + ",".join(slot_names(op)).encode() + b"|" + ",".join(str(t) for t in in_types).encode())


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


def _to_onnx_value(arr, ir_name):
    """Sub-byte IR data (int8/uint8 storage) as the ml_dtypes type onnx expects."""
    if ir_name in ("int4", "uint4") and isinstance(arr, np.ndarray):
        import ml_dtypes

        return arr.astype(getattr(ml_dtypes, ir_name))
    return arr


def _ir_dtype(var):
    """The IR dtype name of a tensor value, or None for sequences, maps and optionals."""
    t = getattr(var, "type", None)
    return t.dtype if getattr(t, "is_tensor", False) else None


def _from_onnx_value(value, out_type):
    """A kernel's or evaluator's result in the IR's storage type of the declared tensor
    output; sequences, optionals and maps pass through (the interpreter conforms them)."""
    if isinstance(value, (list, tuple, dict)) or value is None:
        return value
    arr = np.asarray(value)
    if not getattr(out_type, "is_tensor", False):
        return arr
    return arr.astype(lookup_dtype(out_type.dtype).storage, copy=False)


def _reference(op, slots, in_types, feeds, n_out):
    ev = evaluator_for(op, in_types, n_out)
    return ev.run(None, {s: v for s, v in zip(slots, feeds) if s})


def compute_with(op, vals, out_types, table_lookup=kernel_for):
    """Run a foreign op on `vals` ({slot: value}); `table_lookup(op_type, domain)` names
    the kernel (None: the reference evaluator)."""
    op_type = op.op_type.split(".", 1)[1]
    domain = op.attrs.get("_domain", "")
    all_slots = slot_names(op)
    feeds = [_to_onnx_value(vals[s], _ir_dtype(op.inputs[s])) if s else None for s in all_slots]
    results = None
    kernel = table_lookup(op_type, domain)
    if kernel is not None:
        node = Node(op_type, int(op.attrs.get("_opset", 21)), len(out_types))
        try:
            results = kernel(feeds, dict(onnx_attrs(op.attrs)), node)
        except Unsupported:
            results = None
        except KeyError as e:
            raise ForeignOpError(f"{op.op_type}: missing attribute {e.args[0]!r}") from None
        except (ArithmeticError, AttributeError) as e:
            raise ForeignOpError(f"{op.op_type}: {type(e).__name__}: {e}") from e
        if results is not None and len(results) < len(out_types):
            raise ForeignOpError(f"{op.op_type}: the kernel gave {len(results)} outputs, "
                                 f"the op declares {len(out_types)}")
    if results is None:
        in_types = tuple(_ir_dtype(op.inputs[s]) for s in all_slots if s)
        try:
            results = _reference(op, all_slots, in_types, feeds, len(out_types))
        except (ValueError, TypeError, IndexError):
            raise
        except Exception as e:  # the reference evaluator raises RuntimeError and its own types
            msg = str(e).splitlines()[0] if str(e) else ""
            raise ForeignOpError(f"{op.op_type} (onnx reference evaluator): {type(e).__name__}: {msg}") from e
    return [_from_onnx_value(r, t) for r, t in zip(results, out_types)]


def compute(op, vals, out_types):
    return compute_with(op, vals, out_types)


register_foreign(PREFIX, compute)
