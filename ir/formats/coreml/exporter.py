"""IR -> Core ML mlprogram, written straight to the model file (no coremltools).

The deployment target is the program's own (its functions' opset) unless the
caller names another; it decides the specification version, the MIL opset
of every function and the forms of compressed weights (opforms.py).

Ops are written as MIL ops of the same name (a foreign ``mil.<type>`` op as
``<type>``, with the MIL attributes it was read with); values are referred to
by name. Consts are written as coremltools writes them: a const read only by
constexpr ops is not an op of its own but the value of their parameter
(iOS18: an inline input; before iOS18: an attribute, where the iOS16 forms
pack LUT indices and sparse masks into bytes); large values go to the weight
file (values.py says which).

The model description (inputs, outputs, metadata) and everything else the
source model file carried come from the model it was read from, when there
is one: an input or output keeps its description (an image input stays an
image input) as long as the program still has it with the same element type
and rank; the others are described from their IR types.
"""
from __future__ import annotations

import json

import numpy as np

from ir.analysis import use_def
from ir.core import Function, Program
from ir.dtypes import dtype as lookup_dtype
from ir.formats.coreml import targets
from ir.formats.coreml.blob import BlobWriter
from ir.formats.coreml.importer import MIL_ATTR, MODEL_SHELL, SYMBOLS_KEY
from ir.formats.coreml.opforms import CoreMLExportError, for_target
from ir.formats.coreml.proto import messages, new
from ir.formats.coreml.values import MILTypeError, string_value, value_type, write_value
from ir.ops import OpError
from ir.packing import pack

# parameters MIL wants as values written into the op, never as a reference to a const
LITERAL_PARAMS = {"classify": ("classes",), "reshape_like": ("begins", "ends", "end_masks")}
# ArrayFeatureType.ArrayDataType of the IR dtypes a model input / output may have
ARRAY_DTYPES = {"fp32": 65568, "fp64": 65600, "int32": 131104, "fp16": 65552, "int8": 131080}


def _packed(op, param, value, dt):
    """The iOS16 flat forms store LUT indices and sparse masks bit-packed into uint8."""
    if op.get("shape") is None or (op.op_type, param) not in (("constexpr_lut_to_dense", "indices"),
                                                              ("constexpr_sparse_to_dense", "mask")):
        return value, dt
    if not lookup_dtype(dt).is_subbyte:
        return value, dt
    return np.frombuffer(pack(value, dt), np.uint8), "uint8"


class _FunctionWriter:
    def __init__(self, fn: Function, target: targets.Target, blobs: BlobWriter):
        self.fn, self.target, self.blobs = fn, target, blobs
        self.ud = use_def(fn)
        self.params_in_attrs = target.spec_version < targets.target("iOS18").spec_version

    def value(self, arr, dt):
        return write_value(arr, dt, self.blobs, self.target.spec_version)

    def inlined(self, op) -> bool:
        """A const read only by constexpr ops: it becomes their parameter's value."""
        if op.op_type != "const":
            return False
        out = op.outputs[0]
        readers = self.ud.consumers_of(out)
        return bool(readers) and not self.ud.is_block_output(out) and \
            all(r.op_type.startswith("constexpr_") for r in readers)

    def block(self, block, pblock, inputs=True):
        if inputs:
            for v in block.inputs:
                pblock.inputs.add(name=v.name).type.CopyFrom(value_type(v.type))
        for op in block.ops:
            if not self.inlined(op):
                self.op(op, pblock.operations.add())
        pblock.outputs.extend(v.name for v in block.outputs)

    def op(self, op, pop):
        if op.op_type.startswith("onnx."):
            raise CoreMLExportError(f"{op.op_type} {op.name!r}: an ONNX op has no Core ML form")
        pop.type = op.op_type[4:] if op.op_type.startswith("mil.") else op.op_type
        pop.attributes["name"].CopyFrom(string_value(op.name))
        if op.op_type == "const":
            pop.attributes["val"].CopyFrom(self.value(op.attrs["val"], op.outputs[0].dtype))
        elif op.op_type.startswith("constexpr_"):
            self.constexpr_params(op, pop)
        else:
            literal = LITERAL_PARAMS.get(pop.type, ())
            for k, v in op.inputs.items():
                arg = pop.inputs[k]
                for x in (v if isinstance(v, tuple) else (v,)):
                    if k in literal and x.val is not None:
                        arg.arguments.add().value.CopyFrom(self.value(x.val, x.dtype))
                    else:
                        arg.arguments.add().name = x.name
        for k, raw in op.attrs.items():
            if k.startswith(MIL_ATTR):
                v = messages()["Value"]()
                v.ParseFromString(raw)
                pop.attributes[k[len(MIL_ATTR):]].CopyFrom(v)
        for v in op.outputs:
            pop.outputs.add(name=v.name).type.CopyFrom(value_type(v.type))
        for b in op.blocks:
            self.block(b, pop.blocks.add())

    def constexpr_params(self, op, pop):
        for k, v in op.inputs.items():
            if isinstance(v, tuple):
                raise CoreMLExportError(f"{op.op_type} {op.name!r}: parameter {k!r} takes one value")
            producer = self.ud.producer(v)
            if producer is not None and producer.op_type == "const":
                value = self.value(*_packed(op, k, v.val, v.dtype))
                if self.params_in_attrs:
                    pop.attributes[k].CopyFrom(value)
                else:
                    pop.inputs[k].arguments.add().value.CopyFrom(value)
            elif self.params_in_attrs:
                raise CoreMLExportError(f"{op.op_type} {op.name!r}: before iOS18 its {k!r} must be a "
                                        f"constant, not the result of {producer.op_type if producer else 'an input'}")
            else:
                pop.inputs[k].arguments.add().name = v.name


