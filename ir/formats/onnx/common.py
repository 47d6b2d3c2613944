"""What the ONNX importer, exporter and foreign-op evaluator share: the
element-type table, attribute conversion and the format's errors."""
from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ir.core import frozen_array
from ir.dtypes import dtype as lookup_dtype


class OnnxFormatError(ValueError):
    """A file or model that cannot be read as ONNX; the message names it and says why."""


class OnnxExportError(ValueError):
    """A program that cannot be written as ONNX; the message names the op and says why."""


# ONNX element type <-> IR dtype name (one table, both directions)
ELEM_TO_IR = {
    TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.DOUBLE: "fp64",
    TensorProto.BFLOAT16: "bf16", TensorProto.INT8: "int8", TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16", TensorProto.UINT16: "uint16", TensorProto.INT32: "int32",
    TensorProto.UINT32: "uint32", TensorProto.INT64: "int64", TensorProto.UINT64: "uint64", TensorProto.BOOL: "bool",
    TensorProto.INT4: "int4", TensorProto.UINT4: "uint4", TensorProto.STRING: "string",
}
IR_TO_ELEM = {v: k for k, v in ELEM_TO_IR.items()}
# sub-byte IR types ONNX has no name for travel as uint8
IR_TO_ELEM.update({"uint1": TensorProto.UINT8, "uint2": TensorProto.UINT8,
                   "uint3": TensorProto.UINT8, "uint6": TensorProto.UINT8})


def ir_dtype(elem: int, what: str = "") -> str:
    try:
        return ELEM_TO_IR[elem]
    except KeyError:
        name = TensorProto.DataType.Name(elem) if elem in TensorProto.DataType.values() else elem
        raise OnnxFormatError(f"{what}: ONNX element type {name} has no IR dtype") from None


def elem_type(ir_name: str) -> int:
    return IR_TO_ELEM[lookup_dtype(ir_name).name]


# element types whose bytes in a file are the IR's storage array as it is (little-endian,
# one element per item): an external-data tensor of these is mapped, not read
_MAPPABLE = {TensorProto.FLOAT: "<f4", TensorProto.FLOAT16: "<f2", TensorProto.DOUBLE: "<f8",
             TensorProto.INT8: "i1", TensorProto.UINT8: "u1", TensorProto.INT16: "<i2",
             TensorProto.UINT16: "<u2", TensorProto.INT32: "<i4", TensorProto.UINT32: "<u4",
             TensorProto.INT64: "<i8", TensorProto.UINT64: "<u8", TensorProto.BOOL: "|b1"}


