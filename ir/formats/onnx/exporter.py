"""IR -> ONNX.

Core ops go through a table (IR op type -> emitter writing ONNX nodes);
foreign `onnx.*` ops go back as themselves; the compressed-weight constexpr
ops get compact ONNX forms (ir.formats.onnx.compressed). Constants are
written lazily, only when a node reads them as data: op parameters (perm,
axes, pad...) become attributes or small int64 inputs instead.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

from ir import lazy
from ir.atomic import replace, scratch
from ir.core import Program, Var
from ir.dtypes import dtype as lookup_dtype, from_numpy
from ir.formats.onnx.common import (OnnxExportError, array_to_tensor, attr_from_ir, elem_type,
                                    onnx_attrs)
from ir.formats.onnx import model_meta
from ir.formats.onnx.control import BLOCK_ATTRS
from ir.formats.onnx.foreign import slot_names
from ir.formats.onnx.importer import ONNX_NODE
from ir.formats.onnx.model_meta import MODEL_META
from ir.fold import is_constexpr, static_value
from ir.ops import is_foreign

MIN_OPSET = 13  # what a per-axis QuantizeLinear needs
OLDEST_OPSET = 11  # the oldest opset written: a model keeps its own down to this one
COMPRESSED_OPSET = 21  # int4 / uint4 and block_size in DequantizeLinear


def _foldable_at_export(op) -> bool:
    """Any core op without blocks folds when its inputs are known (foreign ops are left to
    the runtime)."""
    return not is_foreign(op.op_type) and not op.blocks


class Writer:
    """Collects nodes and initializers for one function; ONNX names come from IR names."""

    def __init__(self, fn, opset: int, io_names: dict, parent: Optional["Writer"] = None, block=None):
        self.fn, self.opset, self.io_names = fn, opset, io_names
        self.parent = parent
        self.block = fn.block if block is None else block
        self.nodes: list = []
        self.inits: list = []
        self.init_names: set = set()
        self.env: dict = {}  # IR var name -> ONNX value name
        # ONNX names are unique across a graph and its subgraphs: one set for all scopes
        self.used: set = parent.used if parent is not None else set(io_names.values())
        self.producer = {v.name: op for op in self.block.ops for v in op.outputs}
        self.all_names = parent.all_names if parent is not None else _all_names(fn.block)
        self.static_memo: dict = parent.static_memo if parent is not None else {}
        self.static_unknown: set = parent.static_unknown if parent is not None else set()
        self.position_memo: dict = {}
        self.packed_of: dict = {}  # run-time tensor -> {"init": initializer, "nbits": packed width}
        self.sources: dict = {}  # IR var name -> where its value lies in the file (import record)
        self.records: list = []  # one per compressed-weight op, written as model metadata
        self.record_of: dict = {}  # IR var name -> (record index, output index)
        self.sink: Optional[DataSink] = None  # the root writer's external data file, when streaming

    # -- names ------------------------------------------------------------------
    def child(self, block) -> "Writer":
        """The writer of a subgraph: its own nodes and initializers, the names of its
        enclosing graphs visible (outer-scope references), one namespace for all."""
        return Writer(self.fn, self.opset, self.io_names, self, block)

    def fresh(self, hint: str) -> str:
        cand, i = hint, 1
        while cand in self.used or cand in self.all_names:
            cand, i = f"{hint}_{i}", i + 1
        self.used.add(cand)
        return cand

    def name_of(self, var: Var) -> str:
        """The ONNX name a Var's value gets (the original name for graph inputs / outputs)."""
        n = self.io_names.get(var.name, var.name)
        self.used.add(n)
        return n

    # -- values -----------------------------------------------------------------
    def value(self, var: Optional[Var]) -> str:
        """ONNX name holding var's value ('' when absent); consts become initializers here."""
        if var is None:
            return ""
        if var.name not in self.env and var.name not in self.producer and self.parent is not None:
            return self.parent.value(var)  # an outer-scope value: ONNX subgraphs read it by name
        if var.name not in self.env:
            op = self.producer.get(var.name)
            # consts, and outputs a compact form left static (a joint op's mask), are
            # written as initializers when first read as data
            val = op.attrs["val"] if op is not None and op.op_type == "const" else \
                self.static(var) if is_constexpr(op) else None
            if val is None:
                raise OnnxExportError(f"value {var.name!r} is used before it is defined")
            if op.attrs.get(ONNX_NODE) == "Constant":  # it came as a Constant node: it goes back as one
                self.env[var.name] = self.node("Constant", [], outputs=[self.name_of(var)],
                                               value=array_to_tensor(val, var.dtype, self.name_of(var)))
                return self.env[var.name]
            self.env[var.name] = self.initializer(self.name_of(var), val, var.dtype)
            lazy.release(val)  # a file-backed weight read to write it: its pages go back now
            if op.op_type == "const":
                self.sources[var.name] = {"init": self.env[var.name]}
        return self.env[var.name]

    def note(self, var: Var, tensor: str) -> str:
        """Remember that `tensor` (an initializer, or the unpacking of one) holds var's value."""
        src = self.packed_of.get(tensor) or ({"init": tensor} if tensor in self.init_names else None)
        if var is not None and src is not None:
            self.sources[var.name] = src
        return tensor

    @staticmethod
    def _mask_key(mask) -> tuple:
        mask = np.asarray(mask)
        return mask.shape, np.packbits(mask.reshape(-1) != 0).tobytes()

    def mask_bits(self, mask, hint: str, derive=None) -> str:
        """A static mask as a flat uint8 tensor of 0 / 1 at run time: stored one bit per
        element, or made by `derive()` (a run-time recipe from another mask's bits); the
        same mask is written once however many ops read it."""
        key = self._mask_key(mask)
        if key not in self.position_memo:
            from ir.formats.onnx.compressed import unpacked

            bits = (np.asarray(mask) != 0).astype(np.uint8)
            self.position_memo[key] = derive() if derive else unpacked(self, bits, 1, hint, as_index=False)
        return self.position_memo[key]

    def positions(self, mask, hint: str) -> str:
        """Flat positions (int64 [nnz]) of a static mask's set bits, shared by equal masks."""
        key = ("positions",) + self._mask_key(mask)
        if key not in self.position_memo:
            nz = self.node("NonZero", [self.mask_bits(mask, hint)], hint + "_nz")  # [1, nnz]
            self.position_memo[key] = self.node("Reshape", [nz, self.ints(hint + "_nnz", [-1])], hint + "_where")
        return self.position_memo[key]

    def initializer(self, name: str, arr, ir_dtype: str) -> str:
        """The ONNX value holding `arr`: an initializer named `name`, except int4 / uint4
        of more than one element below COMPRESSED_OPSET, which stay packed two per byte
        and are decoded in the graph into an int8 / uint8 value named `name`."""
        arr = np.asarray(arr)
        if self.sink is None or not _direct(arr, ir_dtype):  # only the sink writes a computed one as it comes
            arr = lazy.materialize(arr)
        if ir_dtype in ("int4", "uint4") and self.opset < COMPRESSED_OPSET:
            if arr.size > 1:
                from ir.formats.onnx.compressed import packed_nibbles

                return packed_nibbles(self, name, arr, ir_dtype)
            ir_dtype = "int8" if ir_dtype == "int4" else "uint8"  # one value: a byte either way
        elif ir_dtype in ("uint1", "uint2", "uint3", "uint6"):
            ir_dtype = "uint8"
        self.used.add(name)
        self.init_names.add(name)
        if self.sink is not None and _direct(arr, ir_dtype):
            self.inits.append(self.sink.put_array(arr, ir_dtype, name))
        else:
            self.add_tensor(array_to_tensor(arr, ir_dtype, name))
        return name

    def add_tensor(self, t: TensorProto) -> None:
        """An initializer of this graph; its bytes go straight to the data file when streaming."""
        self.inits.append(self.sink.put_tensor(t) if self.sink is not None else t)

    def const(self, hint: str, arr, ir_dtype: Optional[str] = None) -> str:
        arr = np.asarray(arr)
        return self.initializer(self.fresh(hint), arr, ir_dtype or from_numpy(arr).name)

    def static(self, var: Optional[Var]):
        """var's value when it can be known without inputs (consts and chains of core ops
        over them), else None."""
        return static_value(var, lambda v: self.producer.get(v.name), self.static_memo,
                            admit=_foldable_at_export, unknown=self.static_unknown)

    # -- nodes ------------------------------------------------------------------
    def node(self, op_type: str, inputs, hint: str = "t", outputs=None, n_out: int = 1, **attrs):
        outs = list(outputs) if outputs is not None else [self.fresh(hint) for _ in range(n_out)]
        for o in outs:
            self.used.add(o)
        nd = helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{outs[0]}_{op_type}"))
        nd.attribute.extend(attr_from_ir(k, v) for k, v in attrs.items() if v is not None)
        self.nodes.append(nd)
        return outs[0] if len(outs) == 1 else outs

    def define(self, var: Var, op_type: str, inputs, **attrs) -> str:
        """A node whose (single) output is var."""
        name = self.node(op_type, inputs, outputs=[self.name_of(var)], **attrs)
        self.env[var.name] = name
        return name

    def ints(self, hint: str, values) -> str:
        return self.const(hint, np.asarray(values, np.int64).reshape(-1))

    def fold_to_initializers(self, op):
        """Write op's outputs as initializers (its inputs are all known at build time)."""
        for v in op.outputs:
            val = self.static(v)
            if val is None:
                raise OnnxExportError(f"{op.op_type} {op.name!r}: no ONNX form for this op, "
                                      "and its value depends on the inputs")
            self.env[v.name] = self.initializer(self.name_of(v), val, v.dtype)


