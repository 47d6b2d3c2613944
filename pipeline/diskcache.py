"""DiskCache: a content-addressed, size-bounded, crash-safe cache directory.

    <root>/tensors/ab/<digest>.bin     each distinct tensor once (ir.serialize encoding)
    <root>/graphs/<digest>.json        a program's graph (ir.serialize.to_parts), JSON
    <root>/entries/ab/<in>-<key>.json  (input digest, stage key) -> output digest + stats

Ten steps over a model that change a few weights add those weights (and
small graph files), not ten copies of the model. Every file is written to a
temporary name and renamed into place, tensors before the graph before the
entry, so a killed run leaves nothing that later loads half. On load, each
tensor is re-hashed against its name and the program against its digest: a
corrupt or truncated file is reported (CacheCorruptionWarning), deleted and
the value recomputed. A missing file (evicted) is a quiet miss. With
max_bytes, the least recently used files are deleted once the directory
grows past it. No pickle anywhere.
"""
from __future__ import annotations

import json
import mmap
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

from pyrsistent import freeze

from ir import Program
from ir.digest import tensor_digest
from ir.serialize import SerializationError, decode_tensor, encode_tensor, from_parts, to_parts
from pipeline.cache import Hit, jsonable_stats
from pipeline.errors import CacheCorruptionWarning


class _Corrupt(Exception):
    """A cache file exists but cannot be trusted (`handled`: already reported and dropped)."""

    def __init__(self, why: str, handled: bool = False):
        super().__init__(why)
        self.handled = handled


def _atomic_write(path: Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _read(path: Path):
    """The file's bytes; large files are memory-mapped read-only (no copy; the page
    cache backs the array, and an unlinked file stays readable while mapped)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < (1 << 20):
            return f.read()
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class DiskCache:
    def __init__(self, path, max_bytes: Optional[int] = None):
        self.root = Path(path)
        self.max_bytes = max_bytes
        for sub in ("tensors", "graphs", "entries"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._size = self.disk_bytes() if max_bytes is not None else 0
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # -- paths ----------------------------------------------------------------
    def _tensor_path(self, digest: str) -> Path:
        return self.root / "tensors" / digest[:2] / f"{digest}.bin"

    def _graph_path(self, digest: str) -> Path:
        return self.root / "graphs" / f"{digest}.json"

    def _entry_path(self, input_digest: str, stage_key: str) -> Path:
        return self.root / "entries" / input_digest[:2] / f"{input_digest}-{stage_key}.json"

    # -- reading --------------------------------------------------------------
    def _corrupt(self, path: Path, why: str) -> None:
        warnings.warn(f"cache file {path} is corrupt ({why}); dropping it and recomputing",
                      CacheCorruptionWarning, stacklevel=4)
        path.unlink(missing_ok=True)

    def _read_json(self, path: Path):
        data = path.read_bytes()  # FileNotFoundError: a quiet miss
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Corrupt(f"not JSON: {e}") from None

    def _touch(self, *paths) -> None:
        if self.max_bytes is not None:  # recency only matters when evicting
            for p in paths:
                try:
                    os.utime(p)
                except FileNotFoundError:
                    pass

    def lookup(self, input_digest: str, stage_key: str) -> Optional[Hit]:
        path = self._entry_path(input_digest, stage_key)
        try:
            doc = self._read_json(path)
            if not isinstance(doc, dict) or doc.get("input") != input_digest or doc.get("key") != stage_key \
                    or not isinstance(doc.get("output"), str):
                raise _Corrupt("entry does not match its name")
        except FileNotFoundError:
            self.misses += 1
            return None
        except _Corrupt as e:
            self._corrupt(path, str(e))
            self.misses += 1
            return None
        if not self._graph_path(doc["output"]).exists():
            self.misses += 1
            return None
        self._touch(path)
        self.hits += 1
        return Hit(doc["output"], freeze(doc.get("stats") or {}))

    def _load_tensor(self, digest: str, info: dict):
        path = self._tensor_path(digest)
        data = _read(path)
        try:
            arr = decode_tensor(data, info["dtype"], info["shape"], info.get("numpy"))
        except (ValueError, KeyError, TypeError) as e:
            self._corrupt(path, f"cannot decode: {e}")
            raise _Corrupt(str(e), handled=True) from None
        if tensor_digest(arr) != digest:
            self._corrupt(path, "content does not match its digest")
            raise _Corrupt("tensor digest mismatch", handled=True)
        return arr

    def get_program(self, digest: str) -> Optional[Program]:
        gpath = self._graph_path(digest)
        try:
            graph = self._read_json(gpath)
            table = graph.get("tensors", {}) if isinstance(graph, dict) else {}
            tensors = {d: self._load_tensor(d, info) for d, info in table.items()}
            program = from_parts(graph, tensors)
        except FileNotFoundError:
            return None
        except _Corrupt as e:
            if not e.handled:
                self._corrupt(gpath, str(e))
            return None
        except (SerializationError, AttributeError) as e:
            self._corrupt(gpath, str(e))
            return None
        if program.digest != digest:
            self._corrupt(gpath, f"program digest {program.digest[:12]} does not match its name")
            return None
        self._touch(gpath, *map(self._tensor_path, table))
        return program

    # -- writing --------------------------------------------------------------
    def put_program(self, program: Program) -> None:
        gpath = self._graph_path(program.digest)
        graph, tensors = to_parts(program)
        written = 0
        for d, arr in tensors.items():
            tpath = self._tensor_path(d)
            if not tpath.exists():
                written += _atomic_write(tpath, encode_tensor(arr, graph["tensors"][d]["dtype"]))
        if not gpath.exists() or written:
            written += _atomic_write(gpath, json.dumps(graph, separators=(",", ":")).encode())
        self._grew(written)

    def store(self, input_digest: str, stage_key: str, program: Program, stats=None) -> None:
        self.put_program(program)
        doc = {"input": input_digest, "key": stage_key, "output": program.digest,
               "stats": jsonable_stats(stats)}
        self._grew(_atomic_write(self._entry_path(input_digest, stage_key), json.dumps(doc).encode()))

    # -- size -----------------------------------------------------------------
    def _files(self) -> list:
        """(mtime, size, path) of every cache file, oldest first."""
        out = []
        for sub in ("entries", "graphs", "tensors"):
            for dirpath, _dirs, files in os.walk(self.root / sub):
                for name in files:
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p)
                    except FileNotFoundError:
                        continue
                    out.append((st.st_mtime_ns, st.st_size, p))
        return sorted(out)

    def disk_bytes(self) -> int:
        return sum(size for _t, size, _p in self._files())

    def _grew(self, nbytes: int) -> None:
        if self.max_bytes is None or not nbytes:
            return
        with self._lock:
            self._size += nbytes
            if self._size > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        files = self._files()
        total = sum(size for _t, size, _p in files)
        for _t, size, path in files:
            if total <= self.max_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total -= size
        self._size = total

    def clear(self) -> None:
        for _t, _s, path in self._files():
            Path(path).unlink(missing_ok=True)
        self._size = 0
