"""The native single-file format: a zip holding the graph as JSON and one raw
file per distinct tensor. Never pickle.

    graph.json              {"format": "weightpress", "version": 1, "tensors": {...},
                             "attrs": ..., "functions": [...]}
    tensors/<digest>.bin    one per distinct tensor: sub-byte data bit-packed
                            LSB-first (ir.packing), other numbers raw
                            little-endian, strings / objects as JSON

The two halves `to_parts` / `from_parts` (a JSON-able graph dict plus
{tensor digest: array}) are what a content-addressed cache stores, so each
tensor is kept once; `encode_tensor` / `decode_tensor` turn one tensor into
bytes and back.

Attribute values are tagged JSON so that a load gives back the very same
Python types and hence the same digest: arrays {"$tensor": digest}, numpy
scalars {"$scalar": numpy dtype, "value": v}, tuples {"$tuple": [...]},
dicts {"$dict": [[k, v], ...]}, bytes {"$bytes": hex}; bool, None, int,
float, str and lists are plain JSON.

Reading a hostile file (`load`, and `decode_tensor` for the caches): nothing is
allocated from a size the file merely declares. The tensor table may only name
the IR's dtypes, with shapes of non-negative integers; each member's size in the
zip directory must equal what its table entry needs (shape x itemsize, or the
packed size) before a byte is read, a member may not claim more than deflate
can produce from its compressed bytes (MAX_INFLATION) nor the members more than
the archive holds, and members are read in bounded chunks into the one array
they become. graph.json and JSON-encoded string tensors are capped at
MAX_JSON_BYTES. So loading holds at most the tensors the file really contains
(checked against their digests), the graph, and one chunk. A loaded program is
validated (ir.validate); every failure is a SerializationError naming the file.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from typing import Mapping, NamedTuple, Optional

import numpy as np
from pyrsistent import pmap

from ir.atomic import write_file
from ir.core import Block, Function, InvalidProgram, Op, Program, TensorType, Var, frozen_array, gc_paused
from ir.types import parse_type
from ir.digest import tensor_digest
from ir.dtypes import UnknownDType, dtype as lookup_dtype, fits, from_numpy
from ir.packing import PackingError, pack, packed_size, unpack

FORMAT = "weightpress"
VERSION = 1
GRAPH_MEMBER = "graph.json"

# Bounds on what a file may make the reader hold (see the module docstring).
MAX_JSON_BYTES = 512 << 20  # graph.json (~215 bytes per op: about 2.5 million ops), string tensors
MAX_INFLATION = 1100  # deflate's best ratio is about 1032:1; a member claiming more is lying
MAX_RANK = 32
_READ_CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
# numpy dtypes a tensor may be raw-encoded as (either byte order): the IR's numeric storages
_RAW_NUMPY = frozenset(np.dtype(c) for c in "?bBhHiIlLqQefd")
# a JSON-encoded U/S tensor may be at most this much larger in memory than its bytes
_STRING_EXPANSION, _STRING_SLACK = 16, 1 << 20


class SerializationError(ValueError):
    """A file (or graph dict) that cannot be read back: names the file and the reason."""


class InvalidProgramFile(SerializationError, InvalidProgram):
    """A file that reads back as a program breaking the IR rules (ir.validate names the op)."""


def is_digest(value) -> bool:
    """Whether `value` is a well-formed digest (64 lowercase hex digits): the only names a
    tensor table or a cache may turn into member or file names."""
    return isinstance(value, str) and _DIGEST.match(value) is not None


def tensor_member(digest: str) -> str:
    return f"tensors/{digest}.bin"


# ---- one tensor <-> bytes ---------------------------------------------------

def _is_object(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "OUS"


def write_tensor(out, arr: np.ndarray, ir_dtype) -> int:
    """Write encode_tensor's bytes of `arr` to the binary file `out` without building them
    whole when they are the array's own bytes (numbers, little-endian): chunk by chunk from
    the array (a file-backed one's pages given back after). The number of bytes written."""
    from ir import lazy

    arr = np.asarray(arr)
    dt = lookup_dtype(ir_dtype)
    if dt.is_subbyte or dt.kind == "string" or _is_object(arr) or arr.dtype.byteorder == ">":
        data = encode_tensor(arr, ir_dtype)
        out.write(data)
        return len(data)
    data = memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B")
    for at in range(0, len(data), lazy.CHUNK):
        out.write(data[at:at + lazy.CHUNK])
    lazy.release(arr)
    return len(data)


def encode_tensor(arr: np.ndarray, ir_dtype) -> bytes:
    """Bytes of one tensor: packed for sub-byte dtypes, JSON for strings, raw little-endian else."""
    dt = lookup_dtype(ir_dtype)
    arr = np.asarray(arr)
    if dt.is_subbyte:
        return pack(arr, dt)
    if dt.kind == "string" or _is_object(arr):
        return json.dumps(arr.reshape(-1).tolist(), ensure_ascii=False).encode("utf-8")
    little = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    return np.ascontiguousarray(arr, dtype=little).tobytes()


class TensorLayout(NamedTuple):
    """What a tensor table entry declares, checked: the IR dtype, the shape, the numpy dtype
    the array is restored with and the exact size of its encoding (None: JSON, unknown)."""
    dtype: object  # ir.dtypes.DType
    shape: tuple
    target: np.dtype
    encoded_size: Optional[int]

    @property
    def count(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def tensor_layout(ir_dtype, shape, numpy_dtype=None) -> TensorLayout:
    """Check a declared tensor (IR dtype name, shape, optional numpy dtype string) before
    anything is allocated for it; SerializationError says what is wrong."""
    try:
        dt = lookup_dtype(ir_dtype)
    except (UnknownDType, TypeError) as e:
        raise SerializationError(f"dtype {ir_dtype!r}: {e}") from None
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_RANK or not all(map(_is_dim, shape)):
        raise SerializationError(f"shape {_short_repr(shape)} is not a list of at most {MAX_RANK} "
                                 "non-negative integers")
    target = numpy_target(numpy_dtype, dt)
    layout = TensorLayout(dt, tuple(int(s) for s in shape), target, None)
    if dt.is_subbyte:
        return layout._replace(encoded_size=packed_size(layout.count, dt))
    if dt.kind == "string" or target.kind in "OUS":
        return layout
    return layout._replace(encoded_size=layout.count * target.itemsize)


def _is_dim(s) -> bool:
    return isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def numpy_target(numpy_dtype, dt) -> np.dtype:
    """The numpy dtype to restore: the IR dtype's storage, or a declared numeric dtype of
    the IR's (either byte order), or for strings an object / bounded U / S dtype."""
    if numpy_dtype is None or numpy_dtype == dt.storage.str:
        return dt.storage
    if not isinstance(numpy_dtype, str) or len(numpy_dtype) > 16:
        raise SerializationError(f"numpy dtype {_short_repr(numpy_dtype)} is not a dtype string")
    try:
        target = np.dtype(numpy_dtype)
    except (TypeError, ValueError) as e:
        raise SerializationError(f"numpy dtype {numpy_dtype!r}: {e}") from None
    if dt.is_subbyte and target != dt.storage:
        raise SerializationError(f"numpy dtype {numpy_dtype!r} for {dt.name} (stored as {dt.storage})")
    if target.kind in "OUS" or target.newbyteorder("=") in _RAW_NUMPY:
        return target
    raise SerializationError(f"numpy dtype {numpy_dtype!r} is not one the IR stores")


def decode_tensor(data, ir_dtype, shape, numpy_dtype=None) -> np.ndarray:
    """The read-only array `encode_tensor` wrote. `numpy_dtype` (a dtype string such
    as '<U3' or '>f4') restores the exact numpy dtype when it is not the IR
    dtype's storage type. The declaration is checked first (tensor_layout) and the
    data's length against it, so a hostile declaration allocates nothing."""
    layout = tensor_layout(ir_dtype, shape, numpy_dtype)
    dt, shape, target, count = layout.dtype, layout.shape, layout.target, layout.count
    if layout.encoded_size is not None and len(data) != layout.encoded_size:
        raise ValueError(f"{dt.name}{list(shape)} needs {layout.encoded_size} "
                         f"{'packed bytes' if dt.is_subbyte else 'bytes'}, got {len(data)}")
    if dt.is_subbyte:
        arr = unpack(data, dt, shape)
    elif layout.encoded_size is None:
        arr = _decode_json_tensor(data, shape, target, count)
    else:
        raw_dtype = target.newbyteorder("<") if target.byteorder == ">" else target
        arr = np.frombuffer(data, raw_dtype).reshape(shape)
    if arr.dtype != target:
        arr = arr.astype(target)
    return frozen_array(arr)


def _decode_json_tensor(data, shape, target, count: int) -> np.ndarray:
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"a JSON tensor of {len(data)} bytes is over the {MAX_JSON_BYTES}-byte limit")
    if target.kind in "US" and count * target.itemsize > _STRING_EXPANSION * len(data) + _STRING_SLACK:
        raise ValueError(f"{count} strings of dtype {target.str} would take {count * target.itemsize} bytes "
                         f"from {len(data)} bytes of data")
    items = json.loads(bytes(data).decode("utf-8"))
    if not isinstance(items, list) or len(items) != count:
        raise ValueError(f"expected {count} JSON items")
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr.reshape(shape)


def _encoded_size(arr: np.ndarray, ir_dtype: str):
    """Bytes the encoding takes when it is known from dtype and shape (None for JSON)."""
    dt = lookup_dtype(ir_dtype)
    if dt.is_subbyte:
        return packed_size(arr.size, dt)
    if dt.kind == "string" or _is_object(arr):
        return None
    return arr.size * arr.dtype.itemsize


# ---- program -> parts -------------------------------------------------------

class _Writer:
    """Collects distinct tensors (by digest) while the graph is turned into JSON."""

    def __init__(self):
        self.tensors: dict = {}  # digest -> array
        self.table: dict = {}  # digest -> {"dtype", "numpy", "shape"}

    def tensor(self, arr: np.ndarray, ir_dtype=None) -> dict:
        d = tensor_digest(arr)
        ir_name = _storage_dtype_name(arr, ir_dtype)
        entry = self.table.get(d)
        if entry is None:
            self.tensors[d] = arr
            self.table[d] = {"dtype": ir_name, "numpy": arr.dtype.str, "shape": list(arr.shape)}
        elif entry["dtype"] != ir_name:  # one array used under two dtypes: keep it full width
            entry["dtype"] = from_numpy(arr).name
        return {"$tensor": d}

    def value(self, v, ir_dtype=None):
        if isinstance(v, np.ndarray):
            return self.tensor(v, ir_dtype)
        if isinstance(v, np.generic):
            return {"$scalar": v.dtype.str, "value": v.item()}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, bytes):
            return {"$bytes": v.hex()}
        if isinstance(v, tuple):
            return {"$tuple": [self.value(x) for x in v]}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if hasattr(v, "items"):
            return {"$dict": [[self.value(k), self.value(v[k])] for k in sorted(v)]}
        raise SerializationError(f"cannot serialize attribute value of type {type(v).__name__}")

    def var(self, v: Var) -> dict:
        t = v.type
        if t.is_tensor and t.shape is not None:
            out = {"name": v.name, "dtype": t.dtype, "shape": list(t.shape)}
        else:  # unknown rank, sequence, map, optional: the type's text form
            out = {"name": v.name, "type": str(t)}
        if v.val is not None:
            out["val"] = self.tensor(v.val, v.type.dtype)
        return out

    def op(self, op: Op, defined: set) -> dict:
        ins = {}
        for k in sorted(op.inputs):
            v = op.inputs[k]
            for x in (v if isinstance(v, tuple) else (v,)):
                if x.name not in defined:
                    raise SerializationError(f"{op.op_type} {op.name!r}: input {k!r} uses "
                                             f"undefined value {x.name!r}")
            ins[k] = [x.name for x in v] if isinstance(v, tuple) else v.name
        out = {"type": op.op_type, "name": op.name, "inputs": ins,
               "outputs": [self.var(v) for v in op.outputs]}
        if op.attrs:
            sub = op.attrs.get("dtype") if op.op_type == "const" else None
            out["attrs"] = {k: self.value(op.attrs[k], sub if k == "val" else None)
                            for k in sorted(op.attrs)}
        if op.blocks:
            out["blocks"] = [self.block(b, defined) for b in op.blocks]
        defined.update(v.name for v in op.outputs)
        return out

    def block(self, block: Block, defined: set) -> dict:
        defined.update(v.name for v in block.inputs)
        ops = [self.op(op, defined) for op in block.ops]
        for v in block.outputs:
            if v.name not in defined:
                raise SerializationError(f"block output {v.name!r} is not defined")
        return {"inputs": [self.var(v) for v in block.inputs], "ops": ops,
                "outputs": [v.name for v in block.outputs]}