# ---- emitters for core ops: (op, writer) ------------------------------------------

def _param(op, key, default=None):
    v = op.get(key)
    return default if v is None or v.val is None else v.val


def _binary(onnx_type):
    return lambda op, w: w.define(op.output, onnx_type, [w.value(op.x), w.value(op.y)])


def _negated(onnx_type):
    """Not(onnx_type(x, y)): not_equal always; greater_equal / less_equal before opset 12, which
    has no GreaterOrEqual / LessOrEqual (as Not(Less) / Not(Greater): the same for every non-NaN)."""
    def emit(op, w):
        inner = w.node(onnx_type, [w.value(op.x), w.value(op.y)], op.output.name + "_" + onnx_type.lower())
        w.define(op.output, "Not", [inner])
    return emit


def _or_equal(onnx_type, negated):
    def emit(op, w):
        if w.opset >= 12:
            return _binary(onnx_type)(op, w)
        if op.x.type.dt.is_float:
            raise OnnxExportError(f"{op.op_type} {op.name!r}: {onnx_type} needs opset 12 (before it, "
                                  f"Not({negated}) would differ on NaN); export with opset=12 or newer")
        return _negated(negated)(op, w)
    return emit


def _unary(onnx_type):
    return lambda op, w: w.define(op.output, onnx_type, [w.value(op.x)])


def _rsqrt(op, w):
    w.define(op.output, "Reciprocal", [w.node("Sqrt", [w.value(op.x)], op.name + "_sqrt")])


def _scalar(w, hint, value, like: Var):
    return w.const(hint, np.array(value, like.type.dt.storage))


def _gelu(op, w):
    mode = str(_param(op, "mode", "EXACT"))
    x = w.value(op.x)
    if w.opset >= 20 and mode != "SIGMOID_APPROXIMATION":
        return w.define(op.output, "Gelu", [x], approximate="tanh" if mode == "TANH_APPROXIMATION" else "none")
    n, s = op.name, lambda hint, val: _scalar(w, f"{n}_{hint}", val, op.x)
    if mode == "SIGMOID_APPROXIMATION":
        sig = w.node("Sigmoid", [w.node("Mul", [x, s("k", 1.702)], n + "_kx")], n + "_sig")
        return w.define(op.output, "Mul", [x, sig])
    if mode == "TANH_APPROXIMATION":
        cube = w.node("Mul", [w.node("Mul", [x, x], n + "_x2"), x], n + "_x3")
        inner = w.node("Add", [x, w.node("Mul", [cube, s("c", 0.044715)], n + "_cx3")], n + "_in")
        t = w.node("Tanh", [w.node("Mul", [inner, s("k", math.sqrt(2 / math.pi))], n + "_kin")], n + "_tanh")
    else:
        t = w.node("Erf", [w.node("Mul", [x, s("k", 1 / math.sqrt(2))], n + "_xs")], n + "_erf")
    half = w.node("Mul", [x, s("half", 0.5)], n + "_half")
    return w.define(op.output, "Mul", [half, w.node("Add", [t, s("one", 1.0)], n + "_1p")])


