"""Bit-packing of sub-byte integer arrays (uint1/2/3/4/6, int4).

Layout, as Core ML stores it: elements in row-major order, each taking
`bits` bits, LSB-first: element 0 sits in the lowest bits of byte 0, and a
3- or 6-bit value may straddle two bytes. int4 is stored as 4-bit two's
complement. The last byte is zero-padded.
"""
from __future__ import annotations

import numpy as np

from ir.dtypes import DType, dtype as lookup_dtype


class PackingError(ValueError):
    """Values that do not fit the width, or packed data of the wrong size."""


def _subbyte(ir_dtype) -> DType:
    dt = lookup_dtype(ir_dtype)
    if not dt.is_subbyte:
        raise PackingError(f"{dt.name} is not a sub-byte integer dtype")
    return dt


def packed_size(count: int, ir_dtype) -> int:
    """Bytes that `count` packed elements of the dtype take."""
    return (count * _subbyte(ir_dtype).bits + 7) // 8


def _check_range(flat: np.ndarray, dt: DType) -> None:
    if flat.size and (flat.min() < dt.min or flat.max() > dt.max):
        bad = flat[(flat < dt.min) | (flat > dt.max)][0]
        raise PackingError(f"value {int(bad)} does not fit in {dt.name} [{dt.min}, {dt.max}]")


def pack(values, ir_dtype) -> bytes:
    """The packed bytes of an integer array (any shape, read in row-major order)."""
    dt = _subbyte(ir_dtype)
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind not in "iub":
        raise PackingError(f"cannot pack {flat.dtype} values as {dt.name}")
    _check_range(flat, dt)
    if 8 % dt.bits == 0:
        return _pack_aligned(flat, dt.bits)
    codes = (flat.astype(np.int16) & ((1 << dt.bits) - 1)).astype(np.uint8)  # two's complement for int4
    # general widths (3, 6): one bit plane per element bit, then packbits LSB-first
    planes = (codes[:, None] >> np.arange(dt.bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


_PACK_CHUNK = 1 << 20  # elements per pass: temporaries stay small, no fresh pages per weight


def _pack_aligned(flat: np.ndarray, bits: int) -> bytes:
    """Widths 1, 2, 4: a whole number of elements per byte, so shift and OR lanes, a chunk
    at a time into one output. The low `bits` bits of each (range-checked) value are its
    code: an integer cast to uint8 keeps the low byte, two's complement for int4."""
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty(-(-flat.size // per), np.uint8)
    for start in range(0, flat.size, _PACK_CHUNK):
        codes = flat[start:start + _PACK_CHUNK].astype(np.uint8) & mask
        if codes.size % per:  # the last byte is zero-padded
            codes = np.concatenate([codes, np.zeros(per - codes.size % per, np.uint8)])
        lanes = codes.reshape(-1, per)
        dst = out[start // per:start // per + lanes.shape[0]]
        np.copyto(dst, lanes[:, 0])
        for i in range(1, per):
            dst |= lanes[:, i] << np.uint8(i * bits)
    return out.tobytes()


def unpack(data, ir_dtype, shape) -> np.ndarray:
    """A read-only array of the dtype's storage type, shaped `shape`, from packed bytes."""
    dt = _subbyte(ir_dtype)
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(data, np.uint8)
    if raw.size != packed_size(count, dt):
        raise PackingError(f"{dt.name}{list(shape)} needs {packed_size(count, dt)} packed bytes, got {raw.size}")
    if 8 % dt.bits == 0:
        per = 8 // dt.bits
        shifts = (np.arange(per, dtype=np.uint8) * dt.bits)
        codes = ((raw[:, None] >> shifts) & ((1 << dt.bits) - 1)).reshape(-1)[:count]
    else:
        planes = np.unpackbits(raw, bitorder="little", count=count * dt.bits).reshape(count, dt.bits)
        codes = (planes << np.arange(dt.bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)
    if dt.kind == "int":  # sign-extend the two's complement code
        codes = ((codes.astype(np.int16) ^ (1 << (dt.bits - 1))) - (1 << (dt.bits - 1)))
    out = codes.astype(dt.storage).reshape(shape)
    out.flags.writeable = False
    return out
