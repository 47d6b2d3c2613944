"""ONNX -> IR.

Ops with a core equivalent go through a table (ONNX op type -> converter);
a converter that meets a case the core op does not cover raises NotCore (or
the core op's own type check fails) and the node is carried through as a
foreign `onnx.<OpType>` op with its attributes, evaluated by onnx's
reference evaluator. Initializers become const ops (read-only arrays).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import onnx
from onnx import external_data_helper, shape_inference

from ir.core import Block, Function, InvalidProgram, MapType, Op, OptionalType, Program, SequenceType, TensorType, Var
from ir.construct import const_op, new_op
from ir.formats.onnx import foreign  # noqa: F401  (registers the onnx.* evaluator)
from ir.formats.onnx import model_meta, records
from ir.formats.onnx.control import BLOCK_ATTRS  # also registers the If / Loop / Scan kernels
from ir.formats.onnx.model_meta import MODEL_META
from ir.formats.onnx.common import (Names, OnnxFormatError, attr_to_ir, ir_dtype, is_external, opset_of,
                                    safe_name, tensor_to_array)
from ir.dtypes import dtype as lookup_dtype, from_numpy  # noqa: F401
from ir.ops import OpError
from ir.validate import validate


ONNX_NODE = "_onnx_node"  # a const op's attr: the ONNX node it was (Constant), written back as one


class NotCore(Exception):
    """This node's attributes / inputs fall outside the core op: keep it foreign."""


# ---- loading -------------------------------------------------------------------

def _read(src, base_dir) -> tuple:
    """(ModelProto, label for messages, directory of its external data or None); never
    mutates a ModelProto it is given. External-data initializers are left in their file
    (the importer maps them, see ir.lazy); external tensors inside attributes are read."""
    if isinstance(src, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(src)
        base = os.fspath(base_dir) if base_dir is not None else None
        if base is not None:
            _load_attribute_tensors(model, base)
        return model, "<ModelProto>", base
    path = os.fspath(src)
    if not os.path.isfile(path):
        raise OnnxFormatError(f"{path}: no such file")
    base = os.fspath(base_dir) if base_dir is not None else os.path.dirname(os.path.abspath(path))
    try:
        model = onnx.load(path, load_external_data=False)
        _load_attribute_tensors(model, base)
    except Exception as e:  # protobuf / io errors come in many types
        raise OnnxFormatError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return model, path, base


def _load_attribute_tensors(model, base: str) -> None:
    # rare (a Constant node's value kept in a file) and small: read, as onnx would
    for t in external_data_helper._get_attribute_tensors(model):
        if is_external(t):
            external_data_helper.load_external_data_for_tensor(t, base)
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]


def _check(model, label):
    if not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise OnnxFormatError(f"{label}: not an ONNX model (no graph)")
    if model.ByteSize() < 2 ** 31 - 1:
        try:
            onnx.checker.check_model(_without_external(model))
        except Exception as e:
            raise OnnxFormatError(f"{label}: invalid ONNX model ({str(e).splitlines()[0]})") from None


def _without_external(model):
    """The model for onnx's checker: external-data tensors stand in as empty tensors of their
    rank (the checker would look for their files relative to the working directory; the
    importer checks each file itself when it maps the tensor, ir.lazy)."""
    tensors = [t for t in external_data_helper._get_all_tensors(model) if is_external(t)]
    if not tensors:
        return model
    stub = onnx.ModelProto()
    stub.CopyFrom(model)  # headers only: the data is not in the proto
    for t in external_data_helper._get_all_tensors(stub):
        if is_external(t):
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
            rank = len(t.dims)
            del t.dims[:]
            t.dims.extend([0] * rank)
    return stub


def _type_of(type_proto, label=""):
    """The IR type an ONNX TypeProto declares; None when it declares no element type.
    A tensor without a shape has unknown rank; a dim without value or name is "?"."""
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        tt = type_proto.tensor_type
        if not tt.elem_type:
            return None
        dt = ir_dtype(tt.elem_type, label)
        if not tt.HasField("shape"):
            return TensorType.of(dt, None)
        # some exporters write -1 where they mean an unknown dim
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?")
                     for d in tt.shape.dim)
        return TensorType.of(dt, dims)
    if which == "sequence_type":
        elem = _type_of(type_proto.sequence_type.elem_type, label)
        return None if elem is None else SequenceType(elem)
    if which == "optional_type":
        elem = _type_of(type_proto.optional_type.elem_type, label)
        return None if elem is None else OptionalType(elem)
    if which == "map_type":
        value = _type_of(type_proto.map_type.value_type, label)
        return None if value is None else MapType(ir_dtype(type_proto.map_type.key_type, label), value)
    if which is None:
        return None
    raise OnnxFormatError(f"{label}: ONNX {which.replace('_', ' ')} values are not supported")


