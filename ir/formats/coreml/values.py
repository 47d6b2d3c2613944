"""MIL types and values <-> IR types and numpy arrays.

A MIL value is either immediate (in the model file, in the TensorValue field
its dtype uses) or a blob in the weight file. Where each dtype goes, as Core
ML reads it: fp16 and the 1-byte and sub-byte integers (and uint32) as raw
bytes (sub-byte bit-packed), fp32 as floats, fp64 as doubles, int16 / uint16
/ int32 as ints, int64 / uint64 as longInts, bool as bools, strings as strings.

Which consts go to the weight file follows coremltools' rule, so that a
model written here matches one it writes: at least 10 elements of fp16,
fp32, (u)int8 or a sub-byte type; from iOS18 also (u)int16 and (u)int32.
"""
from __future__ import annotations

import numpy as np

from ir.core import TensorType
from ir.dtypes import dtype as lookup_dtype
from ir.formats.coreml.blob import BlobReader, BlobWriter
from ir.formats.coreml.proto import new
from ir.packing import pack, unpack
from ir.types import SequenceType

# MIL.proto DataType <-> IR dtype names
MIL_DTYPES = {1: "bool", 2: "string", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16", 21: "int8", 22: "int16",
              23: "int32", 24: "int64", 25: "int4", 31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64", 35: "uint4",
              36: "uint2", 37: "uint1", 38: "uint6", 39: "uint3"}
MIL_CODES = {name: code for code, name in MIL_DTYPES.items()}

# IR dtype -> the TensorValue field an immediate value of it is written in
_FIELDS = {"fp32": "floats", "fp64": "doubles", "int16": "ints", "uint16": "ints", "int32": "ints",
           "int64": "longInts", "uint64": "longInts", "bool": "bools", "string": "strings"}
_IN_BYTES = ("fp16", "int8", "uint8", "uint32", "int4", "uint1", "uint2", "uint3", "uint4", "uint6")

_BLOB_DTYPES = {"fp16", "fp32", "uint8", "int8", "int4", "uint1", "uint2", "uint3", "uint4", "uint6"}
_BLOB_DTYPES_IOS18 = _BLOB_DTYPES | {"int16", "uint16", "int32", "uint32"}
WEIGHTS_FILE = "@model_path/weights/weight.bin"


class MILTypeError(ValueError):
    """A MIL type or value with no IR counterpart (or the reverse); names the type."""


# ---- types -------------------------------------------------------------------------------

def ir_dtype(code: int) -> str:
    try:
        return MIL_DTYPES[code]
    except KeyError:
        raise MILTypeError(f"MIL data type {code} has no weightpress dtype") from None


def mil_dtype(dt: str) -> int:
    try:
        return MIL_CODES[dt]
    except KeyError:
        raise MILTypeError(f"dtype {dt} has no Core ML (MIL) data type") from None


def ir_type(value_type, dim_name=lambda i: "?"):
    """The IR type of a MIL ValueType; `dim_name(i)` names the i-th unknown dim."""
    kind = value_type.WhichOneof("type")
    if kind == "tensorType":
        t = value_type.tensorType
        dims = []
        for i, d in enumerate(t.dimensions):
            if d.WhichOneof("dimension") == "unknown":
                if d.unknown.variadic:
                    raise MILTypeError("tensors of variadic rank are not supported")
                dims.append(dim_name(i))
            else:
                dims.append(int(d.constant.size))
        return TensorType.of(ir_dtype(t.dataType), tuple(dims))
    if kind == "listType":
        return SequenceType(ir_type(value_type.listType.type))
    raise MILTypeError(f"MIL {kind or 'empty'} values are not supported")


def value_type(t):
    """The MIL ValueType of an IR type."""
    if isinstance(t, SequenceType):
        vt = new("ValueType")
        vt.listType.type.CopyFrom(value_type(t.elem))
        vt.listType.length.unknown.variadic = False
        return vt
    if not getattr(t, "is_tensor", False) or t.shape is None:
        raise MILTypeError(f"type {t} has no Core ML form (tensors of known rank and sequences of them only)")
    vt = new("ValueType")
    tt = vt.tensorType
    tt.dataType = mil_dtype(t.dtype)
    tt.rank = len(t.shape)
    for d in t.shape:
        dim = tt.dimensions.add()
        if isinstance(d, int):
            dim.constant.size = d
        else:
            dim.unknown.variadic = False
    return vt


