"""Core ML (mlprogram / .mlpackage) in and out, through coremltools (the
optional extra `weightpress[coreml]`, imported lazily).

- `import_coreml(path_or_mlmodel)`: coremltools' milproto loader reads the
  model into pymil; MIL ops with a core op of the same name map onto it,
  every other MIL op becomes a foreign `mil.<op>` op (no evaluator).
- `export_coreml(program, path, target="iOS18")`: the program rebuilt with
  coremltools' MIL builder, compressed weights as the constexpr ops of the
  target opset (iOS16 packed forms, iOS18 unpacked sub-byte forms), saved
  as an .mlpackage, atomically.

The IR keeps sub-byte data unpacked and the iOS18 op forms; the iOS16 forms
pack indices / masks into bytes, so both directions adapt those ops.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from ir.core import Block, Function, Op, Program, TensorType, Var
from ir.construct import const_op, infer_types
from ir.dtypes import dtype as lookup_dtype
from ir.ops import REGISTRY, OpError
from ir.packing import pack, unpack


class CoreMLFormatError(ValueError):
    """A file or model that cannot be read as a Core ML mlprogram; names it and says why."""


class CoreMLExportError(ValueError):
    """A program that cannot be written as Core ML for the target; names the op and says why."""


def _coremltools():
    try:
        import coremltools as ct
    except ImportError as e:  # the optional extra is missing
        raise ImportError("Core ML support needs coremltools: pip install 'weightpress[coreml]'") from e
    return ct


def _mil():
    ct = _coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function as MilFunction, Program as MilProgram, types

    return ct, mb, MilFunction, MilProgram, types


# ---- import ----------------------------------------------------------------------

def _open(src):
    ct = _coremltools()
    if isinstance(src, ct.models.MLModel):
        return src, "<MLModel>"
    path = os.fspath(src)
    if not os.path.exists(path):
        raise CoreMLFormatError(f"{path}: no such file or package")
    try:
        return ct.models.MLModel(path, skip_model_load=True), path
    except Exception as e:  # coremltools raises many kinds
        raise CoreMLFormatError(f"{path}: not a readable Core ML model ({type(e).__name__}: {e})") from None


def _ir_dtype(mil_type) -> str:
    from coremltools.converters.mil.mil import types

    return lookup_dtype(types.builtin_to_string(mil_type)).name


def _ir_type(mil_var, symbols=None) -> TensorType:
    """The IR type of a MIL var; `symbols` renames MIL's symbolic dims (is0, ...) back to
    the names the exporter recorded."""
    from coremltools.converters.mil.mil import types

    if types.is_tensor(mil_var.sym_type):
        elem, shape = mil_var.dtype, mil_var.shape
    else:
        elem, shape = mil_var.sym_type, ()
    symbols = symbols or {}
    return TensorType.of(_ir_dtype(elem), tuple(d if isinstance(d, (int, np.integer)) else symbols.get(str(d), str(d))
                                                for d in shape))


SYMBOLS_KEY = "weightpress.input_shapes"  # user metadata: the inputs' shapes with their dim names


def _storage_value(mil_var, dt: str) -> np.ndarray:
    val = mil_var.val
    if isinstance(val, str):
        return val
    return np.array(val, dtype=lookup_dtype(dt).storage)


class _Importer:
    def __init__(self, symbols=None):
        self.symbols = symbols or {}
        self.ops: list = []
        self.env: dict = {}  # MIL var name -> IR Var
        self.pending: dict = {}  # MIL const var name -> MIL var, emitted when first read

    def var(self, mil_var) -> Var:
        v = self.env.get(mil_var.name)
        if v is None and mil_var.name in self.pending:
            dt = _ir_type(mil_var).dtype
            v = self.const(mil_var.name, _storage_value(mil_var, dt), dt)
        if v is None:
            raise CoreMLFormatError(f"value {mil_var.name!r} is used before it is defined")
        return v

    def const(self, name, value, dt) -> Var:
        op = const_op(name, value, dt)
        self.ops.append(op)
        self.env[name] = op.outputs[0]
        return op.outputs[0]

    def inputs(self, mil_op) -> dict:
        out = {}
        for k, v in mil_op.inputs.items():
            if v is None:
                continue
            out[k] = tuple(self.var(x) for x in v) if isinstance(v, (list, tuple)) else self.var(v)
        return out


def _unpacked_lut_inputs(imp, mil_op):
    """iOS16 constexpr_lut_to_dense: packed uint8 indices -> unpacked uint<nbits> indices."""
    ins = mil_op.inputs
    nbits = int(np.log2(ins["lut"].shape[0]))
    count = int(np.prod(ins["shape"].val))
    dt = f"uint{nbits}" if nbits < 8 else "uint8"
    raw = np.asarray(ins["indices"].val, np.uint8)
    idx = unpack(raw.tobytes(), dt, (count,)) if nbits < 8 else raw
    return {"indices": imp.const(mil_op.name + "_indices", idx, dt), "lut": imp.var(ins["lut"]),
            "shape": imp.var(ins["shape"])}


def _unpacked_sparse_inputs(imp, mil_op):
    """iOS16 constexpr_sparse_to_dense: packed uint8 mask -> uint1 mask shaped like the output."""
    ins = mil_op.inputs
    shape = tuple(int(s) for s in ins["shape"].val)
    mask = unpack(np.asarray(ins["mask"].val, np.uint8).tobytes(), "uint1", shape)
    return {"nonzero_data": imp.var(ins["nonzero_data"]), "mask": imp.const(mil_op.name + "_mask", mask, "uint1")}


def _packed_form(mil_op, key) -> bool:
    v = mil_op.inputs.get(key)
    return "shape" in mil_op.inputs and v is not None and _ir_type(v).dtype == "uint8" and v.rank == 1


IMPORT_ADAPTERS = {  # MIL op type -> (is this the packed iOS16 form?, inputs in IR form)
    "constexpr_lut_to_dense": (lambda op: _packed_form(op, "indices"), _unpacked_lut_inputs),
    "constexpr_sparse_to_dense": (lambda op: _packed_form(op, "mask"), _unpacked_sparse_inputs),
}


def _import_op(imp, mil_op):
    if mil_op.op_type == "const":
        imp.pending[mil_op.outputs[0].name] = mil_op.outputs[0]
        return
    adapter = IMPORT_ADAPTERS.get(mil_op.op_type)
    if adapter is not None and adapter[0](mil_op):
        ins = adapter[1](imp, mil_op)
    else:
        ins = imp.inputs(mil_op)
    op_type = mil_op.op_type
    types = None
    if op_type in REGISTRY and not mil_op.blocks:
        try:
            types = infer_types(op_type, mil_op.name, ins)
        except OpError:
            types = None  # inputs the core op does not take: carried as a foreign op
    if types is None:
        op_type = f"mil.{op_type}"
        types = [_ir_type(v, imp.symbols) for v in mil_op.outputs]
    outs = tuple(Var(mv.name, t) for mv, t in zip(mil_op.outputs, types))
    imp.ops.append(Op.make(op_type, mil_op.name, ins, outs))
    for mv, v in zip(mil_op.outputs, outs):
        imp.env[mv.name] = v


def _recorded_symbols(mil_fn, recorded: dict) -> dict:
    """MIL symbol name -> the dim name recorded at export, where the shapes line up."""
    out = {}
    for iname, mv in mil_fn.inputs.items():
        shape = getattr(mv, "shape", ())
        names = recorded.get(iname)
        if not isinstance(names, list) or len(names) != len(shape):
            continue
        for d, n in zip(shape, names):
            if not isinstance(d, (int, np.integer)) and isinstance(n, str) and n != "?":
                out.setdefault(str(d), n)
    return out


def _import_function(name, mil_fn, recorded=None) -> Function:
    ct = _coremltools()
    imp = _Importer(_recorded_symbols(mil_fn, (recorded or {}).get(name, {})))
    inputs = []
    for iname, mv in mil_fn.inputs.items():
        v = Var(iname, _ir_type(mv, imp.symbols))
        imp.env[mv.name] = v
        inputs.append(v)
    for mil_op in mil_fn.operations:
        _import_op(imp, mil_op)
    outputs = [imp.var(v) for v in mil_fn.outputs]
    opset = ct.target(mil_fn.opset_version).name if mil_fn.opset_version is not None else "iOS18"
    return Function(name, Block.make(inputs, imp.ops, outputs), opset)


def import_coreml(src) -> Program:
    """A Core ML mlprogram (.mlpackage path or MLModel) as a Program, one Function per MIL function."""
    model, label = _open(src)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise CoreMLFormatError(f"{label}: not an mlprogram (it is a {spec.WhichOneof('Type')} model)")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    try:
        mil_prog = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    except Exception as e:
        raise CoreMLFormatError(f"{label}: cannot read the MIL program ({type(e).__name__}: {e})") from None
    try:
        recorded = json.loads(model.user_defined_metadata.get(SYMBOLS_KEY, "{}") or "{}")
    except ValueError:
        recorded = {}
    try:
        fns = [_import_function(n, f, recorded if isinstance(recorded, dict) else {})
               for n, f in mil_prog.functions.items()]
    except CoreMLFormatError as e:
        raise CoreMLFormatError(f"{label}: {e}") from None
    return Program.make(fns, {"source_format": "coreml"})


# ---- export ----------------------------------------------------------------------

_TARGET_ORDER = ("iOS15", "iOS16", "iOS17", "iOS18")


def _at_least(target: str, floor: str) -> bool:
    return _TARGET_ORDER.index(target) >= _TARGET_ORDER.index(floor)


def _mil_value(arr, dt: str):
    """A numpy value in the form mb.const expects: sub-byte data carries coremltools' dtype tag."""
    _, _, _, _, types = _mil()
    if isinstance(arr, str) or (isinstance(arr, np.ndarray) and arr.dtype == object):
        return str(np.asarray(arr).item()) if np.asarray(arr).ndim == 0 else arr
    d = lookup_dtype(dt)
    if d.is_subbyte:
        return np.asarray(arr).astype(getattr(types, f"np_{d.name}_dtype"))
    arr = np.array(arr, d.storage)
    return arr[()] if arr.ndim == 0 else arr