def _inferred(model):
    """The model with onnx's shape inference applied (types of inner values, subgraphs
    included); the model itself when inference fails or the model is too large."""
    if model.ByteSize() >= 2 ** 31 - 1:
        return model
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # an op onnx cannot infer: keep what the file says
        return model


def _graph_types(g) -> dict:
    """ONNX value name -> IR type, for the values one graph declares (not its subgraphs)."""
    types = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        t = _type_of(vi.type, vi.name)
        if t is not None:
            types[vi.name] = t
    return types


# ---- the conversion context --------------------------------------------------

class Ctx:
    """The conversion scope of one graph. A subgraph's scope (an If branch, a Loop body)
    sees the values of its enclosing scopes, as ONNX does; names are unique across the
    whole model, so an inner value never shadows an outer one in the IR."""

    def __init__(self, model, graph, parent: Optional["Ctx"] = None):
        self.parent = parent
        self.opset = opset_of(model)
        self.opsets = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in model.opset_import}
        self.names = parent.names if parent is not None else Names()
        self.renamed: dict = parent.renamed if parent is not None else {}  # IR name -> ONNX name
        self.root = parent.root if parent is not None else self
        self.base_dir: Optional[str] = None  # where external data lives (the root's is used)
        self.node_notes: list = []  # (first output, doc_string, metadata_props) of annotated nodes
        self.model = model
        self.ops: list = []
        self.env: dict = {}
        self.initializers = {t.name: t for t in graph.initializer}
        self.types = _graph_types(graph)
        self.graph_outputs = {o.name for o in graph.output}

    def name_for(self, onnx_name: str) -> str:
        """The IR name of a value this scope defines: the ONNX name made safe (and unique)."""
        if self.parent is None:
            return self.names.of(onnx_name)
        name = self.names.fresh(safe_name(onnx_name))
        self.renamed[name] = onnx_name  # for export: a subgraph's values keep their ONNX names
        return name

    def var(self, onnx_name: str) -> Optional[Var]:
        if not onnx_name:
            return None
        scope = self
        while scope is not None:
            v = scope.env.get(onnx_name)
            if v is not None:
                return v
            if onnx_name in scope.initializers:
                return scope.initializer(onnx_name)
            scope = scope.parent
        raise OnnxFormatError(f"value {onnx_name!r} is used before it is defined")

    def initializer(self, onnx_name: str) -> Var:
        """A const op for an initializer of this scope, made where it is first read."""
        arr, dt = self.tensor_array(self.initializers[onnx_name])
        op = const_op(self.name_for(onnx_name), arr, dt)
        self.ops.append(op)
        v = self.env[onnx_name] = op.outputs[0]
        return v

    def tensor_array(self, t) -> tuple:
        """(array, IR dtype) of a tensor of the model; external data stays in its file."""
        return tensor_to_array(t, self.root.base_dir)

    def inp(self, node, i: int) -> Optional[Var]:
        return self.var(node.input[i]) if i < len(node.input) else None

    def static(self, node, i: int):
        """The build-time value of input i, or None when absent; NotCore when not constant."""
        v = self.inp(node, i)
        if v is None:
            return None
        if v.val is None:
            raise NotCore(f"input {i} is not constant")
        return v.val

    def const(self, hint: str, value, dt=None) -> Var:
        op = const_op(self.names.fresh(hint), value, dt)
        self.ops.append(op)
        return op.outputs[0]

    def emit(self, op_type: str, inputs: dict, out: Optional[str] = None, hint: str = "t") -> Var:
        """A core op; `out` is the ONNX value it defines (else an internal temp)."""
        for v in inputs.values():
            if isinstance(v, Var) and not v.is_tensor:
                raise NotCore(f"input {v.name!r} is a {v.type.kind}")
            if isinstance(v, Var) and v.rank is None:
                raise NotCore(f"input {v.name!r} has unknown rank")
        name = self.name_for(out) if out else self.names.fresh(hint)
        op = new_op(op_type, name, inputs)
        self.ops.append(op)
        return op.outputs[0]


def _attrs(node) -> dict:
    return {a.name: attr_to_ir(a) for a in node.attribute}


