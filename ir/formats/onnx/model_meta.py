"""What an ONNX model carries besides its computation, kept through import and export.

`capture(model)` reads it into plain, digestable values for `Program.attrs`
(under MODEL_META); `restore(model, meta)` writes it into an exported model:
producer, versions, doc strings, metadata_props, the opset of every domain,
model-local functions, the main graph's name and value_info. The computation
itself (nodes, initializers, inputs, outputs) is the program's business.
"""
from __future__ import annotations

from pyrsistent import pmap

MODEL_META = "onnx_model"  # Program.attrs key

_SCALARS = ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string")


def capture(model, skip_keys=()) -> "pmap":
    g = model.graph
    return pmap({
        **{k: getattr(model, k) for k in _SCALARS},
        "metadata_props": tuple((p.key, p.value) for p in model.metadata_props if p.key not in skip_keys),
        "opset_imports": tuple((o.domain if o.domain != "ai.onnx" else "", int(o.version))
                               for o in model.opset_import),
        "functions": tuple(f.SerializeToString() for f in model.functions),
        "graph_name": g.name,
        "graph_doc_string": g.doc_string,
        "value_info": tuple(vi.SerializeToString() for vi in g.value_info),
        "io": tuple(vi.SerializeToString() for vi in list(g.input) + list(g.output)),
    })


def declared_io(meta) -> dict:
    """ONNX name -> the ValueInfoProto the source model declared for a graph input or output
    (its symbolic dim names and doc string are the model's interface: export keeps them)."""
    from onnx import ValueInfoProto

    out = {}
    for raw in (meta or {}).get("io", ()):
        vi = ValueInfoProto()
        vi.ParseFromString(raw)
        out[vi.name] = vi
    return out


def same_kind(declared, written) -> bool:
    """Whether a declared type can stand for the written one: same element types and, where
    both say, the same rank and the same fixed dims."""
    a, b = declared.type, written.type
    if a.WhichOneof("value") != b.WhichOneof("value"):
        return False
    if a.HasField("tensor_type"):
        ta, tb = a.tensor_type, b.tensor_type
        if ta.elem_type != tb.elem_type:
            return False
        if ta.HasField("shape") and tb.HasField("shape"):
            if len(ta.shape.dim) != len(tb.shape.dim):
                return False
            return all(not (x.HasField("dim_value") and y.HasField("dim_value")) or x.dim_value == y.dim_value
                       for x, y in zip(ta.shape.dim, tb.shape.dim))
        return True
    return a == b


def restore(model, meta) -> None:
    """Write `meta` into `model` (a ModelProto the exporter is building): fields the
    exporter set itself (its opset, its own metadata entries) win where both say something."""
    from onnx import FunctionProto, ValueInfoProto, helper

    if not meta:
        return
    for k in _SCALARS:
        if k == "ir_version":
            continue  # the exporter picks the IR version its opset needs
        if meta.get(k):
            setattr(model, k, meta[k])
    own = {p.key for p in model.metadata_props}
    for key, value in meta.get("metadata_props", ()):
        if key not in own:
            model.metadata_props.append(helper.make_string_string_entry_proto(key, value) if hasattr(
                helper, "make_string_string_entry_proto") else _entry(key, value))
    have = {o.domain: o for o in model.opset_import}
    for domain, version in meta.get("opset_imports", ()):
        if domain not in have:
            model.opset_import.append(helper.make_opsetid(domain, version))
            have[domain] = model.opset_import[-1]
    for raw in meta.get("functions", ()):
        f = FunctionProto()
        f.ParseFromString(raw)
        model.functions.append(f)
    g = model.graph
    if meta.get("graph_name"):
        g.name = meta["graph_name"]
    if meta.get("graph_doc_string"):
        g.doc_string = meta["graph_doc_string"]
    defined = {o for n in g.node for o in n.output} - {o.name for o in g.output}
    for raw in meta.get("value_info", ()):
        vi = ValueInfoProto()
        vi.ParseFromString(raw)
        if vi.name in defined:  # still a value of the graph (not compressed away)
            g.value_info.append(vi)


def _entry(key, value):
    from onnx import StringStringEntryProto

    e = StringStringEntryProto()
    e.key, e.value = key, value
    return e
