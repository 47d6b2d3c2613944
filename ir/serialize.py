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
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Mapping

import numpy as np
from pyrsistent import pmap

from ir.core import Block, Function, Op, Program, TensorType, Var, frozen_array, gc_paused
from ir.types import parse_type
from ir.digest import tensor_digest
from ir.dtypes import dtype as lookup_dtype, fits, from_numpy
from ir.packing import PackingError, pack, packed_size, unpack

FORMAT = "weightpress"
VERSION = 1
GRAPH_MEMBER = "graph.json"


class SerializationError(ValueError):
    """A file (or graph dict) that cannot be read back: names the file and the reason."""


def tensor_member(digest: str) -> str:
    return f"tensors/{digest}.bin"


# ---- one tensor <-> bytes ---------------------------------------------------

def _is_object(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "OUS"


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


def decode_tensor(data: bytes, ir_dtype, shape, numpy_dtype=None) -> np.ndarray:
    """The read-only array `encode_tensor` wrote. `numpy_dtype` (a dtype string such
    as '<U3' or '>f4') restores the exact numpy dtype when it is not the IR
    dtype's storage type."""
    dt = lookup_dtype(ir_dtype)
    shape = tuple(int(s) for s in shape)
    target = np.dtype(numpy_dtype) if numpy_dtype is not None else dt.storage
    if dt.is_subbyte:
        arr = unpack(data, dt, shape)
    elif dt.kind == "string" or target.kind in "OUS":
        items = json.loads(bytes(data).decode("utf-8"))
        if not isinstance(items, list) or len(items) != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"expected {int(np.prod(shape, dtype=np.int64))} JSON items")
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        arr = arr.reshape(shape)
    else:
        raw_dtype = target.newbyteorder("<") if target.byteorder == ">" else target
        count = int(np.prod(shape, dtype=np.int64))
        if len(data) != count * raw_dtype.itemsize:
            raise ValueError(f"{dt.name}{list(shape)} needs {count * raw_dtype.itemsize} bytes, got {len(data)}")
        arr = np.frombuffer(data, raw_dtype).reshape(shape)
    if arr.dtype != target:
        arr = arr.astype(target)
    return frozen_array(arr)


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
            return np.array(v["value"], dtype=np.dtype(v["$scalar"]))[()]
        if "$tuple" in v:
            return tuple(self.value(x) for x in v["$tuple"])
        if "$dict" in v:
            return pmap({_hashable(self.value(k)): self.value(x) for k, x in v["$dict"]})
        if "$bytes" in v:
            return bytes.fromhex(v["$bytes"])
        raise SerializationError(f"unknown attribute encoding {sorted(v)}")

    def var(self, d: dict) -> Var:
        val = self.tensor(d["val"]["$tensor"]) if "val" in d else None
        t = parse_type(d["type"]) if "type" in d else TensorType(d["dtype"], tuple(d["shape"]))
        return Var(d["name"], t, val)

    def op(self, d: dict, env: dict) -> Op:
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


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


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
    except SerializationError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise SerializationError(f"malformed graph: {type(e).__name__}: {e}") from None
    return Program.make(functions, attrs)


# ---- the file --------------------------------------------------------------

def save(program: Program, path) -> None:
    """Write `program` to one file, atomically (a temp file in the same directory, then rename)."""
    graph, tensors = to_parts(program)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wpz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(GRAPH_MEMBER, json.dumps(graph, sort_keys=True, separators=(",", ":")))
                for d, arr in tensors.items():
                    zf.writestr(tensor_member(d), encode_tensor(arr, graph["tensors"][d]["dtype"]))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_tensors(zf: zipfile.ZipFile, table: dict, path: str) -> dict:
    tensors = {}
    for d, info in table.items():
        member = tensor_member(d)
        try:
            data = zf.read(member)
        except KeyError:
            raise SerializationError(f"{path}: missing member {member}") from None
        try:
            arr = decode_tensor(data, info["dtype"], info["shape"], info.get("numpy"))
        except (ValueError, TypeError, KeyError, PackingError) as e:
            raise SerializationError(f"{path}: {member}: cannot decode ({e})") from None
        if tensor_digest(arr) != d:
            raise SerializationError(f"{path}: {member}: content does not match its digest")
        tensors[d] = arr
    return tensors


def load(path) -> Program:
    """Read a file `save` wrote; a damaged file raises SerializationError naming it and why."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path, "r") as zf:
            try:
                raw = zf.read(GRAPH_MEMBER)
            except KeyError:
                raise SerializationError(f"{path}: missing member {GRAPH_MEMBER}") from None
            try:
                with gc_paused():
                    graph = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SerializationError(f"{path}: {GRAPH_MEMBER} is not valid JSON ({e})") from None
            if not isinstance(graph, dict) or not isinstance(graph.get("tensors"), dict):
                raise SerializationError(f"{path}: {GRAPH_MEMBER} has no tensor table")
            if graph.get("format") == FORMAT and graph.get("version") != VERSION:
                raise SerializationError(f"{path}: unknown format version {graph.get('version')!r} "
                                         f"(this reader knows {VERSION})")
            tensors = _read_tensors(zf, graph["tensors"], path)
    except SerializationError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        # zipfile reports truncation and CRC failures as BadZipFile (or EOFError / ValueError)
        raise SerializationError(f"{path}: damaged or not a weightpress file ({e})") from None
    try:
        return from_parts(graph, tensors)
    except SerializationError as e:
        raise SerializationError(f"{path}: {e}") from None


def tensors_of(program: Program) -> dict:
    """{digest: array} of every tensor in the program (what parse_program needs for large consts)."""
    return to_parts(program)[1]