def _out(node) -> str:
    return node.output[0]


# ---- converters: (node, ctx, attrs) -> output Var(s) -----------------------------

def _binary(core, float_only=False):
    def conv(n, c, a):
        x, y = c.inp(n, 0), c.inp(n, 1)
        if float_only and not x.type.dt.is_float:
            raise NotCore("integer division truncates")
        return c.emit(core, {"x": x, "y": y}, _out(n))
    return conv


def _unary(core):
    return lambda n, c, a: c.emit(core, {"x": c.inp(n, 0)}, _out(n))


def _variadic_binary(core):
    def conv(n, c, a):
        if len([i for i in n.input if i]) != 2:
            raise NotCore("only the two-input form")
        return _binary(core)(n, c, a)
    return conv


def _gelu(n, c, a):
    mode = {"none": "EXACT", "tanh": "TANH_APPROXIMATION"}[a.get("approximate", "none")]
    return c.emit("gelu", {"x": c.inp(n, 0), "mode": c.const(_out(n) + "_mode", mode)}, _out(n))


def _matmul(n, c, a):
    return c.emit("matmul", {"x": c.inp(n, 0), "y": c.inp(n, 1)}, _out(n))


def _gemm(n, c, a):
    x, w, bias = c.inp(n, 0), c.inp(n, 1), c.inp(n, 2)
    ta, tb = bool(a.get("transA", 0)), bool(a.get("transB", 0))
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    o = _out(n)
    if tb and not ta and alpha == 1 and beta == 1 and (bias is None or bias.shape == (w.shape[0],)):
        return c.emit("linear", {"x": x, "weight": w, "bias": bias}, o)
    last = bias is None and alpha == 1
    y = c.emit("matmul", {"x": x, "y": w, "transpose_x": c.const(o + "_tx", ta),
                          "transpose_y": c.const(o + "_ty", tb)}, o if last else None, o + "_mm")
    dt = x.type.dt.storage
    if alpha != 1:
        y = c.emit("mul", {"x": y, "y": c.const(o + "_alpha", np.array(alpha, dt))},
                   o if bias is None else None, o + "_scaled")
    if bias is not None:
        if beta != 1:
            bias = c.emit("mul", {"x": bias, "y": c.const(o + "_beta", np.array(beta, dt))}, None, o + "_c")
        y = c.emit("add", {"x": y, "y": bias}, o)
    return y


_PAD_TYPE = {"NOTSET": "custom", "SAME_UPPER": "same", "SAME_LOWER": "same_lower", "VALID": "valid"}


def _spatial(n, c, a, nsp, what):
    """strides / pad_type / pad / dilations inputs shared by conv and pooling."""
    o = _out(n)
    pads = list(a.get("pads", [0] * 2 * nsp))
    mil_pad = [p for i in range(nsp) for p in (pads[i], pads[nsp + i])]  # ONNX: all begins, then all ends
    ins = {"strides": c.const(o + "_strides", np.array(a.get("strides", [1] * nsp), np.int32)),
           "pad_type": c.const(o + "_pad_type", _PAD_TYPE[a.get("auto_pad", "NOTSET")]),
           "pad": c.const(o + "_pad", np.array(mil_pad, np.int32))}
    if what == "conv":
        ins["dilations"] = c.const(o + "_dilations", np.array(a.get("dilations", [1] * nsp), np.int32))
        ins["groups"] = c.const(o + "_groups", np.int32(a.get("group", 1)))
    return ins


def _conv(n, c, a):
    x, w = c.inp(n, 0), c.inp(n, 1)
    ins = {"x": x, "weight": w, "bias": c.inp(n, 2), **_spatial(n, c, a, w.rank - 2, "conv")}
    return c.emit("conv", ins, _out(n))


def _conv_transpose(n, c, a):
    x, w = c.inp(n, 0), c.inp(n, 1)
    if any(a.get("output_padding", [])) or "output_shape" in a:
        raise NotCore("output_padding / output_shape")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotCore("SAME padding of ConvTranspose splits the pad the other way round")
    ins = {"x": x, "weight": w, "bias": c.inp(n, 2), **_spatial(n, c, a, w.rank - 2, "conv")}
    return c.emit("conv_transpose", ins, _out(n))