def _clip(op, w):
    x = w.value(op.x)
    lo = w.const(op.name + "_min", np.asarray(op.alpha.val, op.x.type.dt.storage))
    hi = w.const(op.name + "_max", np.asarray(op.beta.val, op.x.type.dt.storage))
    w.define(op.output, "Clip", [x, lo, hi])


def _cast(op, w):
    w.define(op.output, "Cast", [w.value(op.x)], to=elem_type(op.output.dtype))


def _transpose(op, w):
    # MIL's perm may count from the end (coremltools writes [0, 2, -3, -1]); ONNX's may not
    rank = len(np.asarray(op.perm.val).reshape(-1))
    w.define(op.output, "Transpose", [w.value(op.x)], perm=[int(p) % rank for p in np.asarray(op.perm.val).reshape(-1)])


def _reshape(op, w):
    w.define(op.output, "Reshape", [w.value(op.x), w.ints(op.name + "_shape", op.shape.val)])


def _axes_operand(w, op, axes) -> tuple:
    """(extra inputs, attributes) for an op whose axes became an input at opset 13."""
    if axes is None:
        return [], {}
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    return ([w.ints(op.name + "_axes", axes)], {}) if w.opset >= 13 else ([], {"axes": axes})


def _expand_dims(op, w):
    ins, attrs = _axes_operand(w, op, op.axes.val)
    w.define(op.output, "Unsqueeze", [w.value(op.x)] + ins, **attrs)


def _squeeze(op, w):
    ins, attrs = _axes_operand(w, op, _param(op, "axes"))
    w.define(op.output, "Squeeze", [w.value(op.x)] + ins, **attrs)


def _concat(op, w):
    w.define(op.output, "Concat", [w.value(v) for v in op.values], axis=int(op.axis.val))


def _gather(op, w):
    w.define(op.output, "Gather", [w.value(op.x), w.value(op.indices)], axis=int(_param(op, "axis", 0)))


