"""Core ML's weight file (weights/weight.bin, the "MIL blob storage", version 2).

Layout, all little-endian, everything 64-byte aligned:

    header    (64 bytes)  uint32 count, uint32 version = 2, zero padding
    per blob  metadata (64 bytes): uint32 sentinel 0xDEADBEEF, uint32 dtype code,
              uint64 size in bytes, uint64 offset of the data,
              uint64 padding bits in the last byte (sub-byte data), zero padding;
              then the data at the next 64-byte boundary.

A const's BlobFileValue names the file and the offset of its *metadata*.
Sub-byte data is bit-packed LSB-first (ir.packing); the others are raw.
"""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from ir import lazy
from ir.dtypes import dtype as lookup_dtype
from ir.packing import pack, packed_size, unpack

ALIGN = 64
SENTINEL = 0xDEADBEEF
VERSION = 2
_HEADER = struct.Struct("<II")
_META = struct.Struct("<IIQQQ")

# IR dtype -> the storage's dtype code
CODES = {"fp16": 1, "fp32": 2, "uint8": 3, "int8": 4, "bf16": 5, "int16": 6, "uint16": 7, "int4": 8,
         "uint1": 9, "uint2": 10, "uint4": 11, "uint3": 12, "uint6": 13, "int32": 14, "uint32": 15}
DTYPES = {code: name for name, code in CODES.items()}


class BlobError(ValueError):
    """A weight file, or an offset into it, that does not hold what the model says."""


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# Raw values of at least this many bytes are file-backed (ir.lazy: read on demand, digests
# hashed from the file in chunks) when the reader maps its file; smaller ones, and sub-byte
# data (unpacked into fresh arrays), are read from the map as they are asked for.
LAZY_MIN_BYTES = 1 << 20


class BlobReader:
    """Reads values out of one weight file. `mapped` (a package on disk): the file is
    memory-mapped read-only and big raw values are file-backed arrays (ir.lazy), so importing
    reads the metadata only; otherwise (a file that may not outlive the import, such as a
    coremltools model's temporary directory) it is read into memory once. Arrays are
    read-only either way."""

    def __init__(self, path, mapped: bool = False):
        self.path = os.fspath(path)
        self.mapped = mapped
        with open(self.path, "rb") as f:
            if mapped and os.fstat(f.fileno()).st_size >= ALIGN:
                self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            else:
                self.data = f.read()  # bytes: immutable, so views of it are read-only
        if len(self.data) < ALIGN:
            raise BlobError(f"{self.path}: too short for a weight file ({len(self.data)} bytes)")
        _, version = _HEADER.unpack_from(self.data, 0)
        if version != VERSION:
            raise BlobError(f"{self.path}: weight file version {version}, expected {VERSION}")

    def read(self, offset: int, dt: str, shape: tuple) -> np.ndarray:
        """The value stored at `offset` (of its metadata), as IR storage of dtype `dt`."""
        if offset + _META.size > len(self.data):
            raise BlobError(f"{self.path}: offset {offset} is past the end of the file")
        sentinel, code, size, start, _ = _META.unpack_from(self.data, offset)
        if sentinel != SENTINEL:
            raise BlobError(f"{self.path}: no blob at offset {offset}")
        if DTYPES.get(code) != dt:
            raise BlobError(f"{self.path}: blob at offset {offset} holds {DTYPES.get(code, code)}, "
                            f"the model reads it as {dt}")
        if start + size > len(self.data):
            raise BlobError(f"{self.path}: blob at offset {offset} runs past the end of the file")
        count = int(np.prod(shape, dtype=np.int64))
        d = lookup_dtype(dt)
        if d.is_subbyte:
            return unpack(memoryview(self.data)[start:start + size], dt, tuple(shape))
        if size != count * d.storage.itemsize:
            raise BlobError(f"{self.path}: blob at offset {offset} has {size // d.storage.itemsize} values, "
                            f"the model reads {count} {list(shape)}")
        if self.mapped and size >= LAZY_MIN_BYTES:
            return lazy.file_array(self.path, start, d.storage, tuple(shape), length=size)
        return np.frombuffer(memoryview(self.data)[start:start + size], d.storage).reshape(shape)


class BlobWriter:
    """Collects values and writes one weight file; `add` returns the offset to cite."""

    def __init__(self):
        # (metadata offset, dtype code, size, the value, its IR dtype, padding bits): values
        # are encoded as they are written, one at a time (sub-byte ones packed then, not all
        # held packed at once), and a file-backed one's pages given back after
        self.blobs: list = []
        self.end = ALIGN  # where the next metadata goes

    def add(self, value: np.ndarray, dt: str) -> int:
        if dt not in CODES:
            raise BlobError(f"{dt} values cannot be stored in a Core ML weight file")
        d = lookup_dtype(dt)
        value = np.asarray(value)
        if d.is_subbyte:
            size = packed_size(value.size, dt)
            pad = size * 8 - value.size * d.bits
        else:
            size = value.size * d.storage.itemsize
            pad = 0
        offset = self.end
        self.blobs.append((offset, CODES[dt], size, value, dt, pad))
        self.end = _aligned(offset + ALIGN + size)
        return offset

    def write(self, path) -> None:
        with open(path, "wb") as f:
            f.write(_HEADER.pack(len(self.blobs), VERSION).ljust(ALIGN, b"\0"))
            for offset, code, size, value, dt, pad in self.blobs:
                f.seek(offset)
                start = offset + ALIGN
                f.write(_META.pack(SENTINEL, code, size, start, pad).ljust(ALIGN, b"\0"))
                f.write(_encoded(value, dt))
                lazy.release(value)


def _encoded(value: np.ndarray, dt: str):
    d = lookup_dtype(dt)
    if d.is_subbyte:
        return pack(value, dt)
    return np.ascontiguousarray(value, d.storage).reshape(-1).view(np.uint8).data