def _storage_dtype_name(arr: np.ndarray, hint) -> str:
    """The IR dtype to encode an array with: the hint when the values fit it, else full width."""
    if hint is not None:
        dt = lookup_dtype(hint)
        if not dt.is_subbyte or (arr.dtype.kind in "iu" and fits(arr, dt)):
            return dt.name
    try:
        return from_numpy(arr).name
    except ValueError as e:
        raise SerializationError(f"cannot serialize a {arr.dtype} array: {e}") from None


def to_parts(program: Program) -> tuple:
    """(graph: JSON-able dict, tensors: {digest: array}) with tensors stored once."""
    w = _Writer()
    functions = []
    with gc_paused():  # a large graph becomes many small dicts, none in cycles
        for name in sorted(program.functions):
            f = program.functions[name]
            functions.append({"name": f.name, "opset": f.opset, "block": w.block(f.block, set())})
    graph = {"format": FORMAT, "version": VERSION,
             "attrs": {k: w.value(program.attrs[k]) for k in sorted(program.attrs)},
             "functions": functions, "tensors": w.table}
    return graph, dict(w.tensors)


# ---- parts -> program -------------------------------------------------------

class _Reader:
    def __init__(self, graph: dict, tensors: Mapping):
        self.table = graph.get("tensors", {})
        self.tensors = tensors
        self.frozen: dict = {}

    def tensor(self, d: str) -> np.ndarray:
        arr = self.frozen.get(d)
        if arr is None:
            if d not in self.tensors:
                raise SerializationError(f"tensor {d} is missing")
            arr = frozen_array(self.tensors[d])
            self.frozen[d] = arr
        return arr

    def value(self, v):
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$tensor" in v:
            return self.tensor(v["$tensor"])
        if "$scalar" in v:
            return np.array(v["value"], dtype=_scalar_dtype(v["$scalar"]))[()]
        if "$tuple" in v:
            return tuple(self.value(x) for x in v["$tuple"])
        if "$dict" in v:
            return pmap({_hashable(self.value(k)): self.value(x) for k, x in v["$dict"]})
        if "$bytes" in v:
            return bytes.fromhex(v["$bytes"])
        raise SerializationError(f"unknown attribute encoding {sorted(v)}")

    def var(self, d: dict) -> Var:
        val = self.tensor(d["val"]["$tensor"]) if "val" in d else None
        if "type" in d:  # unknown rank, sequence, map, optional: the type's text form
            return Var(d["name"], _typed(d["name"], d["type"]), val)
        return Var(d["name"], _tensor_type(d["name"], d["dtype"], d["shape"]), val)

    def op(self, d: dict, env: dict) -> Op:
        try:
            return self._op(d, env)
        except SerializationError as e:
            where = f"{d.get('type')} {d.get('name')!r}" if isinstance(d, dict) else "an op"
            raise SerializationError(e.args[0] if str(e).startswith(where) else f"{where}: {e}") from None

    def _op(self, d: dict, env: dict) -> Op:
        def ref(name):
            if name not in env:
                raise SerializationError(f"{d['type']} {d['name']!r}: unknown value {name!r}")
            return env[name]

        ins = {k: tuple(ref(n) for n in v) if isinstance(v, list) else ref(v)
               for k, v in d["inputs"].items()}
        attrs = {k: self.value(v) for k, v in d.get("attrs", {}).items()}
        blocks = tuple(self.block(b, env) for b in d.get("blocks", ()))
        outs = []
        for o in d["outputs"]:
            var = self.var(o)
            if d["type"] == "const" and var.val is None and isinstance(attrs.get("val"), np.ndarray):
                var = Var(var.name, var.type, attrs["val"])
            outs.append(var)
        env.update((v.name, v) for v in outs)
        return Op.make(d["type"], d["name"], ins, outs, attrs, blocks)

    def block(self, d: dict, env: dict) -> Block:
        ins = [self.var(v) for v in d["inputs"]]
        env.update((v.name, v) for v in ins)
        ops = [self.op(o, env) for o in d["ops"]]
        outs = []
        for n in d["outputs"]:
            if n not in env:
                raise SerializationError(f"block output {n!r} is not defined")
            outs.append(env[n])
        return Block.make(ins, ops, outs)