def _function(fn: Function, target: targets.Target, blobs: BlobWriter):
    try:
        fn = for_target(fn, target.name)
    except OpError as e:
        raise CoreMLExportError(f"function {fn.name!r}: {e}") from None
    pfn = new("Function", opset=target.mil_opset)
    for v in fn.inputs:
        pfn.inputs.add(name=v.name).type.CopyFrom(value_type(v.type))
    _FunctionWriter(fn, target, blobs).block(fn.block, pfn.block_specializations[target.mil_opset], inputs=False)
    return pfn


# ---- the description -----------------------------------------------------------------------

def _feature(v):
    """A model input / output described from its IR type."""
    t = v.type
    if not getattr(t, "is_tensor", False) or t.shape is None or t.dtype not in ARRAY_DTYPES:
        raise CoreMLExportError(f"{v.name!r}: a {t} has no Core ML model input / output form "
                                f"(multi-arrays of {', '.join(ARRAY_DTYPES)})")
    f = new("FeatureDescription", name=v.name)
    arr = f.type.multiArrayType
    arr.dataType = ARRAY_DTYPES[t.dtype]
    arr.shape.extend(d if isinstance(d, int) else 1 for d in t.shape)
    if any(not isinstance(d, int) for d in t.shape):
        for d in t.shape:
            arr.shapeRange.sizeRanges.add(lowerBound=d if isinstance(d, int) else 1,
                                          upperBound=d if isinstance(d, int) else -1)
    return f


def _still_fits(feature, v) -> bool:
    """The source model's description of a value the program still has, with its element type and rank."""
    t = v.type
    if not feature.type.HasField("multiArrayType"):
        return True  # an image, a string, ...: described by the source model, the IR type says no more
    arr = feature.type.multiArrayType
    return getattr(t, "is_tensor", False) and t.shape is not None and \
        ARRAY_DTYPES.get(t.dtype) == arr.dataType and len(arr.shape) in (0, len(t.shape))


def _describe(field, old, values):
    by_name = {f.name: f for f in old}
    kept = []
    for v in values:
        f = by_name.get(v.name)
        kept.append(f if f is not None and _still_fits(f, v) else _feature(v))
    copies = [type(f)() for f in kept]
    for c, f in zip(copies, kept):
        c.CopyFrom(f)
    del field[:]
    field.extend(copies)


def _shell(program: Program):
    model = messages()["Model"]()
    meta = program.attrs.get(MODEL_SHELL)
    if meta is not None:
        model.ParseFromString(meta["model"])
    if not model.mlProgram.version:
        model.mlProgram.version = 1
    return model


def _record_symbols(model, fn: Function) -> None:
    """The MIL proto keeps no names for symbolic dims: record them for the importer."""
    user = model.description.metadata.userDefined
    if any(not isinstance(d, int) for v in fn.inputs for d in (v.shape or ())):
        user[SYMBOLS_KEY] = json.dumps({fn.name: {v.name: [d if isinstance(d, int) else str(d) for d in v.shape]
                                                  for v in fn.inputs}})
    elif SYMBOLS_KEY in user:
        del user[SYMBOLS_KEY]


def program_target(program: Program, target=None) -> targets.Target:
    """The target to write: the one given, else the newest of the program's functions."""
    if target is not None:
        return targets.target(target)
    known = [targets.target(f.opset) for f in program.functions.values() if f.opset in targets.TARGETS]
    if not known:
        raise CoreMLExportError(f"the program's functions target {sorted({f.opset for f in program.functions.values()})}"
                                f", none of them a Core ML deployment target; name one ({', '.join(targets.ORDER)})")
    return max(known, key=lambda t: t.spec_version)


def model_message(program: Program, target=None, functions=None):
    """(Model message, BlobWriter with the weights) for `program` at `target` (default: its own)."""
    tgt = program_target(program, target)
    names = sorted(program.functions) if functions is None else list(functions)
    for n in names:
        if n not in program.functions:
            raise CoreMLExportError(f"no function {n!r} (have {sorted(program.functions)})")
    blobs = BlobWriter()
    model = _shell(program)
    model.specificationVersion = tgt.spec_version
    try:
        for n in names:
            model.mlProgram.functions[n].CopyFrom(_function(program.functions[n], tgt, blobs))
    except MILTypeError as e:
        raise CoreMLExportError(str(e)) from None
    main = program.functions["main"] if "main" in names else program.functions[names[0]]
    _describe(model.description.input, model.description.input, main.inputs)
    _describe(model.description.output, model.description.output, main.outputs)
    _record_symbols(model, main)
    return model, blobs