def _pool(core):
    def conv(n, c, a):
        if len([o for o in n.output if o]) > 1 or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [])):
            raise NotCore("indices output, ceil_mode or dilations")
        k = list(a["kernel_shape"])
        ins = {"x": c.inp(n, 0), "kernel_sizes": c.const(_out(n) + "_kernel", np.array(k, np.int32)),
               **_spatial(n, c, a, len(k), "pool")}
        if core == "avg_pool":
            ins["exclude_padding_from_average"] = c.const(_out(n) + "_exclude",
                                                          not a.get("count_include_pad", 0))
        return c.emit(core, ins, _out(n))
    return conv


def _global_pool(core):
    def conv(n, c, a):
        x = c.inp(n, 0)
        axes = np.arange(2, x.rank, dtype=np.int32)
        return c.emit(core, {"x": x, "axes": c.const(_out(n) + "_axes", axes),
                             "keep_dims": c.const(_out(n) + "_keep", True)}, _out(n))
    return conv


def _transpose(n, c, a):
    x = c.inp(n, 0)
    perm = a.get("perm", tuple(reversed(range(x.rank))))
    return c.emit("transpose", {"x": x, "perm": c.const(_out(n) + "_perm", np.array(perm, np.int32))}, _out(n))


def _reshape(n, c, a):
    shape = c.static(n, 1)
    if a.get("allowzero", 0) and 0 in shape:
        raise NotCore("allowzero with a 0 dim")
    return c.emit("reshape", {"x": c.inp(n, 0), "shape": c.inp(n, 1)}, _out(n))


def _axes_param(n, c, a, slot=1):
    """axes from the input slot (opset 13+/18+) or the attribute (older opsets)."""
    if "axes" in a:
        return np.array(a["axes"], np.int32)
    v = c.static(n, slot)
    return None if v is None else np.asarray(v, np.int32)


def _unsqueeze(n, c, a):
    axes = _axes_param(n, c, a)
    return c.emit("expand_dims", {"x": c.inp(n, 0), "axes": c.const(_out(n) + "_axes", axes)}, _out(n))


def _squeeze(n, c, a):
    axes = _axes_param(n, c, a)
    ins = {"x": c.inp(n, 0)}
    if axes is not None:
        ins["axes"] = c.const(_out(n) + "_axes", axes)
    return c.emit("squeeze", ins, _out(n))


def _cast(n, c, a):
    dt = ir_dtype(a["to"], n.name)
    if dt == "string":
        raise NotCore("cast to string")
    return c.emit("cast", {"x": c.inp(n, 0), "dtype": c.const(_out(n) + "_dtype", dt)}, _out(n))


def _q_axis(c, o, scale, a):
    return c.const(o + "_axis", np.int32(a.get("axis", 1))) if scale.rank == 1 else None


def _quantize(n, c, a):
    x, scale, zp = c.inp(n, 0), c.inp(n, 1), c.inp(n, 2)
    c.static(n, 1), c.static(n, 2)
    if a.get("block_size", 0):
        raise NotCore("blocked quantize")
    out_dt = zp.dtype if zp is not None else ir_dtype(a.get("output_dtype", 0) or 2, n.name)
    if out_dt not in ("int8", "uint8"):
        raise NotCore(f"quantize to {out_dt}")
    o = _out(n)
    return c.emit("quantize", {"input": x, "scale": scale, "zero_point": zp, "axis": _q_axis(c, o, scale, a),
                               "output_dtype": c.const(o + "_dtype", out_dt)}, o)


def _dequantize(n, c, a):
    x, scale, zp = c.inp(n, 0), c.inp(n, 1), c.inp(n, 2)
    c.static(n, 1), c.static(n, 2)
    o = _out(n)
    bs = int(a.get("block_size", 0))
    if bs:
        if x.val is None:
            raise NotCore("blocked dequantize of a runtime tensor")
        axis = int(a.get("axis", 1)) % x.rank
        if x.shape[axis] % bs:
            raise NotCore("a partial last block")
        return c.emit("constexpr_blockwise_shift_scale", {"data": x, "scale": scale, "offset": zp}, o)
    if x.val is not None:  # a stored weight's dequantization: the IR's canonical constexpr form
        try:
            return _constexpr_affine(c, x, scale, zp, a, o)
        except OpError:
            pass  # a form constexpr_affine_dequantize cannot say: keep the plain dequantize
    return c.emit("dequantize", {"input": x, "scale": scale, "zero_point": zp,
                                 "axis": _q_axis(c, o, scale, a)}, o)


