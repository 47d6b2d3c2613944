"""What the corpus measures, as small pure functions over ModelProtos and arrays.

- tensors(model): every tensor a model carries (initializers, sparse
  initializers, Constant nodes), in the main graph and in every subgraph,
  keyed by content (dtype, shape, sha1 of the bytes) so that a renamed or
  moved tensor still counts as kept.
- proto_diff(a, b): what an import -> export round trip lost: tensors whose
  values are gone, metadata_props (model and node level), producer / version /
  doc strings, opset imports, graph input/output types.
- run_onnxruntime / compare: outputs as float64 arrays (ZipMap's list of dicts
  becomes a matrix in class order), relative error and cosine.
- control_flow_weights(model): the float weights (> WEIGHT_MIN elements)
  that live inside If/Loop/Scan bodies or are read only from inside them.
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import Iterator, NamedTuple, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

COMPRESSED_MIN_OPSET = 11  # README: a compressed model keeps its opset (11 and newer are written)
WEIGHT_MIN = 2048  # the compression stages compress weights of more than this many elements by default
RECORD_KEY_PREFIX = "weightpress"  # metadata the exporter adds for its own compressed records


class Tensor(NamedTuple):
    name: str
    where: str  # "initializer" | "constant" | "sparse"
    graph: str  # "main" or the path of the subgraph ("If_3/then_branch")
    value: np.ndarray

    @property
    def key(self) -> tuple:
        arr = np.ascontiguousarray(self.value)
        return (arr.dtype.str, arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())

    @property
    def is_float_weight(self) -> bool:
        return self.value.dtype.kind == "f" and self.value.size > WEIGHT_MIN


def load(path: str) -> onnx.ModelProto:
    return onnx.load(path, load_external_data=True)


def on_disk_bytes(path: str) -> int:
    """The model file plus every external-data file it names."""
    model = onnx.load(path, load_external_data=False)
    files = {os.path.abspath(path)}
    for t in _all_initializers(model.graph):
        for entry in t.external_data:
            if entry.key == "location":
                files.add(os.path.abspath(os.path.join(os.path.dirname(path), entry.value)))
    return sum(os.path.getsize(f) for f in files if os.path.exists(f))


def _all_initializers(graph) -> Iterator:
    yield from graph.initializer
    for _, sub in subgraphs(graph):
        yield from _all_initializers(sub)


def subgraphs(graph, prefix: str = "") -> Iterator[tuple]:
    """(path, GraphProto) of every nested graph, depth first."""
    for i, node in enumerate(graph.node):
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for j, sub in enumerate(subs):
                path = f"{prefix}{node.name or node.op_type + str(i)}/{attr.name}"
                path += f"[{j}]" if len(subs) > 1 else ""
                yield path, sub
                yield from subgraphs(sub, path + "/")


def _constant_value(node) -> Optional[np.ndarray]:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "sparse_value":
            return numpy_helper.to_array(attr.sparse_tensor.values)
        if attr.name in ("value_float", "value_int", "value_string"):
            return np.asarray(helper.get_attribute_value(attr))
        if attr.name in ("value_floats", "value_ints", "value_strings"):
            return np.asarray(helper.get_attribute_value(attr))
    return None


def _graph_tensors(graph, path: str) -> Iterator[Tensor]:
    for t in graph.initializer:
        yield Tensor(t.name, "initializer", path, numpy_helper.to_array(t))
    for t in graph.sparse_initializer:
        yield Tensor(t.values.name, "sparse", path, numpy_helper.to_array(t.values))
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = _constant_value(node)
            if value is not None:
                yield Tensor(node.output[0], "constant", path, value)


def tensors(model: onnx.ModelProto) -> list:
    out = list(_graph_tensors(model.graph, "main"))
    for path, sub in subgraphs(model.graph):
        out.extend(_graph_tensors(sub, path))
    return out


def _names_read(graph) -> set:
    """Names a graph's nodes read, its subgraphs' included (outer-scope captures)."""
    names = {i for n in graph.node for i in n.input if i}
    for _, sub in subgraphs(graph):
        names |= {i for n in sub.node for i in n.input if i}
    return names


def control_flow_weights(model: onnx.ModelProto) -> list:
    """Float weights inside subgraphs, and main-graph initializers only subgraphs read."""
    inside = [t for t in tensors(model) if t.graph != "main" and t.is_float_weight]
    main_reads = {i for n in model.graph.node for i in n.input if i}
    sub_reads = set()
    for _, sub in subgraphs(model.graph):
        sub_reads |= {i for n in sub.node for i in n.input if i}
    captured = [t for t in _graph_tensors(model.graph, "main")
                if t.is_float_weight and t.name in sub_reads and t.name not in main_reads]
    return inside + captured


# ---- round trip: what was lost ----------------------------------------------------

def _dim_params(type_proto) -> Iterator[str]:
    which = type_proto.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        t = getattr(type_proto, which)
        if t.HasField("shape"):
            yield from (d.dim_param for d in t.shape.dim if d.dim_param)
    elif which == "sequence_type":
        yield from _dim_params(type_proto.sequence_type.elem_type)
    elif which == "optional_type":
        yield from _dim_params(type_proto.optional_type.elem_type)
    elif which == "map_type":
        yield from _dim_params(type_proto.map_type.value_type)


def _type_text(vi, anonymous: frozenset = frozenset(), rename=None) -> str:
    """The printed type; a symbolic dim named only once in the signature ("unk__3", "N" where
    nothing else says N) is as good as an unnamed one and prints as '?'; `rename` maps the
    other dim names (to compare two signatures up to a consistent renaming)."""
    if not vi.type.WhichOneof("value"):
        return "(no type)"
    t = onnx.TypeProto()
    t.CopyFrom(vi.type)
    stack = [t]
    while stack:
        tp = stack.pop()
        which = tp.WhichOneof("value")
        if which in ("tensor_type", "sparse_tensor_type") and getattr(tp, which).HasField("shape"):
            for d in getattr(tp, which).shape.dim:
                if d.dim_param in anonymous:
                    d.Clear()
                elif d.dim_param and rename:
                    d.dim_param = rename[d.dim_param]
        elif which in ("sequence_type", "optional_type"):
            stack.append(getattr(tp, which).elem_type)
        elif which == "map_type":
            stack.append(tp.map_type.value_type)
    return helper.printable_type(t)


def _io(graph) -> list:
    inits = {t.name for t in graph.initializer}
    vis = [("input", vi) for vi in graph.input if vi.name not in inits] + [("output", vi) for vi in graph.output]
    counts = {}
    for _, vi in vis:
        for p in _dim_params(vi.type):
            counts[p] = counts.get(p, 0) + 1
    anonymous = frozenset(p for p, n in counts.items() if n == 1 or p == "?")  # "?": paddle2onnx's unknown
    canonical = {p: f"d{i}" for i, p in enumerate(p for p in counts if p not in anonymous)}
    return [(kind, vi.name, _type_text(vi, anonymous), _type_text(vi, anonymous, canonical)) for kind, vi in vis]


def _metadata(model) -> dict:
    return {p.key: p.value for p in model.metadata_props if not p.key.startswith(RECORD_KEY_PREFIX)}


MODEL_FIELDS = ("producer_name", "producer_version", "domain", "model_version", "doc_string")


def _fields(model) -> dict:
    out = {f: getattr(model, f) for f in MODEL_FIELDS}
    out["graph.doc_string"] = model.graph.doc_string
    return out


def _node_metadata(model) -> int:
    """metadata_props entries on nodes, subgraphs' included (exporters put provenance there)."""
    graphs = [model.graph] + [g for _, g in subgraphs(model.graph)]
    return sum(len(n.metadata_props) for g in graphs for n in g.node)


