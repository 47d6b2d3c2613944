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
    })


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