def _tensor_type(name, dtype, shape) -> TensorType:
    """A value's declared type, checked: a known dtype and a shape of at most MAX_RANK
    dimensions, each a non-negative integer or a symbol (a string)."""
    if not isinstance(name, str):
        raise SerializationError(f"value name {_short_repr(name)} is not a string")
    try:
        dt = lookup_dtype(dtype)
    except (UnknownDType, TypeError) as e:
        raise SerializationError(f"value %{name}: {e}") from None
    if not isinstance(shape, list) or len(shape) > MAX_RANK \
            or not all((type(s) is int and s >= 0) or isinstance(s, str) for s in shape):
        raise SerializationError(f"value %{name}: shape {_short_repr(shape)} is not a list of at most "
                                 f"{MAX_RANK} non-negative integers or symbols")
    return TensorType(dt.name, tuple(shape))


def _typed(name, text):
    if not isinstance(name, str):
        raise SerializationError(f"value name {_short_repr(name)} is not a string")
    if not isinstance(text, str) or len(text) > 1000:
        raise SerializationError(f"value %{name}: type {_short_repr(text)} is not a type's text form")
    try:
        return parse_type(text)
    except (ValueError, RecursionError) as e:
        raise SerializationError(f"value %{name}: {e}") from None


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def _scalar_dtype(name) -> np.dtype:
    """A numpy scalar attribute's dtype: numeric only (a declared 'S2000000000' would
    allocate 2 GB for one value)."""
    try:
        dt = np.dtype(name) if isinstance(name, str) and len(name) <= 16 else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "biufc" or dt.itemsize > 16:
        raise SerializationError(f"scalar attribute of dtype {_short_repr(name)}: not a numeric numpy dtype")
    return dt