def opset_imports(model) -> dict:
    return {(o.domain or "ai.onnx"): o.version for o in model.opset_import}


class ProtoDiff(NamedTuple):
    tensors_total: int
    tensors_missing: list  # Tensor of `a` whose value `b` does not carry
    renamed: list  # (name in a, name in b) of tensors kept by value under another name
    metadata: list  # lines
    opsets: list  # lines
    io: list  # lines

    @property
    def weights_missing(self) -> list:
        return [t for t in self.tensors_missing if t.is_float_weight]

    @property
    def clean(self) -> bool:
        return not (self.tensors_missing or self.metadata or self.opsets or self.io)

    def summary(self) -> str:
        parts = []
        if self.tensors_missing:
            w = self.weights_missing
            parts.append(f"{len(self.tensors_missing)}/{self.tensors_total} tensors lost"
                         + (f" ({len(w)} weights, e.g. {w[0].name} {w[0].value.shape} in {w[0].graph})" if w
                            else f" (e.g. {self.tensors_missing[0].name} {self.tensors_missing[0].value.shape})"))
        parts += self.metadata + self.opsets + self.io
        return "; ".join(parts) if parts else "kept"

    def renamed_summary(self) -> str:
        """Names are not values: reported, not counted against `clean`."""
        if not self.renamed:
            return ""
        a, b = self.renamed[0]
        return f"{len(self.renamed)}/{self.tensors_total} tensors renamed (e.g. {a} -> {b})"