def is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def external_info(t: TensorProto) -> dict:
    """location / offset / length of an external-data tensor (offset 0, length None when absent)."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or ".." in parts:
        raise OnnxFormatError(f"tensor {t.name!r}: external data location {location!r} is not a "
                              "file name relative to the model")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise OnnxFormatError(f"tensor {t.name!r}: external data offset / length are not integers") from None
    return {"location": location, "offset": offset, "length": length}


def _mapped(t: TensorProto, base_dir: str) -> np.ndarray:
    from ir.lazy import WeightFileError, file_array

    info = external_info(t)
    try:
        return file_array(os.path.join(base_dir, info["location"]), info["offset"], _MAPPABLE[t.data_type],
                          tuple(t.dims), info["length"])
    except WeightFileError as e:
        raise OnnxFormatError(f"tensor {t.name!r}: {e}") from None


def tensor_to_array(t: TensorProto, base_dir: Optional[str] = None) -> tuple:
    """(read-only array in the IR's storage dtype, IR dtype name) of an ONNX tensor.
    An external-data tensor read from `base_dir` is file-backed (ir.lazy) when its bytes
    are the array as it is; others are read whole."""
    dt = ir_dtype(t.data_type, f"tensor {t.name!r}")
    if base_dir is not None and is_external(t):
        if t.data_type in _MAPPABLE and np.dtype(_MAPPABLE[t.data_type]) == lookup_dtype(dt).storage:
            return _mapped(t, base_dir), dt
        arr = numpy_helper.to_array(t, base_dir)
    else:
        arr = numpy_helper.to_array(t)
    storage = lookup_dtype(dt).storage
    if arr.dtype != storage:  # int4 / uint4 come back as ml_dtypes types
        arr = arr.astype(storage)
    return frozen_array(arr), dt


def array_to_tensor(arr: np.ndarray, ir_name: str, name: str) -> TensorProto:
    """An ONNX tensor for IR data; int4 / uint4 are packed two per byte by onnx."""
    dt = lookup_dtype(ir_name)
    if dt.name in ("int4", "uint4", "bf16"):  # onnx packs these from the ml_dtypes types, as raw bytes
        import ml_dtypes

        kind = {"int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4, "bf16": ml_dtypes.bfloat16}[dt.name]
        return numpy_helper.from_array(np.asarray(arr).astype(kind), name)
    arr = np.asarray(arr)
    return numpy_helper.from_array(arr if dt.kind == "string" else _c_order(arr, dt.storage), name)


def _c_order(arr: np.ndarray, storage=None) -> np.ndarray:
    """C-ordered copy only when needed (np.ascontiguousarray would turn a 0-d array into 1-d)."""
    return np.asarray(arr).astype(storage or arr.dtype, order="C", copy=False)


# ---- attributes ------------------------------------------------------------
# Foreign ops keep their ONNX attributes as plain, digestable IR attr values:
# numbers, strings, tuples, read-only arrays; subgraphs travel as the
# serialized AttributeProto (bytes). Keys starting with "_" are ours.

def attr_to_ir(a: AttributeProto):
    if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.SPARSE_TENSOR,
                  AttributeProto.SPARSE_TENSORS, AttributeProto.TYPE_PROTO, AttributeProto.TYPE_PROTOS):
        return a.SerializeToString()
    if a.type == AttributeProto.TENSOR:
        return tensor_to_array(a.t)[0]
    if a.type == AttributeProto.TENSORS:
        return tuple(tensor_to_array(t)[0] for t in a.tensors)
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, list):
        return tuple(x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x for x in v)
    return v


def attr_from_ir(name: str, value) -> AttributeProto:
    if isinstance(value, bytes):
        a = AttributeProto()
        a.ParseFromString(value)
        return a
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(_c_order(value)))
    if isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
        return helper.make_attribute(name, [numpy_helper.from_array(_c_order(v)) for v in value])
    if isinstance(value, tuple):
        return helper.make_attribute(name, list(value))
    return helper.make_attribute(name, value)


def onnx_attrs(attrs) -> dict:
    """The ONNX attributes among an op's IR attrs (ours start with '_')."""
    return {k: v for k, v in attrs.items() if not k.startswith("_")}


# ---- names -------------------------------------------------------------------

_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


def safe_name(name: str, default: str = "v") -> str:
    base = _UNSAFE.sub("_", name).strip("_") or default
    return "v" + base if base[0].isdigit() else base


class Names:
    """ONNX value names -> unique IR-safe names (letters, digits and '_')."""

    def __init__(self):
        self.used: set = set()
        self.map: dict = {}

    def of(self, onnx_name: str) -> str:
        if onnx_name in self.map:
            return self.map[onnx_name]
        base = safe_name(onnx_name)
        cand, i = base, 1
        while cand in self.used:
            cand, i = f"{base}_{i}", i + 1
        self.used.add(cand)
        self.map[onnx_name] = cand
        return cand

    def fresh(self, hint: str) -> str:
        cand, i = hint, 1
        while cand in self.used:
            cand, i = f"{hint}_{i}", i + 1
        self.used.add(cand)
        return cand


def opset_of(model: onnx.ModelProto, domain: str = "") -> int:
    for o in model.opset_import:
        if o.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(o.version)
    return 1 if domain else onnx.defs.onnx_opset_version()