class _Exporter:
    def __init__(self, mb, target):
        self.mb, self.target = mb, target
        self.env: dict = {}  # IR var name -> MIL var
        self.consts: dict = {}  # IR const name -> (value, dtype), emitted when first read

    def var(self, v: Var):
        if v.name not in self.env:
            val, dt = self.consts[v.name]
            self.env[v.name] = self.mb.const(val=_mil_value(val, dt), name=v.name)
        return self.env[v.name]

    def inputs(self, op) -> dict:
        return {k: tuple(self.var(x) for x in v) if isinstance(v, tuple) else self.var(v)
                for k, v in op.inputs.items()}

    def call(self, op_type, name, **ins):
        try:
            return getattr(self.mb, op_type)(name=name, **ins)
        except Exception as e:
            raise CoreMLExportError(f"{op_type} {name!r}: coremltools rejects it for {self.target} "
                                    f"({type(e).__name__}: {e})") from None


def _known(op, key):
    v = op.get(key)
    if v is None:
        return None
    if v.val is None:
        raise CoreMLExportError(f"{op.op_type} {op.name!r}: {key} must be a constant to change its form")
    return v.val


def _affine_to_ios18(ex, op):
    q, zp, scale = op.quantized_data, _known(op, "zero_point"), _known(op, "scale")
    axis = int(_known(op, "axis") if op.axis is not None else 0) % q.rank
    shape = [1] * q.rank
    if scale.ndim or zp.ndim:
        shape[axis] = max(scale.size, zp.size)
    n = int(np.prod(shape))
    along = lambda a: np.broadcast_to(np.asarray(a).reshape(-1), (n,)).reshape(shape)  # noqa: E731
    mb = ex.mb
    scale_v = mb.const(val=along(scale).astype(scale.dtype), name=op.name + "_scale")
    zp_v = mb.const(val=_mil_value(along(zp), op.zero_point.dtype), name=op.name + "_offset")
    return ex.call("constexpr_blockwise_shift_scale", op.name, data=ex.var(q), scale=scale_v, offset=zp_v)