def proto_diff(a: onnx.ModelProto, b: onnx.ModelProto) -> ProtoDiff:
    ta, tb = tensors(a), tensors(b)
    by_key = {}
    for t in tb:
        by_key.setdefault(t.key, set()).add(t.name)
    missing = [t for t in ta if t.key not in by_key]
    renamed = [(t.name, sorted(by_key[t.key])[0]) for t in ta if t.key in by_key and t.name not in by_key[t.key]]
    ma, mb = _metadata(a), _metadata(b)
    meta = [f"metadata {k!r} dropped" for k in ma if k not in mb] + \
           [f"metadata {k!r} changed" for k in ma if k in mb and ma[k] != mb[k]]
    oa, ob = opset_imports(a), opset_imports(b)
    opsets = [f"opset {d} {v} -> {ob.get(d, 'none')}" for d, v in oa.items() if ob.get(d) != v]
    fa, fb = _fields(a), _fields(b)
    meta += [f"{k} {fa[k]!r:.40} -> {fb[k]!r:.40}" for k in fa if fa[k] and fa[k] != fb[k]]
    na, nb = _node_metadata(a), _node_metadata(b)
    if na > nb:
        meta.append(f"node metadata_props {na} -> {nb} entries")
    ia, ib = _io(a.graph), _io(b.graph)
    io = []
    if [x[:2] for x in ia] != [x[:2] for x in ib]:
        io.append(f"io names {[x[1] for x in ia]} -> {[x[1] for x in ib]}")
    for (kind, name, ta_, ca), (_, name_b, tb_, cb) in zip(ia, ib):
        if ca != cb:  # up to a consistent renaming of the shared symbolic dims
            io.append(f"{kind} {name} type {ta_} -> {tb_}")
    return ProtoDiff(len(ta), missing, renamed, meta, opsets, io)


# ---- onnxruntime ---------------------------------------------------------------

def session(path_or_bytes, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1  # a shared machine; and results independent of the thread count
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, opts, providers=["CPUExecutionProvider"])


def as_array(value) -> np.ndarray:
    """An onnxruntime (or interpreter) output as an array: ZipMap's [{label: p}] in label order."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.asarray([[row[k] for k in keys] for row in value], np.float64)
    return np.asarray(value)


def run_onnxruntime(path_or_bytes, cases: list, optimize: bool = True) -> list:
    """For each input case, {output name: array}."""
    sess = session(path_or_bytes, optimize)
    wanted = {i.name for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, map(as_array, sess.run(None, {k: v for k, v in case.items() if k in wanted}))))
            for case in cases]


def rel_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |ref - got| / max |ref| (0 when both are all zero); inf on a shape mismatch."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return math.inf
    if ref.dtype.kind not in "fc" and got.dtype.kind not in "fc":
        return 0.0 if np.array_equal(ref, got) else 1.0
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    if not ref.size:
        return 0.0
    scale = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(ref - got)))
    if not np.isfinite(err):
        return 0.0 if np.array_equal(ref, got, equal_nan=True) else math.inf
    return err / scale if scale > 0 else err


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    if ref.shape != got.shape:
        return math.nan
    na, nb = np.linalg.norm(ref), np.linalg.norm(got)
    if na == 0:
        return math.nan  # an all-zero reference has no direction to compare with
    return float(ref @ got / (na * nb)) if nb else 0.0


def compare(ref_runs: list, got_runs: list, metric=rel_error, worst=max) -> tuple:
    """(worst figure, output name where it is) over every case and float output."""
    figures = []
    for ref, got in zip(ref_runs, got_runs):
        for name, r in ref.items():
            if name not in got:
                return (math.inf if worst is max else math.nan, f"{name} missing")
            if metric is cosine and np.asarray(r).dtype.kind not in "fc":
                continue  # labels: compared by rel_error in the round trip, not by cosine
            figures.append((metric(r, got[name]), name))
    figures = [f for f in figures if not math.isnan(f[0])]
    if not figures:
        return (math.nan, "no comparable output")
    return worst(figures, key=lambda f: f[0])


def label_agreement(ref_runs: list, got_runs: list) -> Optional[float]:
    """Share of equal integer outputs (class labels), None when the model has none."""
    same = total = 0
    for ref, got in zip(ref_runs, got_runs):
        for name, r in ref.items():
            r = np.asarray(r)
            if r.dtype.kind in "iu" and name in got and np.shape(got[name]) == r.shape:
                same += int(np.sum(r == np.asarray(got[name])))
                total += r.size
    return same / total if total else None


def weights_left(original: onnx.ModelProto, compressed: onnx.ModelProto, subset=None) -> tuple:
    """(float weights of `original` (or of `subset`) still bit-identical in `compressed`, how many there were)."""
    pool = subset if subset is not None else [t for t in tensors(original) if t.is_float_weight]
    keys = {t.key for t in tensors(compressed)}
    return [t for t in pool if t.key in keys], len(pool)
