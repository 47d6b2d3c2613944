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

_TENSOR_MEMO: dict[int, tuple] = {}


def _forget(key):
    return lambda _ref: _TENSOR_MEMO.pop(key, None)


def tensor_digest(arr: np.ndarray) -> str:
    """sha256 over numpy dtype, shape and bytes; memoized per (read-only) array."""
    key = id(arr)
    hit = _TENSOR_MEMO.get(key)
    if hit is not None and hit[0]() is arr:
        return hit[1]
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    if arr.dtype.kind == "O":
        h.update(repr(arr.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(arr).data)
    d = h.hexdigest()
    if not arr.flags.writeable:  # only immutable arrays may be remembered
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
    if isinstance(v, tuple):
        return "(" + ",".join(x.name for x in v) + ")"
    return v.name


def _vars_sig(vs) -> str:
    # same text as f"{v.name}:{v.type}", without TensorType.__str__'s generator (hot path)
    return ";".join(v.name + ":" + v.type.dtype + "[" + ",".join(map(str, v.type.shape)) + "]"
                    for v in vs)


def op_fingerprint(op) -> bytes:
    fp = op._fp
    if fp is None:
        # one sha256 call over the joined parts: the same bytes as hashing them one by one
        # iterating a pmap is slow (pure python over its buckets): skip empty ones, read items once
        text = [op.op_type, "|", op.name, "|"]
        for k, v in (sorted(op.inputs.items()) if op.inputs else ()):
            text += [k, "=", _input_names(v), ","]
        text += ["|", _vars_sig(op.outputs), "|"]
        parts = ["".join(text).encode()]
        for k, v in (sorted(op.attrs.items()) if op.attrs else ()):
            parts += [k.encode(), b"=", encode_value(v), b","]
        for b in op.blocks:
            parts += [b"[", block_digest(b), b"]"]
        fp = hashlib.sha256(b"".join(parts)).digest()
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
    from ir.core import gc_paused

    with gc_paused():
        for name in sorted(program.functions):
            f = program.functions[name]
            h.update(f"fn {name} {f.opset}|".encode())
            h.update(block_digest(f.block))
    return h.hexdigest()
