"""Weight references: what a distributed task carries instead of a weight's bytes.

A task for a remote worker (pipeline.distributed) is pickled with every array
replaced by a reference, so that the task and its result are a few hundred bytes
whatever the weights weigh, and the scheduler between client and workers never
carries tensor bytes:

* `FileRegion(path, offset, length, dtype, shape, digest)`: bytes already in a
  weight file (an ir.lazy array: ONNX external data, a spill file). The worker maps
  the region read-only itself (ir.lazy.file_array).
* `Stored(holder, digest, dtype, shape)`: a tensor in a content-addressed store every
  worker reaches: a DiskCache on a shared path, where the tensor is kept as a program
  of one const (`holder` is that program's digest; DiskCache's own public API, so
  the store's atomic writes and checks are the ones every cache file gets). An
  in-memory weight of a task is put there by the client before the task leaves (once
  per distinct tensor); every array of a result is put there by the worker that made it.
* `Inline(dtype, shape, data)`: an array under REF_MIN_BYTES, sent as its bytes (a
  file per scale vector would cost more than it saves).

Invariants:
* Every reference is checked against its digest when it is read. A FileRegion is
  re-hashed from its file (ir.lazy streams it): a file that no longer holds the bytes
  the client hashed is `WeightFileChanged` (ir.lazy's, a ValueError naming the file).
  A Stored tensor is re-hashed by the store (DiskCache.get_program checks every
  tensor and the program's digest, drops a corrupt file) and a missing one is
  `StoreMiss`: never a wrong array.
* Writes are atomic and named by digest (DiskCache: temporary + rename), so a worker
  killed while writing leaves a temporary, never a partial tensor under a digest's
  name; two workers writing the same digest write the same bytes.
* Arrays come back read-only (the IR's rule), whatever kind of reference carried them.
* Payloads are pickles exchanged in memory between a client and its own workers (as
  Dask's own tasks are), never written to disk by this module; the store holds no pickle
  (ir.serialize encodings only). Unpickling resolves only the globals of this project's
  packages, numpy, pyrsistent and a few plain builtins (`_ALLOWED`), so a payload cannot
  name os.system or eval even if one were forged.
"""
from __future__ import annotations

import io
import pickle
from typing import NamedTuple

import numpy as np

from ir import lazy
from ir.core import Block, Function, Op, Program, Var
from ir.digest import tensor_digest
from ir.dtypes import from_numpy
from ir.types import TensorType

# Arrays below this many bytes travel inline. Above it a reference (~250 pickled bytes)
# is far smaller than the array: scheduler bytes stay a small fraction of weight bytes.
REF_MIN_BYTES = 4096
_REFERABLE_KINDS = "biuf"  # what ir.serialize stores raw (strings and objects travel as pickles)
_HOLDER = "t"  # the const's name in a holder program


class WeightRefError(ValueError):
    """A weight reference that cannot be resolved; the message names the tensor and the store."""


class StoreMiss(WeightRefError):
    pass


class FileRegion(NamedTuple):
    path: str
    offset: int
    length: int
    dtype: str  # numpy dtype.str
    shape: tuple
    digest: str


class Stored(NamedTuple):
    holder: str  # digest of the one-const program the store keeps the tensor in
    digest: str
    dtype: str
    shape: tuple


class Inline(NamedTuple):
    dtype: str
    shape: tuple
    data: bytes


# ---- the store: a DiskCache holding each tensor as a one-const program ---------------------

def holder_program(arr: np.ndarray) -> Program:
    """The program of one const whose value is `arr` (how a tensor is kept in a DiskCache)."""
    var = Var(_HOLDER, TensorType.of(from_numpy(arr).name, arr.shape), arr)
    const = Op.make("const", _HOLDER, outputs=(var,), attrs={"val": arr})
    return Program.make([Function("main", Block.make(ops=[const], outputs=(var,)))])


def put(store, arr: np.ndarray) -> Stored:
    """Put `arr` in the store (a no-op for a tensor already there) and name it."""
    if arr.flags.writeable:
        # a fresh result on a worker: a read-only view of it (its flag left alone), so that the
        # IR takes it without a copy and its digest is computed once, not at every use
        arr = arr.view()
        arr.flags.writeable = False
    holder = holder_program(arr)
    store.put_program(holder)
    return Stored(holder.digest, tensor_digest(arr), arr.dtype.str, tuple(arr.shape))


