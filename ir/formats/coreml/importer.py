"""Core ML mlprogram -> IR, read straight from the model file (no coremltools).

Every MIL function becomes a Function whose opset is its deployment target
("iOS17"). A MIL op with a core op of the same name (and inputs the core op
takes, and the output types the file declares) becomes that core op; any
other becomes a foreign ``mil.<type>`` op with the declared output types and
its MIL attributes (each a serialized MIL Value), which the exporter writes
back as they were. Nested blocks (``cond``, ``while_loop``, or those of a
foreign op) are imported as the op's blocks; a block reads the values of its
enclosing blocks directly, as in MIL.

Weights: a const's value is read from the model file or the weight file
(weight.bin, read once; arrays are read-only views of it). Before iOS18 a
constexpr op takes its parameters as MIL attributes: they become const inputs
named ``<op>_<param>``, and the packed iOS16 forms are unpacked (LUT indices
to uint<nbits>, sparse masks to uint1), since the IR keeps sub-byte data
unpacked.

What the file carries besides the program (the model description with its
inputs, outputs and metadata, the program's attributes, every field this
reader does not know) is kept in ``Program.attrs[MODEL_SHELL]`` as the
serialized model without its functions, for the exporter to write back.
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
from pyrsistent import pmap

from ir.construct import const_op, infer_types
from ir.core import Block, Function, Op, Program, TensorType, Var
from ir.formats.coreml import targets
from ir.formats.coreml.values import MILTypeError, ir_type, read_value
from ir.ops import REGISTRY, OpError
from ir.packing import unpack

MODEL_SHELL = "coreml_model"  # Program.attrs: the model file without its MIL functions (bytes)
SYMBOLS_KEY = "weightpress.input_shapes"  # user metadata: the inputs' shapes with their dim names
MIL_ATTR = "mil:"  # prefix of a foreign op's attrs that hold its MIL attributes


class CoreMLFormatError(ValueError):
    """A file or model that cannot be read as a Core ML mlprogram; names it and says why."""


# ---- scopes and names ----------------------------------------------------------------------

class _Scope:
    """MIL value names visible in a block (its own and its enclosing blocks')."""

    def __init__(self, parent: Optional["_Scope"] = None):
        self.parent, self.env = parent, {}

    def lookup(self, name: str) -> Var:
        scope = self
        while scope is not None:
            v = scope.env.get(name)
            if v is not None:
                return v
            scope = scope.parent
        raise CoreMLFormatError(f"value {name!r} is used before it is defined")


class _Names:
    """IR names are unique in a function, MIL's only in a block (while_loop's two blocks
    often declare the same input names): a taken name gets a suffix. Op names and value
    names are two namespaces (an op and its output usually share a name); a const's op and
    value share one name, fresh in both."""

    def __init__(self):
        self.values: set = set()
        self.ops: set = set()

    @staticmethod
    def _fresh(hint: str, *spaces) -> str:
        name, i = hint, 1
        while any(name in s for s in spaces):
            name, i = f"{hint}_{i}", i + 1
        for s in spaces:
            s.add(name)
        return name

    def value(self, hint: str) -> str:
        return self._fresh(hint, self.values)

    def op(self, hint: str) -> str:
        return self._fresh(hint, self.ops)

    def const(self, hint: str) -> str:
        return self._fresh(hint, self.values, self.ops)


# ---- ops -----------------------------------------------------------------------------------

def _string_attr(op, key: str) -> Optional[str]:
    v = op.attributes.get(key)
    if v is None:
        return None
    return v.immediateValue.tensor.strings.values[0]


def _lut_flat_indices(value, dt, params):
    """iOS16 LUT indices come packed into uint8: unpacked to uint<nbits>."""
    nbits = int(np.log2(params["lut"][0].shape[0]))
    if nbits >= 8:
        return value, dt
    count = int(np.prod(params["shape"][0]))
    return unpack(np.asarray(value, np.uint8).tobytes(), f"uint{nbits}", (count,)), f"uint{nbits}"


def _sparse_flat_mask(value, dt, params):
    """iOS16 sparse masks come packed into uint8, one bit per element: unpacked to uint1."""
    count = int(np.prod(params["shape"][0]))
    return unpack(np.asarray(value, np.uint8).tobytes(), "uint1", (count,)), "uint1"


# (op type, parameter) -> how the iOS16 flat form's packed value becomes the IR's unpacked one
_UNPACK = {("constexpr_lut_to_dense", "indices"): _lut_flat_indices,
           ("constexpr_sparse_to_dense", "mask"): _sparse_flat_mask}


def _same_types(inferred, declared) -> bool:
    """Whether the core op's inferred types say what the file declares (unknown dims match any)."""
    if inferred is None or len(inferred) != len(declared):
        return False
    for a, b in zip(inferred, declared):
        if not isinstance(a, TensorType) or not isinstance(b, TensorType):
            if a != b:
                return False
            continue
        if a.dtype != b.dtype or a.shape is None or len(a.shape) != len(b.shape):
            return False
        if any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a.shape, b.shape)):
            return False
    return True