def _lut_ios16_to_ios18(ex, op):
    idx, lut, shape = _known(op, "indices"), _known(op, "lut"), [int(s) for s in _known(op, "shape")]
    mb = ex.mb
    idx_v = mb.const(val=_mil_value(idx.reshape(shape), op.indices.dtype), name=op.name + "_indices")
    lut_v = mb.const(val=lut.reshape([1] * len(shape) + [lut.size, 1]), name=op.name + "_lut")
    return ex.call("constexpr_lut_to_dense", op.name, indices=idx_v, lut=lut_v)


def _sparse_to_ios18(ex, op):
    mask, shape = _known(op, "mask"), op.output.shape
    mask_v = ex.mb.const(val=_mil_value(mask.reshape(shape), "uint1"), name=op.name + "_mask")
    return ex.call("constexpr_sparse_to_dense", op.name, nonzero_data=ex.var(op.nonzero_data), mask=mask_v)


def _lut_to_ios16(ex, op):
    idx, lut = _known(op, "indices"), _known(op, "lut")
    if op.shape is None and (lut.shape[-1] != 1 or int(np.prod(lut.shape[:-2])) != 1):
        raise CoreMLExportError(f"constexpr_lut_to_dense {op.name!r}: per-block or vector LUTs need iOS18")
    flat_lut = lut.reshape(-1)
    nbits = lookup_dtype(op.indices.dtype).bits
    raw = np.asarray(idx).reshape(-1).astype(np.uint8)
    packed = raw if nbits == 8 else np.frombuffer(pack(raw, f"uint{nbits}"), np.uint8)
    mb = ex.mb
    return ex.call("constexpr_lut_to_dense", op.name, indices=mb.const(val=packed, name=op.name + "_indices"),
                   lut=mb.const(val=flat_lut, name=op.name + "_lut"),
                   shape=mb.const(val=np.array(op.output.shape, np.uint32), name=op.name + "_shape"))