def _swap_last(w, name, var: Var):
    perm = list(range(var.rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return w.node("Transpose", [w.value(var)], name, perm=perm)


def _linear(op, w):
    x, wt, b = op.x, op.weight, op.bias
    if x.rank == 2:
        return w.define(op.output, "Gemm", [w.value(x), w.value(wt), w.value(b)], transB=1)
    w_t = _swap_last(w, op.name + "_wT", wt)
    if b is None:
        return w.define(op.output, "MatMul", [w.value(x), w_t])
    return w.define(op.output, "Add", [w.node("MatMul", [w.value(x), w_t], op.name + "_mm"), w.value(b)])


def _matmul(op, w):
    xs = [(op.x, bool(_param(op, "transpose_x", False))), (op.y, bool(_param(op, "transpose_y", False)))]
    ins = [_swap_last(w, f"{op.name}_{i}T", v) if t and v.rank >= 2 else w.value(v)
           for i, (v, t) in enumerate(xs)]
    w.define(op.output, "MatMul", ins)


def _pads(op, w, nsp, kind):
    """ONNX padding attributes (pads or auto_pad) for conv / pooling."""
    pad_type = str(_param(op, "pad_type", "valid"))
    if pad_type == "custom":
        pad = [int(p) for p in _param(op, "pad", [0] * 2 * nsp)]
        return {"pads": pad[0::2] + pad[1::2]}
    if pad_type == "valid":
        return {"pads": [0] * 2 * nsp}
    return {"auto_pad": "SAME_UPPER" if pad_type == "same" else "SAME_LOWER"}


def _conv(op, w):
    nsp = op.weight.rank - 2
    attrs = dict(_pads(op, w, nsp, "conv"), group=int(_param(op, "groups", 1)),
                 strides=[int(s) for s in _param(op, "strides", [1] * nsp)],
                 dilations=[int(s) for s in _param(op, "dilations", [1] * nsp)])
    w.define(op.output, "Conv", [w.value(op.x), w.value(op.weight), w.value(op.bias)], **attrs)


def _conv_transpose(op, w):
    nsp = op.weight.rank - 2
    strides = [int(s) for s in _param(op, "strides", [1] * nsp)]
    dil = [int(s) for s in _param(op, "dilations", [1] * nsp)]
    pad_type = str(_param(op, "pad_type", "valid"))
    if pad_type == "custom" and _param(op, "output_shape") is None:
        pads = _pads(op, w, nsp, "conv")["pads"]
    else:  # same / output_shape: the pads that give the declared output size
        ins, outs, k = op.x.shape[2:], op.output.shape[2:], op.weight.shape[2:]
        if not all(isinstance(d, int) for d in ins + outs):
            raise OnnxExportError(f"conv_transpose {op.name!r}: {pad_type} padding needs static spatial dims")
        total = [(n - 1) * s + (kk - 1) * d + 1 - o for n, s, kk, d, o in zip(ins, strides, k, dil, outs)]
        split = [(t // 2, t - t // 2) if pad_type != "same_lower" else (t - t // 2, t // 2) for t in total]
        pads = [b for b, _ in split] + [e for _, e in split]
    w.define(op.output, "ConvTranspose", [w.value(op.x), w.value(op.weight), w.value(op.bias)],
             group=int(_param(op, "groups", 1)), strides=strides, dilations=dil, pads=pads)


def _pool(onnx_type):
    def emit(op, w):
        k = [int(i) for i in op.kernel_sizes.val]
        attrs = dict(_pads(op, w, len(k), "pool"), kernel_shape=k,
                     strides=[int(s) for s in _param(op, "strides", [1] * len(k))])
        if onnx_type == "AveragePool":
            attrs["count_include_pad"] = 0 if bool(_param(op, "exclude_padding_from_average", True)) else 1
        w.define(op.output, onnx_type, [w.value(op.x)], **attrs)
    return emit


def _softmax(op, w):
    axis = int(_param(op, "axis", -1))
    if w.opset < 13 and axis % op.x.rank != op.x.rank - 1:
        # before 13 Softmax flattens everything from `axis` on: only the last axis means the same
        raise OnnxExportError(f"softmax {op.name!r}: axis {axis} has no ONNX form before opset 13; "
                              "export with opset=13 or newer")
    w.define(op.output, "Softmax", [w.value(op.x)], axis=axis)


def _layer_norm(op, w):
    x = op.x
    axes = sorted(int(a) % x.rank for a in np.asarray(_param(op, "axes", [-1])).reshape(-1))
    eps = float(_param(op, "epsilon", 1e-5))
    if w.opset >= 17 and op.gamma is not None and axes == list(range(axes[0], x.rank)):
        return w.define(op.output, "LayerNormalization", [w.value(x), w.value(op.gamma), w.value(op.beta)],
                        axis=axes[0], epsilon=eps)
    n = op.name
    mean = _reduce_node(w, "ReduceMean", w.value(x), axes, n + "_mean")
    d = w.node("Sub", [w.value(x), mean], n + "_d")
    var = _reduce_node(w, "ReduceMean", w.node("Mul", [d, d], n + "_d2"), axes, n + "_var")
    std = w.node("Sqrt", [w.node("Add", [var, _scalar(w, n + "_eps", eps, x)], n + "_ve")], n + "_std")
    steps = [("Div", std)] + [(t, w.value(p)) for t, p in (("Mul", op.gamma), ("Add", op.beta)) if p is not None]
    y = d
    for i, (t, operand) in enumerate(steps):
        if i == len(steps) - 1:
            return w.define(op.output, t, [y, operand])
        y = w.node(t, [y, operand], f"{n}_{t.lower()}")


def _reduce_node(w, onnx_type, x, axes, hint, keep=1, out: Var = None):
    """A reduction over axes (None: all); axes is an input from opset 18 (13 for ReduceSum).
    Defines `out` when given, else returns a temp name."""
    if w.opset >= 18 or (onnx_type == "ReduceSum" and w.opset >= 13):
        ins, attrs = [x] + ([w.ints(hint + "_axes", axes)] if axes is not None else []), {}
    else:
        ins, attrs = [x], {"axes": list(axes) if axes is not None else None}
    if out is not None:
        return w.define(out, onnx_type, ins, keepdims=keep, **attrs)
    return w.node(onnx_type, ins, hint, keepdims=keep, **attrs)


def _batch_norm(op, w):
    c = op.mean.shape[0]
    dt = op.x.type.dt.storage
    gamma = w.value(op.gamma) if op.gamma is not None else w.const(op.name + "_ones", np.ones(c, dt))
    beta = w.value(op.beta) if op.beta is not None else w.const(op.name + "_zeros", np.zeros(c, dt))
    w.define(op.output, "BatchNormalization", [w.value(op.x), gamma, beta, w.value(op.mean), w.value(op.variance)],
             epsilon=float(_param(op, "epsilon", 1e-5)))


def _reduce(onnx_type):
    def emit(op, w):
        axes = _param(op, "axes")
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        keep = int(bool(_param(op, "keep_dims", False)))
        _reduce_node(w, onnx_type, w.value(op.x), axes, op.name + "_r", keep, out=op.output)
    return emit


def _quantize(op, w):
    out = op.output.dtype
    zp = op.zero_point
    zp_name = w.value(zp) if zp is not None else w.const(op.name + "_zp", np.zeros(op.scale.shape, out))
    w.define(op.output, "QuantizeLinear", [w.value(op.input), _scale_value(w, op.scale), zp_name],
             axis=int(_param(op, "axis", 1)) if op.scale.rank == 1 else None)


def _scale_value(w, scale: Var) -> str:
    if scale.dtype == "fp32" or w.opset >= 19:
        return w.value(scale)
    return w.node("Cast", [w.value(scale)], scale.name + "_fp32", to=TensorProto.FLOAT)


def _dequantize(op, w):
    from ir.formats.onnx.compressed import dequantize_linear

    dequantize_linear(w, op.output, w.value(op.input), w.value(op.scale), op.scale.dtype,
                      w.value(op.zero_point), _param(op, "axis", 1) if op.scale.rank == 1 else None)


def _constexpr_cast(op, w):
    w.define(op.output, "Cast", [w.value(op.source_val)], to=elem_type(op.output.dtype))


def _leaky_relu(op, w):
    w.define(op.output, "LeakyRelu", [w.value(op.x)], alpha=float(_param(op, "alpha", 0.01)))


def _sigmoid_hard(op, w):
    w.define(op.output, "HardSigmoid", [w.value(op.x)], alpha=float(op.alpha.val), beta=float(op.beta.val))


def _thresholded_relu(op, w):
    # not ONNX's ThresholdedRelu, which drops x == alpha too: Where(x < alpha, 0, x)
    x, dt = w.value(op.x), op.x.type.dt.storage
    below = w.node("Less", [x, w.const(op.name + "_alpha", np.asarray(op.alpha.val, dt))], op.name + "_below")
    w.define(op.output, "Where", [below, w.const(op.name + "_zero", np.zeros((), dt)), x])


def _silu(op, w):
    w.define(op.output, "Mul", [w.value(op.x), w.node("Sigmoid", [w.value(op.x)], op.name + "_sig")])


def _select(op, w):
    cond = w.value(op.cond)
    if op.cond.dtype != "bool":
        cond = w.node("Cast", [cond], op.name + "_cond", to=TensorProto.BOOL)
    w.define(op.output, "Where", [cond, w.value(op.a), w.value(op.b)])


def _tile(op, w):
    w.define(op.output, "Tile", [w.value(op.x), w.ints(op.name + "_reps", op.reps.val)])


def _argmax(op, w):
    attrs = {"axis": int(_param(op, "axis", -1)), "keepdims": int(bool(_param(op, "keep_dims", False)))}
    if op.output.dtype == "int64":
        return w.define(op.output, "ArgMax", [w.value(op.x)], **attrs)
    idx = w.node("ArgMax", [w.value(op.x)], op.name + "_i64", **attrs)  # ONNX answers int64
    w.define(op.output, "Cast", [idx], to=elem_type(op.output.dtype))


_BIG = np.iinfo(np.int64).max


def _slice_by_index(op, w):
    r = op.x.rank
    flags = lambda key: [bool(f) for f in np.asarray(_param(op, key, [False] * r)).reshape(-1)]  # noqa: E731
    begin, end = [int(b) for b in op.begin.val], [int(e) for e in op.end.val]
    stride = [int(s) for s in _param(op, "stride", [1] * r)]
    bmask, emask, smask = flags("begin_mask"), flags("end_mask"), flags("squeeze_mask")
    starts, ends = [], []
    for i in range(r):
        if smask[i]:
            b = begin[i]
            starts.append(b), ends.append(b + 1 if b != -1 else _BIG)
            stride[i] = 1
            continue
        starts.append((0 if stride[i] > 0 else _BIG) if bmask[i] else begin[i])
        ends.append((_BIG if stride[i] > 0 else -_BIG) if emask[i] else end[i])
    n = op.name
    slice_inputs = [w.value(op.x), w.ints(n + "_starts", starts), w.ints(n + "_ends", ends),
                    w.ints(n + "_axes", list(range(r))), w.ints(n + "_steps", stride)]
    y = w.node("Slice", slice_inputs, n + "_slice") if any(smask) else None
    squeeze = [i for i in range(r) if smask[i]]
    if squeeze:
        return w.define(op.output, "Squeeze", [y, w.ints(n + "_sq", squeeze)])
    w.define(op.output, "Slice", slice_inputs)


def _compressed(name):
    def emit(op, w):
        from ir.formats.onnx import compressed

        getattr(compressed, name)(op, w)
    return emit


EMITTERS = {
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "real_div": _binary("Div"),
    "maximum": _binary("Max"), "minimum": _binary("Min"), "pow": _binary("Pow"),
    "equal": _binary("Equal"), "not_equal": _negated("Equal"), "greater": _binary("Greater"),
    "greater_equal": _or_equal("GreaterOrEqual", "Less"), "less": _binary("Less"),
    "less_equal": _or_equal("LessOrEqual", "Greater"),
    "relu": _unary("Relu"), "tanh": _unary("Tanh"), "sigmoid": _unary("Sigmoid"), "exp": _unary("Exp"),
    "log": _unary("Log"), "sqrt": _unary("Sqrt"), "abs": _unary("Abs"), "neg": _unary("Neg"),
    "erf": _unary("Erf"), "floor": _unary("Floor"), "ceil": _unary("Ceil"), "sign": _unary("Sign"),
    "rsqrt": _rsqrt, "gelu": _gelu, "clip": _clip, "cast": _cast,
    "transpose": _transpose, "reshape": _reshape, "expand_dims": _expand_dims, "squeeze": _squeeze,
    "concat": _concat, "gather": _gather, "linear": _linear, "matmul": _matmul,
    "conv": _conv, "conv_transpose": _conv_transpose,
    "max_pool": _pool("MaxPool"), "avg_pool": _pool("AveragePool"),
    "softmax": _softmax, "layer_norm": _layer_norm, "batch_norm": _batch_norm,
    "reduce_mean": _reduce("ReduceMean"), "reduce_sum": _reduce("ReduceSum"),
    "reduce_max": _reduce("ReduceMax"), "reduce_min": _reduce("ReduceMin"),
    "leaky_relu": _leaky_relu, "silu": _silu, "sigmoid_hard": _sigmoid_hard, "thresholded_relu": _thresholded_relu, "select": _select, "tile": _tile,
    "sin": _unary("Sin"), "cos": _unary("Cos"), "reduce_prod": _reduce("ReduceProd"),
    "reduce_argmax": _argmax, "slice_by_index": _slice_by_index,
    "quantize": _quantize, "dequantize": _dequantize, "constexpr_cast": _constexpr_cast,
    "constexpr_affine_dequantize": _compressed("affine_dequantize"),
    "constexpr_blockwise_shift_scale": _compressed("blockwise_shift_scale"),
    "constexpr_lut_to_dense": _compressed("lut_to_dense"),
    "constexpr_sparse_to_dense": _compressed("sparse_to_dense"),
    "constexpr_lut_to_sparse": _compressed("lut_to_sparse"),
    "constexpr_sparse_blockwise_shift_scale": _compressed("sparse_blockwise_shift_scale"),
}


def _foreign(op, w):
    if not op.op_type.startswith("onnx."):
        raise OnnxExportError(f"{op.op_type} {op.name!r}: a foreign op of another format has no ONNX form")
    ins = [w.value(op.inputs[s]) if s else "" for s in slot_names(op)]
    graphs = [helper.make_attribute(attr, subgraph(block, w, f"{op.name}_{attr}"))
              for attr, block in zip(op.attrs.get(BLOCK_ATTRS, ()), op.blocks)]
    outs = [w.name_of(v) for v in op.outputs]
    nd = helper.make_node(op.op_type.split(".", 1)[1], ins, outs, name=w.fresh(op.name),
                          domain=op.attrs.get("_domain", ""))
    nd.attribute.extend(attr_from_ir(k, v) for k, v in sorted(onnx_attrs(op.attrs).items()))
    nd.attribute.extend(graphs)
    if _schema_changed(op, w.opset):
        return _write_upgraded(nd, op, w)
    w.nodes.append(nd)
    for v, o in zip(op.outputs, outs):
        w.env[v.name] = o


def _since(op_type: str, opset: int) -> Optional[int]:
    try:
        return onnx.defs.get_schema(op_type, opset).since_version
    except Exception:  # not in the default domain's table (or removed by then)
        return None


def _schema_changed(op, opset: int) -> bool:
    """Whether a default-domain foreign op means something else (or nothing) at `opset`
    than at the opset it came from."""
    if op.attrs.get("_domain") or op.blocks:
        return False
    then = int(op.attrs.get("_opset", opset))
    t = op.op_type[5:]
    return then != opset and _since(t, then) != _since(t, opset)


def _write_upgraded(nd, op, w):
    """Write node `nd` (an op from an older opset) as onnx's version converter rewrites it
    for the exported opset (Upsample -> Resize, attributes that became inputs, ...)."""
    from onnx import version_converter

    ins, inits = [], []
    for s, name in zip(slot_names(op), nd.input):
        if not s:
            continue
        v = op.inputs[s]
        static = w.static(v)
        if static is not None and static.size <= 4096:  # the converter reads constant inputs
            inits.append(array_to_tensor(static, v.dtype, name))
        ins.append(helper.make_value_info(name, type_proto(v.type)))
    outs = [helper.make_value_info(o, type_proto(v.type)) for o, v in zip(nd.output, op.outputs) if o]
    one = helper.make_model(helper.make_graph([nd], "one", ins, outs, inits),
                            opset_imports=[helper.make_opsetid("", int(op.attrs["_opset"]))])
    try:
        converted = version_converter.convert_version(one, w.opset)
    except Exception as e:
        raise OnnxExportError(f"{op.op_type} {op.name!r} (opset {op.attrs['_opset']}): no form at opset "
                              f"{w.opset} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    keep = set(nd.input) | set(nd.output)
    known = {t.name for t in inits}
    renames = {}
    for t in converted.graph.initializer:
        if t.name not in known:
            renames[t.name] = w.fresh(f"{op.name}_{t.name}")
            t.name = renames[t.name]
            w.add_tensor(t)
            w.init_names.add(t.name)
    for n in converted.graph.node:
        for i, name in enumerate(n.output):
            if name and name not in keep:
                renames.setdefault(name, w.fresh(f"{op.name}_{name}"))
                n.output[i] = renames[name]
        for i, name in enumerate(n.input):
            n.input[i] = renames.get(name, name)
        n.name = w.fresh(n.name or f"{op.name}_{n.op_type}")
        w.nodes.append(n)
    for v, o in zip(op.outputs, nd.output):
        w.env[v.name] = o


def subgraph(block, w, name: str):
    """A nested block as an ONNX GraphProto; it reads its enclosing graphs' values by name."""
    child = w.child(block)
    inputs = []
    for v in block.inputs:
        child.env[v.name] = child.name_of(v)
        inputs.append(_value_info(child.env[v.name], v))
    for op in block.ops:
        _emit(op, child)
    outputs, returned = [], set()
    for v in block.outputs:
        name = child.value(v)
        if v.name not in child.producer or name in returned:
            # onnxruntime wants a subgraph's outputs made inside it, once each
            name = child.node("Identity", [name], v.name + "_out")
        returned.add(name)
        outputs.append(_value_info(name, v))
    return helper.make_graph(child.nodes, name, inputs, outputs, child.inits)


def _all_names(block) -> set:
    names = {v.name for v in block.inputs}
    for op in block.walk():
        names.update(v.name for v in op.outputs)
        for b in op.blocks:
            names.update(v.name for v in b.inputs)
    return names


def _emit(op, w):
    if op.op_type == "const":
        return  # written when something reads it
    if is_foreign(op.op_type):
        return _foreign(op, w)
    emitter = EMITTERS.get(op.op_type)
    if emitter is None:
        return w.fold_to_initializers(op)
    first = len(w.nodes)
    emitter(op, w)
    if is_constexpr(op):
        _record(op, w, w.nodes[first:])


# ---- the import record ---------------------------------------------------------------
# A compressed weight's decode nodes say nothing of the constexpr op they came from, so
# the model carries a record of it (metadata RECORD_KEY, JSON): per op, its type, the
# nodes that decode it, the ONNX values it defines, and where each input lies (an
# initializer, maybe bit-packed; another recorded op's output; a small inline value).
# import_onnx rebuilds the constexpr ops from it when the graph still matches.

from ir.formats.onnx.records import RECORD_KEY  # noqa: E402  (read back by the importer)

INLINE_LIMIT = 64  # elements: small parameters (axis, shape) travel in the record itself


def _source(var: Var, w) -> Optional[dict]:
    where = w.record_of.get(var.name)
    if where is not None:
        src = {"op": where[0], "output": where[1]}
    elif var.name in w.sources:
        src = dict(w.sources[var.name])
    elif var.val is not None and var.val.size <= INLINE_LIMIT and var.type.dt.kind != "string":
        src = {"value": np.asarray(var.val).tolist()}
    elif var.name in w.env:
        src = {"onnx": w.env[var.name]}
    else:
        return None
    src.update(dtype=var.dtype, shape=[d if isinstance(d, int) else str(d) for d in var.shape])
    return src


def _record(op, w, nodes) -> None:
    inputs = {}
    for slot, var in op.inputs.items():
        src = _source(var, w) if isinstance(var, Var) else None
        if src is None:
            return  # not describable: the decode nodes stay as they are on import
        inputs[slot] = src
    index = len(w.records)
    w.records.append({"op": op.op_type, "name": op.name, "nodes": [nd.name for nd in nodes],
                      "outputs": [w.env.get(v.name) for v in op.outputs], "inputs": inputs})
    for i, v in enumerate(op.outputs):
        w.record_of[v.name] = (index, i)


# ---- the model --------------------------------------------------------------------

def type_proto(t):
    """The ONNX TypeProto of an IR type (tensors of any rank, sequences, maps, optionals)."""
    if t.kind == "sequence":
        return helper.make_sequence_type_proto(type_proto(t.elem))
    if t.kind == "optional":
        return helper.make_optional_type_proto(type_proto(t.elem))
    if t.kind == "map":
        return helper.make_map_type_proto(elem_type(t.key), type_proto(t.value))
    dt = t.dtype if t.dtype not in ("uint1", "uint2", "uint3", "uint6") else "uint8"
    dims = None if t.shape is None else [None if d == "?" else d for d in t.shape]
    return helper.make_tensor_type_proto(elem_type(dt), dims)


def _value_info(name: str, var: Var):
    return helper.make_value_info(name, type_proto(var.type))


def _io_info(name: str, var: Var, declared: dict):
    """A graph input / output as the source model declared it, when that still fits."""
    ours = _value_info(name, var)
    theirs = declared.get(name)
    return theirs if theirs is not None and model_meta.same_kind(theirs, ours) else ours


def _needs_13(fn) -> bool:
    """Whether a function holds a per-axis quantize, whose QuantizeLinear needs opset 13
    (compressed weights and dequantization are spelled out by hand before 13)."""
    return any(op.op_type == "quantize" and op.get("scale") is not None and op.scale.rank == 1
               for _, op in _walk(fn))


def _walk(fn):
    for op in fn.block.walk():
        yield fn, op


def choose_opset(program: Program, opset: Optional[int], fn) -> int:
    """The opset of the exported model.

    The rule: a program imported from ONNX keeps its model's opset, whatever was
    compressed (every compressed form has a spelling at every opset from OLDEST_OPSET:
    int4 is packed two per byte by hand below COMPRESSED_OPSET, see
    compressed.packed_nibbles, per-axis scales are Cast / Sub / Mul before 13), so the
    user's runtime keeps loading it; only a per-axis run-time quantize raises a model
    older than MIN_OPSET to that; models older than OLDEST_OPSET are raised to it. A program
    from elsewhere gets COMPRESSED_OPSET, where int4 and per-block DequantizeLinear
    are native. `opset=` is the opt-in to another opset (e.g. 21 to upgrade a model
    for INT4 initializers); foreign ops whose schema changed on the way are written
    through onnx's version converter (_write_upgraded), or refused in one line."""
    floor = MIN_OPSET if _needs_13(fn) else OLDEST_OPSET
    if opset is not None:
        if opset < floor:
            raise OnnxExportError(f"opset {opset} is too old: this program needs {floor} or newer")
        return int(opset)
    return max(int(program.attrs.get("onnx_opset", COMPRESSED_OPSET)), floor)


def _io_names(program, fn) -> dict:
    """IR name -> the ONNX name the source model gave that value (inputs, outputs,
    initializers and node outputs the importer had to rename), for values still there."""
    pairs = dict(program.attrs.get("onnx_names", ()))
    pairs.update(program.attrs.get("onnx_io_names", ()))
    present = _all_names(fn.block)
    taken = set(present) - set(pairs)  # an IR name kept as it is stays its own ONNX name
    return {k: v for k, v in pairs.items() if k in present and v not in taken}


def to_onnx_model(program: Program, opset: Optional[int] = None, function: str = "main",
                  sink: Optional["DataSink"] = None) -> onnx.ModelProto:
    """The ModelProto for one function of a program (nothing written). With a `sink`, the
    main graph's initializers are written to its data file as they are made and the
    model only refers to them (external data), so no tensor is copied into the proto."""
    if function not in program.functions:
        raise OnnxExportError(f"no function {function!r} (have {sorted(program.functions)})")
    fn = program.functions[function]
    w = Writer(fn, choose_opset(program, opset, fn), _io_names(program, fn))
    w.sink = sink
    declared = model_meta.declared_io(program.attrs.get(MODEL_META))
    inputs = []
    for v in fn.inputs:
        w.env[v.name] = w.name_of(v)
        inputs.append(_io_info(w.env[v.name], v, declared))
    for op in fn.ops:
        if op.blocks and not is_foreign(op.op_type):
            raise OnnxExportError(f"{op.op_type} {op.name!r}: this op's nested blocks have no ONNX form")
        _emit(op, w)
    outputs = [_io_info(w.value(v), v, declared) for v in fn.outputs]
    inputs += _overridable(program, fn, w)
    _unread_initializers(program, fn, w)
    graph = helper.make_graph(w.nodes, function, inputs, outputs, w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", w.opset)]
                              + _extra_domains(fn), producer_name="weightpress")
    model.ir_version = min(model.ir_version, 10)  # onnxruntime reads IR version 10 and older
    from ir.formats.onnx.nbits import fused_outputs, records_for

    records = w.records + records_for(fn, w.env, w.nodes, len(w.records))  # MatMulNBits readers, if any
    if records:
        helper.set_model_props(model, {RECORD_KEY: json.dumps(records, separators=(",", ":"))})
    model_meta.restore(model, program.attrs.get(MODEL_META))
    _node_notes(model, program)
    # MatMulNBits outputs typed, or onnx's shape inference stops at them on import
    known = {vi.name for vi in model.graph.value_info}
    model.graph.value_info.extend(_value_info(name, var) for name, var in fused_outputs(fn, w.env) if name not in known)
    return model


def _unread_initializers(program, fn, w) -> None:
    """The source model's initializers that nothing reads still go into the file; a stage
    that wants one gone removes its const (dead_code_elimination)."""
    wanted = set(program.attrs.get("onnx_initializers", ()))
    for op in fn.ops:
        if op.op_type == "const" and op.outputs[0].name in wanted and op.outputs[0].name not in w.env:
            w.value(op.outputs[0])


def _node_notes(model, program) -> None:
    """Node-level doc strings and metadata_props back on the node that defines the same
    ONNX value (the first output of the node they came with)."""
    notes = {out: (doc, props) for out, doc, props in program.attrs.get("onnx_node_notes", ()) if out}
    if not notes:
        return
    for graph in _graphs(model.graph):
        for n in graph.node:
            note = notes.get(n.output[0] if n.output else "")
            if note is None:
                continue
            doc, props = note
            if doc and not n.doc_string:
                n.doc_string = doc
            for key, value in props:
                entry = n.metadata_props.add()
                entry.key, entry.value = key, value


def _graphs(g):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)


def _overridable(program, fn, w) -> list:
    """Graph inputs for the initializers the source model also listed as inputs (defaults a
    caller may override), as long as they are still plain constants written to the file."""
    extra = []
    names = {w.io_names.get(v.name, v.name): v for v in _const_outputs(fn)}
    for onnx_name in program.attrs.get("onnx_overridable", ()):
        v = names.get(onnx_name)
        if v is not None and w.env.get(v.name) == onnx_name and onnx_name in w.init_names:
            extra.append(_value_info(onnx_name, v))
    return extra


def _const_outputs(fn):
    return [op.outputs[0] for op in fn.ops if op.op_type == "const"]


def _extra_domains(fn) -> list:
    doms = {}
    for op in fn.ops:
        d = op.attrs.get("_domain") if op.op_type.startswith("onnx.") else None
        if d:
            doms[d] = max(doms.get(d, 1), int(op.attrs.get("_opset", 1)))
    return [helper.make_opsetid(d, v) for d, v in sorted(doms.items())]


EXTERNAL_THRESHOLD = 1 << 30  # above this many weight bytes a single protobuf gets risky (2 GiB cap)
# above this many bytes of constants the exporter streams them to the data file as it goes
# (and puts them back inline at the end when they come to EXTERNAL_THRESHOLD or less)
STREAM_THRESHOLD = 64 << 20
ONNX_SIZE_THRESHOLD = 1024  # onnx's own: a tensor whose raw data (sys.getsizeof) is this or more goes external
_DIRECT = {np.dtype(d) for d in ("<f4", "<f2", "<f8", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1")}


def _direct(arr, ir_dtype: str) -> bool:
    """An array whose ONNX raw data is its own bytes (so the sink writes it without a copy)."""
    return ir_dtype not in ("int4", "uint4", "bf16") and np.asarray(arr).dtype in _DIRECT \
        and lookup_dtype(ir_dtype).storage == np.asarray(arr).dtype


def _raw_size(nbytes: int) -> int:
    return sys.getsizeof(b"") + nbytes  # what onnx's threshold measures


class DataSink:
    """The external data file, written tensor by tensor in onnx's own layout (one file,
    tensors back to back in initializer order, no padding; the same location / offset /
    length entries), so a streamed export is byte for byte the in-memory one. At most one
    tensor's bytes are in memory at a time; a file-backed weight (ir.lazy) is copied from
    its file in chunks."""

    def __init__(self, path: str, location: str):
        self.path, self.location = path, location
        self.file = open(path, "wb")
        self.streamed = 0  # how many tensors point into the file

    @property
    def size(self) -> int:
        return self.file.tell() if not self.file.closed else os.path.getsize(self.path)

    def _refer(self, t: TensorProto, offset: int) -> TensorProto:
        del t.external_data[:]
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", offset), ("length", self.file.tell() - offset)):
            entry = t.external_data.add()
            entry.key, entry.value = k, str(v)
        self.streamed += 1
        return t

    def put_array(self, arr, ir_dtype: str, name: str) -> TensorProto:
        arr = np.asarray(arr)
        if _raw_size(arr.nbytes) < ONNX_SIZE_THRESHOLD:
            return array_to_tensor(lazy.materialize(arr), ir_dtype, name)
        t = TensorProto(name=name, data_type=elem_type(ir_dtype), dims=list(arr.shape))
        offset = self.file.tell()
        if lazy.region_of(arr) is not None:
            lazy.copy_to(arr, self.file)
            lazy.release(arr)
        elif lazy.producer_of(arr) is not None:  # made slab by slab as it is written
            for data in lazy.produced_bytes(arr):
                self.file.write(data)
        else:
            self.file.write(memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B"))
        return self._refer(t, offset)

    def put_tensor(self, t: TensorProto) -> TensorProto:
        if not t.HasField("raw_data") or _raw_size(len(t.raw_data)) < ONNX_SIZE_THRESHOLD:
            return t
        offset = self.file.tell()
        self.file.write(t.raw_data)
        t.ClearField("raw_data")
        return self._refer(t, offset)

    def inline(self, model) -> None:
        """Every streamed tensor's bytes back into the model's protos (the model is small
        after all; make_graph copied the protos, so they are found in the model)."""
        from onnx.external_data_helper import _get_initializer_tensors

        self.file.flush()
        with open(self.path, "rb") as f:
            for t in _get_initializer_tensors(model):
                if t.data_location != TensorProto.EXTERNAL:
                    continue
                info = {e.key: e.value for e in t.external_data}
                if info.get("location") != self.location:
                    continue
                f.seek(int(info["offset"]))
                t.raw_data = f.read(int(info["length"]))
                del t.external_data[:]
                t.ClearField("data_location")
        self.streamed = 0

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


def _const_bytes(fn) -> int:
    """What the function's constants take in memory: the exporter's cue to stream (no data read)."""
    return sum(v.val.nbytes for op in fn.block.walk() if op.op_type == "const"
               for v in op.outputs if isinstance(v.val, np.ndarray))


def _file_backed(fn) -> bool:
    """Whether any constant of the function is a region of a file (ir.lazy): a model imported
    from external data, or results a run spilled. Such a model is written with external data
    whatever its size, as it came: putting it back inline costs two copies of every weight."""
    return any(lazy.region_of(v.val) is not None for op in fn.block.walk() if op.op_type == "const"
               for v in op.outputs)


def _rest_external(model, sink: DataSink) -> None:
    """Initializers of subgraphs (the main graph's are streamed already) go external the way
    onnx's writer does it, after the main graph's, in onnx's order."""
    from onnx.external_data_helper import _get_initializer_tensors

    for t in _get_initializer_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            sink.put_tensor(t)


def export_onnx(program: Program, path, opset: Optional[int] = None, external_data=None,
                function: str = "main", matmul_nbits: bool = False) -> str:
    """Write `program` as an ONNX model at `path`, atomically; returns the path.

    opset: None = the model's own (see choose_opset). external_data: None = only
    when the weights are large; True = always (into `<file>.data` beside it); a
    string = that data file name. matmul_nbits: write 4-bit per-block weights of
    MatMul / linear as com.microsoft MatMulNBits (onnxruntime's fused kernels; see
    nbits.py for which weights qualify); import gives the original ops back.
    external_data None and a program whose weights are file-backed (ir.lazy: imported from
    external data, or spilled by a run): external data, as the model came.

    A program with many constant bytes (STREAM_THRESHOLD) is written tensor by tensor into
    the data file as the graph is built (DataSink): no proto ever holds the weights, so
    models past protobuf's 2 GB go out, and memory holds one tensor's bytes at a time; the
    files are byte for byte what the in-memory path writes."""
    if matmul_nbits:
        from ir.formats.onnx.nbits import rewrite

        program = rewrite(program, function)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    location = external_data if isinstance(external_data, str) else os.path.basename(path) + ".data"
    fn = program.functions.get(function)
    if external_data is None and fn is not None and _file_backed(fn):
        external_data = True  # weights that came in a file (or were spilled to one) go out in one
    stream = external_data is not False and fn is not None and \
        (bool(external_data) or _const_bytes(fn) > STREAM_THRESHOLD)
    with scratch(directory) as tmp:  # the data file goes first, then the model that reads it
        tmp_model, tmp_data = os.path.join(tmp, os.path.basename(path)), os.path.join(tmp, location)
        if stream:
            _write_streamed(program, opset, function, tmp_model, tmp_data, location, external_data)
        else:
            _write_in_memory(program, opset, function, tmp_model, location, external_data)
        if os.path.exists(tmp_data):
            replace(tmp_data, os.path.join(directory, location))
        replace(tmp_model, path)
    return path


def _write_streamed(program, opset, function, tmp_model, tmp_data, location, external_data) -> None:
    sink = DataSink(tmp_data, location)
    try:
        model = to_onnx_model(program, opset, function, sink=sink)
        size = sink.size + sum(len(t.raw_data) for t in model.graph.initializer if t.HasField("raw_data"))
        if not external_data and size <= EXTERNAL_THRESHOLD:
            sink.inline(model)
        else:
            _rest_external(model, sink)
    finally:
        sink.close()
    if not sink.streamed or sink.size == 0:
        os.remove(tmp_data)
    onnx.save_model(model, tmp_model)


def _write_in_memory(program, opset, function, tmp_model, location, external_data) -> None:
    model = to_onnx_model(program, opset, function)
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if bool(external_data) or (external_data is None and size > EXTERNAL_THRESHOLD):
        onnx.save_model(model, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=ONNX_SIZE_THRESHOLD)
    else:
        onnx.save_model(model, tmp_model)