def _constexpr_affine(c, x, scale, zp, a, o):
    """constexpr_affine_dequantize of a stored tensor; raises OpError (adding nothing) when
    its rules refuse the parameters."""
    extra = []
    if zp is None:  # ONNX's default zero point is 0 of the data's type
        extra.append(const_op(c.names.fresh(o + "_zero_point"),
                              np.zeros(scale.shape, lookup_dtype(x.dtype).storage), x.dtype))
        zp = extra[-1].outputs[0]
    axis = int(a.get("axis", 1)) % x.rank if scale.rank == 1 else 0
    extra.append(const_op(c.names.fresh(o + "_axis"), np.int32(axis)))
    op = new_op("constexpr_affine_dequantize", c.name_for(o),
                {"quantized_data": x, "zero_point": zp, "scale": scale, "axis": extra[-1].outputs[0]})
    c.ops.extend(extra + [op])
    return op.outputs[0]


def _softmax(n, c, a):
    x = c.inp(n, 0)
    axis = int(a.get("axis", -1 if c.opset >= 13 else 1))
    if c.opset < 13 and axis % x.rank != x.rank - 1:
        raise NotCore("pre-13 Softmax flattens to 2-D")
    return c.emit("softmax", {"x": x, "axis": c.const(_out(n) + "_axis", np.int32(axis))}, _out(n))


def _single_output(n):
    if len([o for o in n.output if o]) > 1:
        raise NotCore("extra outputs are used")


def _layer_norm(n, c, a):
    _single_output(n)
    x = c.inp(n, 0)
    axis = int(a.get("axis", -1)) % x.rank
    o = _out(n)
    return c.emit("layer_norm", {"x": x, "gamma": c.inp(n, 1), "beta": c.inp(n, 2),
                                 "axes": c.const(o + "_axes", np.arange(axis, x.rank, dtype=np.int32)),
                                 "epsilon": c.const(o + "_eps", np.float32(a.get("epsilon", 1e-5)))}, o)


def _batch_norm(n, c, a):
    _single_output(n)
    if a.get("training_mode", 0):
        raise NotCore("training mode")
    o = _out(n)
    return c.emit("batch_norm", {"x": c.inp(n, 0), "gamma": c.inp(n, 1), "beta": c.inp(n, 2),
                                 "mean": c.inp(n, 3), "variance": c.inp(n, 4),
                                 "epsilon": c.const(o + "_eps", np.float32(a.get("epsilon", 1e-5)))}, o)


def _concat(n, c, a):
    xs = tuple(c.var(i) for i in n.input if i)
    return c.emit("concat", {"values": xs, "axis": c.const(_out(n) + "_axis", np.int32(a["axis"]))}, _out(n))


def _gather(n, c, a):
    return c.emit("gather", {"x": c.inp(n, 0), "indices": c.inp(n, 1),
                             "axis": c.const(_out(n) + "_axis", np.int32(a.get("axis", 0)))}, _out(n))


def _reduce(core):
    def conv(n, c, a):
        axes = _axes_param(n, c, a)
        if axes is not None and axes.size == 0:
            axes = None
        if axes is None and a.get("noop_with_empty_axes", 0):
            raise NotCore("noop_with_empty_axes")
        o = _out(n)
        ins = {"x": c.inp(n, 0), "keep_dims": c.const(o + "_keep", bool(a.get("keepdims", 1)))}
        if axes is not None:
            ins["axes"] = c.const(o + "_axes", axes)
        return c.emit(core, ins, o)
    return conv


def _flatten(n, c, a):
    x = c.inp(n, 0)
    axis = int(a.get("axis", 1))
    axis = axis + x.rank if axis < 0 else axis  # ONNX: axis in [-r, r]
    head, tail = x.shape[:axis], x.shape[axis:]
    if x.type.is_static:
        shape = [int(np.prod(head, dtype=np.int64)), int(np.prod(tail, dtype=np.int64))]
    elif axis == 1 and all(isinstance(d, int) for d in tail):
        shape = [0, int(np.prod(tail, dtype=np.int64))]
    else:
        raise NotCore("symbolic dims")
    return c.emit("reshape", {"x": x, "shape": c.const(_out(n) + "_shape", np.array(shape, np.int32))}, _out(n))


def _identity(n, c, a):
    if _out(n) in c.graph_outputs or len([o for o in n.output if o]) > 1:
        raise NotCore("a graph output keeps its own name")
    return c.inp(n, 0)