def get(store, ref: Stored) -> np.ndarray:
    program = store.get_program(ref.holder)
    if program is None:
        raise StoreMiss(f"tensor {ref.digest[:12]} ({np.dtype(ref.dtype).name}{list(ref.shape)}) is not in the "
                        f"shared store {getattr(store, 'root', store)} (a store the workers do not share, "
                        "evicted, or corrupt and dropped)")
    arr = program.main.ops[0].attrs["val"]
    if tensor_digest(arr) != ref.digest or arr.dtype.str != ref.dtype or tuple(arr.shape) != tuple(ref.shape):
        raise StoreMiss(f"tensor {ref.digest[:12]}: the store holds another tensor under its name")
    return arr


def read_region(ref: FileRegion) -> np.ndarray:
    """The region mapped read-only, after checking its file still holds the digest's bytes."""
    arr = lazy.file_array(ref.path, ref.offset, ref.dtype, ref.shape, ref.length)
    if tensor_digest(arr) != ref.digest:
        raise lazy.WeightFileChanged(f"{ref.path}: the weight file changed on disk during the run (the "
                                     f"{ref.length} bytes at offset {ref.offset} no longer have the digest "
                                     f"{ref.digest[:12]} they had when the run started)")
    return arr


# ---- pickling with references ----------------------------------------------------------------

def _referable(arr) -> bool:
    return (type(arr) is np.ndarray and arr.dtype.kind in _REFERABLE_KINDS and arr.dtype.isnative
            and not arr.dtype.fields)


class _Pickler(pickle.Pickler):
    def __init__(self, file, store, memo: dict):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.store, self.refs = store, memo

    def persistent_id(self, obj):
        if not _referable(obj):
            return None
        hit = self.refs.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        ref = self._reference(obj)
        self.refs[id(obj)] = (obj, ref)  # keeps obj alive, so its id is not reused meanwhile
        return ref

    def _reference(self, arr: np.ndarray):
        if arr.nbytes < REF_MIN_BYTES:
            return Inline(arr.dtype.str, tuple(arr.shape), np.ascontiguousarray(arr).tobytes())
        region = lazy.region_of(arr)
        if region is not None:
            lazy.verify(arr)  # a file already changed: say so here, before any work is sent
            return FileRegion(region.path, region.offset, region.length, region.dtype, region.shape,
                              tensor_digest(arr))
        return put(self.store, arr)


# what a job's pickle may name: the project's own packages and the libraries its values are made of
_ALLOWED_PACKAGES = frozenset({"ir", "stages", "pipeline", "numpy", "pyrsistent", "collections", "copyreg",
                               "functools", "toolz", "types"})
_ALLOWED_BUILTINS = frozenset({"tuple", "list", "dict", "set", "frozenset", "slice", "range", "complex",
                               "bytes", "bytearray", "str", "int", "float", "bool", "object", "getattr"})


class ForbiddenGlobal(WeightRefError):
    pass


def _allowed(module: str, name: str) -> bool:
    if module == "builtins":
        return name in _ALLOWED_BUILTINS
    return module.split(".", 1)[0] in _ALLOWED_PACKAGES


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, store):
        super().__init__(file)
        self.store = store
        self.loaded: dict = {}  # one array per reference: what was one object stays one

    def find_class(self, module, name):
        if not _allowed(module, name):
            raise ForbiddenGlobal(f"a task payload names {module}.{name}, which a weightpress job never holds")
        return super().find_class(module, name)

    def persistent_load(self, ref):
        arr = self.loaded.get(ref)
        if arr is None:
            arr = _READERS[type(ref)](self.store, ref)
            self.loaded[ref] = arr
        return arr


def _inline(_store, ref: Inline) -> np.ndarray:
    arr = np.frombuffer(ref.data, dtype=np.dtype(ref.dtype)).reshape(ref.shape)
    arr.flags.writeable = False  # frombuffer over bytes is read-only already; say it anyway
    return arr


_READERS = {Inline: _inline, FileRegion: lambda _store, ref: read_region(ref), Stored: get}


def dumps(obj, store, memo=None) -> bytes:
    """`obj` pickled with its arrays as references; in-memory arrays over REF_MIN_BYTES are
    put in `store` first. `memo` (a dict) shares references between calls, so an array
    several tasks carry is referenced (and stored) once."""
    buf = io.BytesIO()
    _Pickler(buf, store, {} if memo is None else memo).dump(obj)
    return buf.getvalue()


def loads(data: bytes, store):
    """What `dumps` pickled, each reference read back and checked against its digest."""
    return _Unpickler(io.BytesIO(data), store).load()


def references(data: bytes) -> list:
    """The references a payload carries (for tests and measurements), without reading any."""
    found = []

    class _Lister(pickle.Unpickler):
        def persistent_load(self, ref):
            found.append(ref)
            return None

    _Lister(io.BytesIO(data)).load()
    return found