# What a hostile graph can make the reader raise besides its own errors: wrong JSON types,
# values out of range, nesting deeper than the interpreter's stack, sizes beyond memory.
_MALFORMED = (KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError, RecursionError,
              MemoryError)


def _malformed(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, MemoryError):
        return "declares more than fits in memory"
    return f"malformed graph: {type(e).__name__}: {e}"


def from_parts(graph: dict, tensors: Mapping) -> Program:
    """The Program `to_parts` took apart; arrays are made read-only (copied only if writeable)."""
    if not isinstance(graph, dict) or graph.get("format") != FORMAT:
        raise SerializationError("not a weightpress graph (missing format marker)")
    if graph.get("version") != VERSION:
        raise SerializationError(f"unknown format version {graph.get('version')!r} (this reader knows {VERSION})")
    r = _Reader(graph, tensors)
    try:
        with gc_paused():
            functions = [Function(f["name"], r.block(f["block"], {}), f["opset"]) for f in graph["functions"]]
            attrs = {k: r.value(v) for k, v in graph.get("attrs", {}).items()}
        return Program.make(functions, attrs)
    except SerializationError:
        raise
    except _MALFORMED as e:
        raise SerializationError(_malformed(e)) from None


# ---- the file --------------------------------------------------------------

def save(program: Program, path) -> None:
    """Write `program` to one file, atomically and durably (ir.atomic: a temp file beside it,
    fsync'd, then renamed)."""
    graph, tensors = to_parts(program)

    def fill(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(GRAPH_MEMBER, json.dumps(graph, sort_keys=True, separators=(",", ":")))
            for d, arr in tensors.items():
                ir_dtype = graph["tensors"][d]["dtype"]
                if _raw_member(arr, ir_dtype):
                    _write_raw_member(zf, tensor_member(d), arr, ir_dtype)
                else:
                    zf.writestr(tensor_member(d), encode_tensor(arr, ir_dtype))

    write_file(path, fill, fsync=True, suffix=".wpz")


# Tensors of at least this many bytes whose encoding is their own bytes (numbers stored as
# they are in memory, little-endian) are written in chunks and, on load, mapped from the file
# (ir.lazy) rather than read: members are stored uncompressed, so a member is a region of
# the file. Smaller ones are read: a map per tensor would cost more than the bytes.
LAZY_MIN_BYTES = 1 << 20


def _raw_member(arr, ir_dtype) -> bool:
    arr = np.asarray(arr)
    dt = lookup_dtype(ir_dtype)
    return (arr.nbytes >= LAZY_MIN_BYTES and not dt.is_subbyte and dt.kind != "string"
            and not _is_object(arr) and arr.dtype.byteorder in ("<", "=", "|"))


def _write_raw_member(zf: zipfile.ZipFile, member: str, arr: np.ndarray, ir_dtype) -> None:
    """One tensor's bytes into the archive chunk by chunk: no copy of the whole tensor (a
    file-backed one is read through its map and its pages given back after)."""
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = np.asarray(arr).nbytes
    zip64 = info.file_size > zipfile.ZIP64_LIMIT
    info.extra = _alignment_extra(zf, member, zip64)
    with zf.open(info, "w", force_zip64=zip64) as out:
        write_tensor(out, arr, ir_dtype)


_ALIGN = 64  # a mapped member starts at a multiple of this: numpy reads aligned arrays faster
_PAD_ID = 0xD935  # the extra field id zip aligners use for padding (readers skip unknown ids)


def _alignment_extra(zf: zipfile.ZipFile, member: str, zip64: bool) -> bytes:
    """A padding extra field that makes the member's data start at a multiple of _ALIGN
    (b"" where the position is unknown: the reader finds the data wherever it starts)."""
    try:
        at = zf.fp.tell()
    except (AttributeError, OSError):
        return b""
    header = 30 + len(member.encode("utf-8")) + (20 if zip64 else 0)
    pad = (-(at + header + 4)) % _ALIGN
    return _PAD_ID.to_bytes(2, "little") + pad.to_bytes(2, "little") + bytes(pad)


def _member_offset(fh, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start in the file: after its local header (whose name
    and extra field lengths may differ from the central directory's)."""
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise SerializationError(f"member {info.filename}: no local header at offset {info.header_offset}")
    name_len = int.from_bytes(head[26:28], "little")
    extra_len = int.from_bytes(head[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def _mappable(info: zipfile.ZipInfo, layout) -> bool:
    """Whether a member can be a file-backed array (ir.lazy): stored, raw little-endian
    numbers (big-endian in memory is converted on decoding, a map cannot), LAZY_MIN_BYTES
    or more."""
    return (info.compress_type == zipfile.ZIP_STORED and layout.encoded_size is not None
            and not layout.dtype.is_subbyte and layout.encoded_size >= LAZY_MIN_BYTES
            and layout.target.kind not in "OUS" and layout.target.byteorder != ">")


def _mapped_member(fh, path: str, info: zipfile.ZipInfo, layout) -> np.ndarray:
    """The (mappable, checked) member as a file-backed array; the caller checks its digest,
    hashed from the file in chunks."""
    from ir import lazy

    offset = _member_offset(fh, info)
    try:
        return lazy.file_array(path, offset, layout.target, layout.shape, length=info.file_size)
    except lazy.WeightFileError as e:
        raise SerializationError(f"member {info.filename}: {e}") from None


def _member_info(zf: zipfile.ZipFile, member: str) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(member)
    except KeyError:
        raise SerializationError(f"missing member {member}") from None


def _check_member(info: zipfile.ZipInfo, expected: Optional[int], limit: int) -> None:
    """Refuse a member whose declared size is not the expected one (or over `limit` when
    unknown), or more than its compressed bytes can hold, before reading it."""
    size = info.file_size
    if expected is not None and size != expected:
        raise SerializationError(f"member {info.filename}: cannot decode (it holds {size} bytes, its table "
                                 f"entry needs {expected})")
    if size > limit:
        raise SerializationError(f"member {info.filename} holds {size} bytes, over the {limit}-byte limit")
    packed = info.compress_size if info.compress_type != zipfile.ZIP_STORED else size
    if size > max(packed, 1) * MAX_INFLATION or (info.compress_type == zipfile.ZIP_STORED
                                                 and info.compress_size != size):
        raise SerializationError(f"member {info.filename} claims {size} bytes from {info.compress_size} "
                                 "stored bytes")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """The member's bytes as a read-only uint8 array of its (checked) declared size, read in
    bounded chunks straight into it (zipfile checks the CRC at the end)."""
    try:
        buf = np.empty(info.file_size, np.uint8)
    except MemoryError:
        raise SerializationError(f"member {info.filename}: {info.file_size} bytes do not fit in memory") from None
    view = memoryview(buf)
    with zf.open(info) as f:
        at = 0
        while at < info.file_size:
            n = f.readinto(view[at:at + _READ_CHUNK])
            if not n:
                raise SerializationError(f"member {info.filename} ends after {at} of {info.file_size} bytes")
            at += n
        if f.read(1):
            raise SerializationError(f"member {info.filename} holds more than its declared {info.file_size} bytes")
    buf.flags.writeable = False
    return buf


def _read_tensors(zf: zipfile.ZipFile, table: dict, fh=None, path: Optional[str] = None) -> dict:
    """{digest: array}; with the open file and its path, big raw members are mapped, not
    read (their digests are still checked, hashed from the file in chunks)."""
    tensors = {}
    for d, info in table.items():
        if not is_digest(d):
            raise SerializationError(f"tensor table key {_short_repr(d)} is not a digest")
        if not isinstance(info, dict):
            raise SerializationError(f"tensor {d[:12]}: table entry is not an object")
        member = tensor_member(d)
        try:
            layout = tensor_layout(info.get("dtype"), info.get("shape"), info.get("numpy"))
        except SerializationError as e:
            raise SerializationError(f"{member}: {e}") from None
        zinfo = _member_info(zf, member)
        mappable = path is not None and _mappable(zinfo, layout)
        _check_member(zinfo, layout.encoded_size, zinfo.file_size if mappable else MAX_JSON_BYTES)
        if mappable:
            mapped = _mapped_member(fh, path, zinfo, layout)
            if tensor_digest(mapped) != d:
                raise SerializationError(f"{member}: content does not match its digest")
            tensors[d] = mapped
            continue
        data = _read_member(zf, zinfo)
        try:
            arr = decode_tensor(data, info["dtype"], info["shape"], info.get("numpy"))
        except (ValueError, TypeError, KeyError, PackingError) as e:
            raise SerializationError(f"{member}: cannot decode ({e})") from None
        if tensor_digest(arr) != d:
            raise SerializationError(f"{member}: content does not match its digest")
        tensors[d] = arr
    return tensors


def _check_archive(zf: zipfile.ZipFile, path: str) -> None:
    """The members together may not claim more compressed bytes than the file holds
    (overlapping members would let one deflate stream be inflated many times)."""
    total = sum(i.compress_size for i in zf.infolist())
    size = os.path.getsize(path)
    if total > size:
        raise SerializationError(f"its members claim {total} compressed bytes, the file holds {size}")


def _read_graph(zf: zipfile.ZipFile) -> dict:
    info = _member_info(zf, GRAPH_MEMBER)
    _check_member(info, None, MAX_JSON_BYTES)
    raw = _read_member(zf, info)
    try:
        with gc_paused():
            graph = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SerializationError(f"{GRAPH_MEMBER} is not valid JSON ({e})") from None
    except RecursionError:
        raise SerializationError(f"{GRAPH_MEMBER} is nested too deeply") from None
    if not isinstance(graph, dict) or not isinstance(graph.get("tensors"), dict):
        raise SerializationError(f"{GRAPH_MEMBER} has no tensor table")
    if graph.get("format") == FORMAT and graph.get("version") != VERSION:
        raise SerializationError(f"unknown format version {graph.get('version')!r} (this reader knows {VERSION})")
    return graph


def load(path) -> Program:
    """Read a file `save` wrote; a damaged, hostile or invalid file raises SerializationError
    naming it and why (see the module docstring for the bounds on what it may allocate)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:  # a path that cannot be opened is an OSError, as for open()
        return _load_open(fh, path)


def _load_open(fh, path: str) -> Program:
    try:
        with zipfile.ZipFile(fh, "r") as zf:
            _check_archive(zf, path)
            graph = _read_graph(zf)
            tensors = _read_tensors(zf, graph["tensors"], fh, path)
        program = from_parts(graph, tensors)
        return _validated(program)
    except OSError as e:  # the file opened: what fails now is its content (a seek before its start)
        raise SerializationError(f"{path}: damaged or not a weightpress file ({e.strerror or e})") from None
    except SerializationError as e:
        raise type(e)(f"{path}: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as e:
        # zipfile reports truncation and CRC failures as BadZipFile (or EOFError / ValueError),
        # an unknown compression method as NotImplementedError
        raise SerializationError(f"{path}: damaged or not a weightpress file ({e})") from None
    except (RecursionError, MemoryError, OverflowError) as e:
        raise SerializationError(f"{path}: {_malformed(e)}") from None


def _validated(program: Program) -> Program:
    from ir.validate import validate

    try:
        return validate(program)
    except InvalidProgram as e:
        raise InvalidProgramFile(f"invalid program: {e}") from None


def tensors_of(program: Program) -> dict:
    """{digest: array} of every tensor in the program (what parse_program needs for large consts)."""
    return to_parts(program)[1]