def _clip(n, c, a):
    x = c.inp(n, 0)
    if not x.type.dt.is_float:
        raise NotCore("integer clip")
    lo, hi = c.static(n, 1), c.static(n, 2)
    dt = x.type.dt.storage
    lo = np.array(-np.inf if lo is None else lo, dt)
    hi = np.array(np.inf if hi is None else hi, dt)
    o = _out(n)
    return c.emit("clip", {"x": x, "alpha": c.const(o + "_lo", lo), "beta": c.const(o + "_hi", hi)}, o)


def _leaky_relu(n, c, a):
    x = c.inp(n, 0)
    alpha = c.const(_out(n) + "_alpha", np.array(a.get("alpha", 0.01), x.type.dt.storage))
    return c.emit("leaky_relu", {"x": x, "alpha": alpha}, _out(n))


def _where(n, c, a):
    return c.emit("select", {"cond": c.inp(n, 0), "a": c.inp(n, 1), "b": c.inp(n, 2)}, _out(n))


def _tile(n, c, a):
    c.static(n, 1)
    return c.emit("tile", {"x": c.inp(n, 0), "reps": c.inp(n, 1)}, _out(n))


_CONSTANT_FORMS = {"value_float": np.float32, "value_floats": np.float32,
                   "value_int": np.int64, "value_ints": np.int64}


def _constant(n, c, a):
    o = _out(n)
    if "value" in a and isinstance(a["value"], np.ndarray):
        arr, dt = tensor_to_array(next(x.t for x in n.attribute if x.name == "value"))
    else:
        key = next((k for k in _CONSTANT_FORMS if k in a), None)
        if key is None:
            raise NotCore("sparse or string constant")
        arr, dt = np.array(a[key], _CONSTANT_FORMS[key]), None
    op = const_op(c.name_for(o), arr, dt)
    op = op.replace(attrs={**op.attrs, ONNX_NODE: "Constant"})  # written back as a Constant node
    c.ops.append(op)
    return op.outputs[0]


CONVERTERS = {
    "MatMul": _matmul, "Gemm": _gemm, "Conv": _conv, "ConvTranspose": _conv_transpose,
    "Add": _binary("add"), "Sub": _binary("sub"), "Mul": _binary("mul"),
    "Div": _binary("real_div", float_only=True), "Pow": _binary("pow"),
    "Max": _variadic_binary("maximum"), "Min": _variadic_binary("minimum"),
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "Erf": _unary("erf"), "Exp": _unary("exp"), "Log": _unary("log"), "Sqrt": _unary("sqrt"),
    "Abs": _unary("abs"), "Neg": _unary("neg"), "Floor": _unary("floor"), "Ceil": _unary("ceil"),
    "Sign": _unary("sign"), "Gelu": _gelu, "Clip": _clip,
    "Transpose": _transpose, "Reshape": _reshape, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Cast": _cast, "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
    "Softmax": _softmax, "LayerNormalization": _layer_norm, "BatchNormalization": _batch_norm,
    "MaxPool": _pool("max_pool"), "AveragePool": _pool("avg_pool"),
    "GlobalAveragePool": _global_pool("reduce_mean"), "GlobalMaxPool": _global_pool("reduce_max"),
    "Concat": _concat, "Gather": _gather, "Flatten": _flatten,
    "ReduceMean": _reduce("reduce_mean"), "ReduceSum": _reduce("reduce_sum"),
    "ReduceMax": _reduce("reduce_max"), "ReduceMin": _reduce("reduce_min"),
    "Identity": _identity, "Dropout": _identity, "Constant": _constant,
    # Slice stays an ONNX op: no stage rewrites it, and its own form keeps the model's
    # starts / ends tensors (INT64_MAX, negative axes) exactly as they were
    "LeakyRelu": _leaky_relu, "Where": _where, "Tile": _tile,
    "Sin": _unary("sin"), "Cos": _unary("cos"), "ReduceProd": _reduce("reduce_prod"),
}


# ---- foreign ops -------------------------------------------------------------------

def _foreign_attrs(n, c) -> dict:
    attrs = {}
    for a in n.attribute:
        if a.type != onnx.AttributeProto.GRAPH:  # graphs become the op's blocks
            attrs[a.name] = attr_to_ir(a)
    attrs["_opset"] = c.opsets.get(n.domain if n.domain != "ai.onnx" else "", c.opset)
    if n.domain not in ("", "ai.onnx"):
        attrs["_domain"] = n.domain
    return attrs


