"""Structural content digests, stable across processes, machines and hash seeds.

A tensor is hashed once (dtype + shape + bytes) and remembered for as long as
the array lives. An op's local fingerprint (type, name, attrs, input names,
output types, nested blocks) is memoized on the op; a program digest hashes
those fingerprints in order, so digesting a rewritten program re-hashes only
the ops the rewrite created.
"""
from __future__ import annotations

import hashlib
import weakref

import numpy as np

from ir.gcpause import gc_paused
from ir.lazy import region_digest

_TENSOR_MEMO: dict[int, tuple] = {}


def _forget(key):
    return lambda _ref: _TENSOR_MEMO.pop(key, None)


# Below this size hashing the bytes again is cheaper than remembering the digest
# (a weakref and a callback per array); the digest is the same either way.
_MEMO_MIN_BYTES = 4096


def tensor_digest(arr: np.ndarray) -> str:
    """sha256 over numpy dtype, shape and bytes; memoized per large (read-only) array.
    A file-backed array (ir.lazy) is hashed from its file in chunks, to the same digest."""
    big = arr.nbytes >= _MEMO_MIN_BYTES
    if big:
        key = id(arr)
        hit = _TENSOR_MEMO.get(key)
        if hit is not None and hit[0]() is arr:
            return hit[1]
    dt = arr.dtype
    header = f"{dt.str}|{arr.shape}|".encode()
    d = region_digest(arr, header) if big else None  # a file-backed array: hashed from its file
    if d is None:
        h = hashlib.sha256(header)
        if dt.kind == "O":
            h.update(repr(arr.tolist()).encode())
        else:
            h.update(arr.data if arr.flags.c_contiguous else np.ascontiguousarray(arr).data)
        d = h.hexdigest()
    if big and not arr.flags.writeable:  # only immutable arrays may be remembered
        try:
            _TENSOR_MEMO[key] = (weakref.ref(arr, _forget(key)), d)
        except TypeError:  # pragma: no cover - arrays support weakrefs
            pass
    return d


def encode_value(value) -> bytes:
    """A canonical byte encoding of an attribute value."""
    if isinstance(value, np.ndarray):
        return b"T" + tensor_digest(value).encode()
    if isinstance(value, np.generic):
        return b"N" + value.dtype.str.encode() + repr(value.item()).encode()
    if isinstance(value, bool) or value is None:
        return b"B" + repr(value).encode()
    if isinstance(value, (int, float, str, bytes)):
        return type(value).__name__.encode() + b":" + repr(value).encode()
    if isinstance(value, (tuple, list)):
        return b"(" + b",".join(encode_value(v) for v in value) + b")"
    if hasattr(value, "items"):
        return b"{" + b",".join(encode_value(k) + b"=" + encode_value(value[k])
                                for k in sorted(value)) + b"}"
    raise TypeError(f"cannot digest attribute value of type {type(value).__name__}")


def _input_names(v) -> str:
    if v.__class__ is tuple:
        return "(" + ",".join([x.name for x in v]) + ")"
    return v.name


def _inputs_text(ins) -> str:
    return "".join([k + "=" + _input_names(ins[k]) + "," for k in sorted(ins)])


_TYPE_TEXT: dict = {}  # TensorType -> str(TensorType); a program has few distinct types


def _type_text(t) -> str:
    # Only canonical types (int / str dims, as TensorType.of makes them) are remembered.
    # An equal non-canonical type (a dim 8.0 == 8) then hashes as its canonical twin,
    # which is what it means.
    text = _TYPE_TEXT.get(t)
    if text is None:
        if t.shape is None:  # unknown rank, or a sequence / map / optional type
            text = str(t)
            canonical = True
        else:
            text = t.dtype + "[" + ",".join(map(str, t.shape)) + "]"
            canonical = all(d.__class__ is int or d.__class__ is str for d in t.shape)
        if len(_TYPE_TEXT) < 65536 and canonical:
            _TYPE_TEXT[t] = text
    return text


def _vars_sig(vs) -> str:
    # same text as ";".join(f"{v.name}:{v.type}")
    if len(vs) == 1:
        v = vs[0]
        return v.name + ":" + _type_text(v.type)
    return ";".join(v.name + ":" + _type_text(v.type) for v in vs)


def op_fingerprint(op) -> bytes:
    fp = op._fp
    if fp is None:
        # one sha256 call over the joined parts: the same bytes as hashing them one by one
        text = (op.op_type + "|" + op.name + "|" + (_inputs_text(op.inputs) if op.inputs else "")
                + "|" + _vars_sig(op.outputs) + "|").encode()
        attrs, blocks = op.attrs, op.blocks
        if attrs or blocks:
            parts = [text]
            for k in sorted(attrs):
                parts += [k.encode(), b"=", encode_value(attrs[k]), b","]
            for b in blocks:
                parts += [b"[", block_digest(b), b"]"]
            text = b"".join(parts)
        fp = hashlib.sha256(text).digest()
        object.__setattr__(op, "_fp", fp)
    return fp


def block_digest(block) -> bytes:
    h = hashlib.sha256()
    h.update(_vars_sig(block.inputs).encode() + b"|")
    for op in block.ops:
        h.update(op_fingerprint(op))
    h.update(b"|" + _vars_sig(block.outputs).encode())
    return h.digest()


def program_digest(program) -> str:
    h = hashlib.sha256()
    for k in sorted(program.attrs):
        h.update(k.encode() + b"=" + encode_value(program.attrs[k]) + b",")
    with gc_paused():
        for name in sorted(program.functions):
            f = program.functions[name]
            h.update(f"fn {name} {f.opset}|".encode())
            h.update(block_digest(f.block))
    return h.hexdigest()