class _Importer:
    def __init__(self, blobs, opset_version: int):
        self.blobs = blobs
        self.params_in_attrs = opset_version < targets.target("iOS18").spec_version
        self.names = _Names()

    # values
    def const(self, ops: list, hint: str, value, dt) -> Var:
        op = const_op(self.names.const(hint), value, dt)
        ops.append(op)
        return op.outputs[0]

    def define(self, scope: _Scope, mil_name: str, t) -> Var:
        v = Var(self.names.value(mil_name), t)
        scope.env[mil_name] = v
        return v

    def argument(self, arg, scope, ops, hint) -> object:
        out = []
        for i, b in enumerate(arg.arguments):
            if b.WhichOneof("binding") == "name":
                out.append(scope.lookup(b.name))
            else:  # a value written inline
                value, dt = read_value(b.value, self.blobs)
                out.append(self.const(ops, hint if len(arg.arguments) == 1 else f"{hint}_{i}", value, dt))
        return out

    # blocks and ops
    def block(self, pblock, scope: _Scope, inputs=()) -> Block:
        ops: list = []
        for pop in pblock.operations:
            self.op(pop, scope, ops)
        outputs = [scope.lookup(n) for n in pblock.outputs]
        return Block.make(inputs, ops, outputs)

    def op(self, pop, scope: _Scope, ops: list) -> None:
        name = _string_attr(pop, "name") or (pop.outputs[0].name if pop.outputs else pop.type)
        if pop.type == "const":
            value, dt = read_value(pop.attributes["val"], self.blobs)
            out = pop.outputs[0].name
            scope.env[out] = self.const(ops, out, value, dt)
            return
        # protobuf maps iterate in an order that changes from process to process: sorted, the
        # ops made for inline values come in one order (the program's digest depends on it)
        ins = {k: self.argument(pop.inputs[k], scope, ops, f"{name}_{k}") for k in sorted(pop.inputs)}
        extra = {k: pop.attributes[k] for k in sorted(pop.attributes) if k != "name"}
        if self.params_in_attrs and pop.type.startswith("constexpr_"):
            ins.update(self.attribute_params(pop, name, extra, ops))
            extra = {}
        blocks = [self.nested(pop, b, scope) for b in pop.blocks]
        specs = REGISTRY[pop.type].specs if pop.type in REGISTRY else {}
        ins = {k: v[0] if len(v) == 1 and not (k in specs and specs[k].variadic) else tuple(v)
               for k, v in ins.items()}
        declared = [ir_type(o.type) for o in pop.outputs]
        op_type, types = pop.type, None
        if op_type in REGISTRY and not extra:
            core_ins = _without_mil_defaults(op_type, ins)
            try:
                types = infer_types(op_type, name, core_ins)
            except OpError:
                types = None
            if types is None and blocks and op_type == "cond":
                types = [v.type for v in blocks[0].outputs]
            if not _same_types(types, declared):
                types = None
            if types is not None:  # a foreign op keeps every input the file gave it
                ins = core_ins
        attrs = {}
        if types is None:  # carried as it is, with the types the file declares
            op_type, types = f"mil.{pop.type}", declared
            attrs = {MIL_ATTR + k: v.SerializeToString(deterministic=True) for k, v in extra.items()}
        outs = tuple(self.define(scope, o.name, t) for o, t in zip(pop.outputs, types))
        ops.append(Op.make(op_type, self.names.op(name), ins, outs, attrs, blocks))

    def attribute_params(self, pop, name, attrs, ops) -> dict:
        params = {k: read_value(v, self.blobs) for k, v in attrs.items()}
        out = {}
        for k, (value, dt) in params.items():
            adapt = _UNPACK.get((pop.type, k))
            if adapt is not None and "shape" in params:
                value, dt = adapt(value, dt, params)
            out[k] = [self.const(ops, f"{name}_{k}", value, dt)]
        return out

    def nested(self, pop, pblock, scope) -> Block:
        inner = _Scope(scope)
        inputs = [self.define(inner, i.name, ir_type(i.type)) for i in pblock.inputs]
        return self.block(pblock, inner, inputs)