def _foreign(n, c):
    attrs = _foreign_attrs(n, c)
    inputs = {f"in{i}": c.var(name) for i, name in enumerate(n.input) if name}
    graphs = [a for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    blocks = tuple(_subgraph_block(a.g, c, _block_input_types(n, a.name, inputs, c)) for a in graphs)
    if blocks:
        attrs[BLOCK_ATTRS] = tuple(a.name for a in graphs)
        _check_arity(n, blocks)
    outs = []
    for i, name in enumerate(n.output):
        t = c.types.get(name) if name else None
        if t is None:
            t = _output_type_from_blocks(n, i, blocks, inputs) or TensorType("fp32", None)
        vname = c.name_for(name) if name else c.names.fresh(f"{n.op_type.lower()}_unused")
        outs.append(Var(vname, t))
    op_name = c.names.fresh(safe_name(n.name) if n.name else outs[0].name + "_op")
    c.ops.append(Op.make(f"onnx.{n.op_type}", op_name, inputs, outs, attrs, blocks))
    return outs


# ---- subgraphs: If branches, Loop and Scan bodies --------------------------------------

def _block_input_types(n, attr: str, inputs: dict, c) -> list:
    """Types for a body's inputs when its graph leaves them undeclared, by the ONNX rules
    of the op that runs it (Loop: iteration number, condition, carried values)."""
    if n.op_type == "Loop" and attr == "body":
        carried = [inputs.get(f"in{i}") for i in range(2, len(n.input))]
        return [TensorType("int64", ()), TensorType("bool", ())] + [v.type if v is not None else None
                                                                   for v in carried]
    if n.op_type == "Scan" and attr == "body":
        vals = [inputs.get(f"in{i}") for i in range(len(n.input))]
        return [None if v is None else (v.type if i < len(vals) - _scan_inputs(n) else
                                        TensorType(v.dtype, None)) for i, v in enumerate(vals)]
    return []


def _scan_inputs(n) -> int:
    return next((a.i for a in n.attribute if a.name == "num_scan_inputs"), 0)


def _subgraph_block(g, parent: Ctx, fallback_types: list) -> Block:
    c = Ctx(parent.model, g, parent)
    inputs = []
    for i, vi in enumerate(g.input):
        t = _type_of(vi.type, vi.name)
        if t is None:
            t = fallback_types[i] if i < len(fallback_types) and fallback_types[i] is not None \
                else TensorType("fp32", None)
        v = Var(c.name_for(vi.name), t)
        c.env[vi.name] = v
        inputs.append(v)
    for n in g.node:
        _define(c, n, _convert_node(n, c))
    outputs = [c.var(o.name) for o in g.output]
    return Block.make(inputs, c.ops, outputs)


def _expected_block_outputs(n) -> Optional[int]:
    """How many outputs the body of a control-flow node must return (None: no rule here)."""
    outs = len(n.output)
    if n.op_type in ("If", "Scan"):
        return outs
    if n.op_type == "Loop":
        return 1 + outs  # the condition, then the carried values and the scan outputs
    return None


def _check_arity(n, blocks) -> None:
    want = _expected_block_outputs(n)
    for b in blocks:
        if want is not None and len(b.outputs) != want:
            raise OnnxFormatError(f"{n.op_type} node {n.name or n.output[0]!r}: its subgraph returns "
                                  f"{len(b.outputs)} values, the node needs {want}")


def _output_type_from_blocks(n, i: int, blocks: tuple, inputs: dict):
    """An output type the blocks decide when shape inference said nothing."""
    if not blocks:
        return None
    body = blocks[0]
    if n.op_type == "If":
        a, b = (blk.outputs[i].type for blk in blocks[:2])
        return a if a == b else (TensorType(a.dtype, None) if a.is_tensor else a)
    if n.op_type == "Loop":
        carried = len(n.input) - 2
        t = body.outputs[1 + i].type
        return t if i < carried else (TensorType(t.dtype, None) if t.is_tensor else None)
    if n.op_type == "Scan":
        t = body.outputs[i].type
        states = len(n.input) - _scan_inputs(n)
        return t if i < states else (TensorType(t.dtype, None) if t.is_tensor else None)
    return None


def _define(c, n, values) -> None:
    for name, v in zip(n.output, values):
        if name:
            c.env[name] = v
    if n.metadata_props or n.doc_string:  # node-level annotations (exporters' provenance)
        c.root.node_notes.append((next((o for o in n.output if o), ""), n.doc_string,
                                  tuple((p.key, p.value) for p in n.metadata_props)))


def _convert_node(n, c):
    conv = CONVERTERS.get(n.op_type) if n.domain in ("", "ai.onnx") else None
    if conv is not None:
        mark = len(c.ops)
        try:
            out = conv(n, c, _attrs(n))
            return [out] if isinstance(out, Var) else list(out)
        except (NotCore, OpError, KeyError, TypeError):
            # drop half-built core ops (the node goes through as foreign), but keep the
            # initializer consts read on the way: later nodes find them in env
            live = {id(v) for v in c.env.values()}
            c.ops[mark:] = [op for op in c.ops[mark:] if id(op.outputs[0]) in live]
    return _foreign(n, c)


def _names_read(g) -> set:
    """Every value name a node of `g` or of its subgraphs reads, and the graph's outputs."""
    read = {o.name for o in g.output}
    for n in g.node:
        read.update(n.input)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                read |= _names_read(a.g)
    return read


def _graph_inputs(c, g, label) -> tuple:
    """(input Vars, names of initializers that are also graph inputs: overridable defaults)."""
    inputs, overridable = [], []
    for vi in g.input:
        if vi.name in c.initializers:
            overridable.append(vi.name)  # old exporters list initializers among the inputs
            continue
        t = _type_of(vi.type, vi.name)
        if t is None:
            raise OnnxFormatError(f"{label}: graph input {vi.name!r} has no type")
        v = Var(c.name_for(vi.name), t)
        c.env[vi.name] = v
        inputs.append(v)
    return inputs, overridable


def import_onnx(src, base_dir=None) -> Program:
    """An ONNX model (path or ModelProto) as a Program with one function, "main".

    If / Loop / Scan subgraphs become the nested blocks of their op; everything
    else the model carries (metadata, producer, opsets of every domain, local
    functions, value_info) is kept in the program's attrs for export.
    External-data initializers load from the file's directory (or base_dir).
    Raises OnnxFormatError (a ValueError) naming the file and the reason."""
    model, label, base = _read(src, base_dir)
    _check(model, label)
    typed = _inferred(_inlined(model, label))
    c = Ctx(typed, typed.graph)
    c.base_dir = base
    g = typed.graph
    decoded = records.plan(model)  # compressed weights this package exported
    built: dict = {}
    try:
        inputs, overridable = _graph_inputs(c, g, label)
        for n in g.node:
            if decoded is not None and n.name in decoded.skip:
                for i in decoded.due.get(n.name, ()):
                    records.build(c, decoded.records, i, built)
                continue
            _define(c, n, _convert_node(n, c))
        read = _names_read(g)
        for name in list(overridable) + [t.name for t in g.initializer if t.name not in read]:
            c.var(name)  # kept even when nothing reads it: the file had it, the export has it
        outputs = [c.var(o.name) for o in g.output]
    except OnnxFormatError as e:
        raise OnnxFormatError(f"{label}: {e}") from None
    except (OpError, ValueError) as e:  # a record that matched the graph but not its data
        raise OnnxFormatError(f"{label}: compressed-weight record: {e}") from None
    io = tuple((c.names.of(v.name), v.name) for v in list(g.input) + list(g.output)
               if v.name not in c.initializers)
    renamed = {ir: onnx_name for onnx_name, ir in c.names.map.items()}
    renamed.update(c.renamed)
    renamed = tuple(sorted((ir, onnx_name) for ir, onnx_name in renamed.items() if ir != onnx_name))
    fn = Function("main", Block.make(inputs, c.ops, outputs))
    program = Program.make([fn], {"source_format": "onnx", "onnx_opset": c.opset, "onnx_io_names": io,
                               "onnx_names": renamed, "onnx_overridable": tuple(overridable),
                               "onnx_node_notes": tuple(c.node_notes),
                               "onnx_initializers": tuple(sorted(c.env[t.name].name for t in g.initializer
                                                                 if t.name in c.env)),
                               MODEL_META: model_meta.capture(model, skip_keys=(records.RECORD_KEY,))})
    try:
        return validate(program)
    except InvalidProgram as e:
        raise OnnxFormatError(f"{label}: the imported program is not valid: {e}") from None


def _inlined(model, label):
    """The model with calls of its local functions replaced by their bodies, so their
    weights and ops are seen like any other (the functions themselves are kept for export)."""
    if not model.functions:
        return model
    from onnx import inliner

    try:
        return inliner.inline_local_functions(model)
    except Exception as e:
        raise OnnxFormatError(f"{label}: cannot inline the model's local functions ({e})") from None