# ---- values ------------------------------------------------------------------------------

def read_value(value, blobs):
    """(array or str, IR dtype) of a MIL Value; `blobs(file_name)` -> BlobReader."""
    t = ir_type(value.type)
    if not isinstance(t, TensorType):
        raise MILTypeError(f"{t} values are not supported")
    dt, shape = t.dtype, tuple(t.shape)
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        f = value.blobFileValue
        return blobs(f.fileName).read(int(f.offset), dt, shape), dt
    if kind != "immediateValue" or value.immediateValue.WhichOneof("value") != "tensor":
        raise MILTypeError("only tensor values are supported")
    tv = value.immediateValue.tensor
    field = tv.WhichOneof("value")
    d = lookup_dtype(dt)
    if field == "bytes":
        raw = tv.bytes.values
        if d.is_subbyte:
            arr = unpack(raw, dt, shape)
        else:
            arr = np.frombuffer(raw, d.storage).reshape(shape)
    elif field == "strings":
        items = [s.decode("utf-8") if isinstance(s, bytes) else s for s in tv.strings.values]
        if not shape:
            return items[0], dt
        arr = np.array(items, dtype=object).reshape(shape)
    elif field is None:
        arr = np.zeros(shape, d.storage)
    else:
        arr = np.array(getattr(tv, field).values).astype(d.storage).reshape(shape)
    if arr.flags.writeable:
        arr.flags.writeable = False
    return arr, dt


def immediate(arr, dt: str):
    """A MIL Value holding `arr` (IR storage of dtype dt) in the model file itself."""
    if isinstance(arr, str):
        arr, dt = np.array(arr, dtype=object), "string"
    arr = np.asarray(arr)
    v = new("Value")
    v.type.CopyFrom(value_type(TensorType.of(dt, arr.shape)))
    tv = v.immediateValue.tensor
    if dt in _IN_BYTES:
        d = lookup_dtype(dt)
        tv.bytes.values = pack(arr, dt) if d.is_subbyte else np.ascontiguousarray(arr, d.storage).tobytes()
        return v
    field = getattr(tv, _FIELDS.get(dt) or _no_field(dt))
    field.SetInParent()
    flat = arr.reshape(-1)
    if dt == "string":
        field.values.extend(str(s) for s in flat)
    elif dt == "bool":
        field.values.extend(bool(b) for b in flat)
    elif dt in ("fp32", "fp64"):
        field.values.extend(flat.astype(np.float64).tolist())
    else:
        field.values.extend(int(i) for i in flat.tolist())
    return v


def _no_field(dt):
    raise MILTypeError(f"{dt} values cannot be written in a Core ML model")


def in_weight_file(arr, dt: str, spec_version: int) -> bool:
    allowed = _BLOB_DTYPES_IOS18 if spec_version >= 9 else _BLOB_DTYPES
    return isinstance(arr, np.ndarray) and arr.size >= 10 and dt in allowed


def write_value(arr, dt: str, writer: BlobWriter, spec_version: int):
    """A MIL Value for `arr`: a blob in the weight file for large tensors, immediate otherwise."""
    if not in_weight_file(arr, dt, spec_version):
        return immediate(arr, dt)
    v = new("Value")
    v.type.CopyFrom(value_type(TensorType.of(dt, arr.shape)))
    v.blobFileValue.fileName = WEIGHTS_FILE
    v.blobFileValue.offset = writer.add(arr, dt)
    return v


def string_value(text: str):
    return immediate(text, "string")


__all__ = ["BlobReader", "BlobWriter", "ir_type", "value_type", "read_value", "write_value", "immediate",
           "string_value", "MILTypeError", "WEIGHTS_FILE"]