# ---- functions and the model ---------------------------------------------------------------

# MIL inputs a core op does not declare, which make the MIL op the core one when they hold these
# values (MIL's defaults): coremltools writes gather(..., batch_dims=0, validate_indices=False) for
# every embedding lookup and pools with ceil_mode=False, and without them the op imports as the
# core one (interpreted, calibrated) instead of a foreign mil.<op>. The exporter writes the core op,
# which MIL reads with the same defaults.
_MIL_DEFAULTS = {"gather": {"batch_dims": 0, "validate_indices": False},
                 "max_pool": {"ceil_mode": False}, "avg_pool": {"ceil_mode": False}}


def _without_mil_defaults(op_type: str, ins: dict) -> dict:
    defaults = _MIL_DEFAULTS.get(op_type)
    if not defaults:
        return ins
    kept = dict(ins)
    for k, want in defaults.items():
        v = kept.get(k)
        if isinstance(v, Var) and v.val is not None and np.asarray(v.val).size == 1 \
                and np.asarray(v.val).reshape(-1)[0] == want:
            del kept[k]
    return kept


def _recorded_dims(recorded: dict, fname: str, iname: str, rank: int):
    names = recorded.get(fname, {}).get(iname) if isinstance(recorded, dict) else None
    if isinstance(names, list) and len(names) == rank:
        return lambda i: names[i] if isinstance(names[i], str) else "?"
    return lambda i: "?"


def _function(fname: str, pfn, blobs, recorded: dict) -> Function:
    target = targets.of_mil_opset(pfn.opset)
    if pfn.opset not in pfn.block_specializations:
        raise CoreMLFormatError(f"function {fname!r} has no block for its opset {pfn.opset}")
    imp = _Importer(blobs, target.spec_version)
    scope = _Scope()
    inputs = []
    for i in pfn.inputs:
        rank = len(i.type.tensorType.dimensions) if i.type.WhichOneof("type") == "tensorType" else 0
        t = ir_type(i.type, _recorded_dims(recorded, fname, i.name, rank))
        inputs.append(imp.define(scope, i.name, t))
    block = imp.block(pfn.block_specializations[pfn.opset], scope, inputs)
    return Function(fname, block, target.name)


def _shell(model) -> bytes:
    """The model without its functions' bodies: what the exporter fills in again."""
    shell = type(model)()
    shell.CopyFrom(model)
    shell.mlProgram.ClearField("functions")
    return shell.SerializeToString(deterministic=True)


def program_from_model(model, blobs, label: str) -> Program:
    """The Program of a parsed Model message; `blobs(file_name)` reads the weight file."""
    if not model.HasField("mlProgram"):
        raise CoreMLFormatError(f"{label}: not an mlprogram (neural network and other model kinds are "
                                "not supported)")
    try:
        recorded = json.loads(model.description.metadata.userDefined.get(SYMBOLS_KEY, "{}") or "{}")
    except ValueError:
        recorded = {}
    try:
        fns = [_function(n, f, blobs, recorded) for n, f in sorted(model.mlProgram.functions.items())]
    except (CoreMLFormatError, MILTypeError, targets.TargetError, OpError, ValueError) as e:
        raise CoreMLFormatError(f"{label}: {e}") from None
    if not fns:
        raise CoreMLFormatError(f"{label}: the mlprogram has no functions")
    return Program.make(fns, {"source_format": "coreml", MODEL_SHELL: pmap({
        "model": _shell(model), "spec_version": int(model.specificationVersion)})})