def _sparse_to_ios16(ex, op):
    mask = _known(op, "mask")
    packed = np.frombuffer(pack((np.asarray(mask) != 0).astype(np.uint8), "uint1"), np.uint8)
    mb = ex.mb
    return ex.call("constexpr_sparse_to_dense", op.name, nonzero_data=ex.var(op.nonzero_data),
                   mask=mb.const(val=packed, name=op.name + "_mask"),
                   shape=mb.const(val=np.array(op.output.shape, np.uint32), name=op.name + "_shape"))


def _blockwise_to_ios16(ex, op):
    data, scale = op.data, _known(op, "scale")
    offset = _known(op, "offset") if op.offset is not None else None
    big = [i for i, p in enumerate(scale.shape) if p > 1]
    if data.dtype not in ("int8", "uint8") or len(big) > 1 or (big and scale.shape[big[0]] != data.shape[big[0]]):
        raise CoreMLExportError(f"constexpr_blockwise_shift_scale {op.name!r}: only per-tensor or per-channel "
                                f"int8/uint8 data has an iOS16 form")
    axis = big[0] if big else 0
    zp = np.zeros(scale.shape, lookup_dtype(data.dtype).storage) if offset is None else offset
    squeeze = (lambda a: a.reshape(-1)) if big else (lambda a: a.reshape(()))
    mb = ex.mb
    return ex.call("constexpr_affine_dequantize", op.name, quantized_data=ex.var(data),
                   zero_point=mb.const(val=_mil_value(squeeze(zp), data.dtype), name=op.name + "_zp"),
                   scale=mb.const(val=squeeze(scale), name=op.name + "_scale"),
                   axis=mb.const(val=np.int32(axis), name=op.name + "_axis"))


def _adapter(op, target):
    """How an op must change form for the target, or None when it goes as it is."""
    ios18 = _at_least(target, "iOS18")
    t = op.op_type
    if ios18:
        if t == "constexpr_affine_dequantize":
            return _affine_to_ios18
        if t == "constexpr_lut_to_dense" and op.shape is not None:
            return _lut_ios16_to_ios18
        if t == "constexpr_sparse_to_dense" and op.shape is not None:
            return _sparse_to_ios18
        return None
    if t == "constexpr_lut_to_dense":
        return _lut_to_ios16
    if t == "constexpr_sparse_to_dense":
        return _sparse_to_ios16
    if t == "constexpr_blockwise_shift_scale":
        return _blockwise_to_ios16
    return None


def _placeholder(mb, types, v: Var, symbols: dict):
    """A MIL input; one dim name is one symbol across the inputs (coremltools' symbols are
    process-global, so they get fresh names; export_coreml records ours in the metadata)."""
    from coremltools.converters.mil.mil import get_new_symbol

    def dim(d):
        if isinstance(d, int):
            return d
        if d == "?":
            return get_new_symbol()
        return symbols.setdefault(d, get_new_symbol())
    return mb.placeholder(shape=[dim(d) for d in v.shape], dtype=types.string_to_builtin(v.dtype))


def _export_op(ex, op):
    if op.op_type == "const":
        ex.consts[op.outputs[0].name] = (op.attrs["val"], op.outputs[0].dtype)
        return
    if op.op_type.startswith("onnx."):
        raise CoreMLExportError(f"{op.op_type} {op.name!r}: an ONNX op has no Core ML form")
    adapt = _adapter(op, ex.target)
    if adapt is not None:
        result = adapt(ex, op)
    else:
        if op.blocks:
            raise CoreMLExportError(f"{op.op_type} {op.name!r}: ops with nested blocks are not exported yet")
        result = ex.call(op.op_type.split(".", 1)[-1], op.name, **ex.inputs(op))
    results = result if isinstance(result, (list, tuple)) else [result]
    for v, mv in zip(op.outputs, results):
        ex.env[v.name] = mv


def to_mil_program(program: Program, target: str = "iOS18", function: str = "main"):
    """The pymil Program for one function (nothing written)."""
    ct, mb, MilFunction, MilProgram, types = _mil()
    if target not in _TARGET_ORDER:
        raise CoreMLExportError(f"unknown target {target!r}; one of {', '.join(_TARGET_ORDER)}")
    if function not in program.functions:
        raise CoreMLExportError(f"no function {function!r} (have {sorted(program.functions)})")
    fn = program.functions[function]
    symbols: dict = {}
    specs = {v.name: _placeholder(mb, types, v, symbols) for v in fn.inputs}
    ex = _Exporter(mb, target)
    with MilFunction(specs, opset_version=getattr(ct.target, target)) as mil_fn:
        for v in fn.inputs:
            ex.env[v.name] = mil_fn.inputs[v.name]
        for op in fn.ops:
            _export_op(ex, op)
        mil_fn.set_outputs([ex.var(v) for v in fn.outputs])
    prog = MilProgram()
    prog.add_function("main", mil_fn)
    return prog


def export_coreml(program: Program, path, target: str = "iOS18", function: str = "main") -> str:
    """Write `program` as an .mlpackage at `path` (atomically); returns the path."""
    ct = _coremltools()
    prog = to_mil_program(program, target, function)
    try:
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                           pass_pipeline=ct.PassPipeline.EMPTY, skip_model_load=True)
    except Exception as e:
        raise CoreMLExportError(f"coremltools cannot convert the program for {target}: {type(e).__name__}: {e}") from None
    # the MIL proto keeps no names for symbolic dims: record them for import_coreml
    fn = program.functions[function]
    model.user_defined_metadata[SYMBOLS_KEY] = json.dumps(
        {"main": {v.name: [d if isinstance(d, int) else str(d) for d in v.shape] for v in fn.inputs}})
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=".weightpress-", dir=parent)
    try:
        staged = os.path.join(tmp, os.path.basename(path))
        model.save(staged)
        if os.path.isdir(path):  # a package is a directory: move the old one aside, then swap in
            old = os.path.join(tmp, "previous")
            os.replace(path, old)
        os.replace(staged, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
