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

A cache directory may be shared, so its files are treated as hostile input:

- Only well-formed digests (64 lowercase hex digits) become path parts; an
  entry's output or a tensor table key that is anything else is corruption.
- Every path is resolved (symlinks followed) and must stay under the root;
  one that leads outside is neither read, written nor deleted: reported and
  treated as a miss. Nothing outside the root is ever unlinked.
- What get_program returns has the digest asked for and passes ir.validate;
  declared tensor layouts are checked before anything is allocated
  (ir.serialize.tensor_layout), JSON files are size-capped.
- What it cannot check: an entry rewritten to name another valid program
  stored in the cache. Only recomputing the step could tell; share a cache
  only with those you would let choose your outputs.

A cache that cannot be written (read-only directory or file system, disk
full) warns once (CacheWriteWarning) and the run goes on without storing;
hits keep working. Temporaries left by a killed writer (`.tmp-*`) are swept
when a cache is opened: those older than ORPHAN_AGE seconds that no live
writer holds (each writer keeps an flock on its temporary while writing).
"""
from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from pyrsistent import freeze

from ir import InvalidProgram, Program
from ir.atomic import write_bytes, write_file
from ir.digest import tensor_digest
from ir.serialize import (MAX_JSON_BYTES, SerializationError, decode_tensor, from_parts, is_digest, to_parts,
                          write_tensor)
from pipeline.cache import Hit, jsonable_stats
from pipeline.errors import CacheCorruptionWarning, CacheWriteWarning

try:  # advisory locks tell a live writer's temporary from an orphan (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows: orphans are judged by age alone
    fcntl = None

SUBDIRS = ("tensors", "graphs", "entries")
TMP_PREFIX = ".tmp-"  # the sweep below recognizes temporaries by it
# A temporary older than this (seconds since its last write) whose writer holds no lock is
# an orphan. Writers lock it right after creating it, so the age only has to cover that
# instant; it is generous for file systems whose locks are not shared between machines.
ORPHAN_AGE = 15 * 60
MAX_ENTRY_BYTES = 64 << 20  # an entry is a few stats; a huge one is hostile


class _Corrupt(Exception):
    """A cache file exists but cannot be trusted (`handled`: already reported and dropped)."""

    def __init__(self, why: str, handled: bool = False):
        super().__init__(why)
        self.handled = handled


class _Outside(OSError):
    """A cache path resolves outside the cache root (a symlink planted in the cache)."""


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _atomic_write(path: Path, data: bytes) -> int:
    # the lock is held until the file is closed: it tells the sweep this temporary is alive
    return write_bytes(path, data, prefix=TMP_PREFIX, private=True, on_open=_lock)


def _atomic_write_tensor(path: Path, arr, ir_dtype) -> int:
    """A tensor file written from the array chunk by chunk (ir.serialize.write_tensor: no
    copy of the whole encoding), atomically and locked like every other cache file."""
    written = []
    write_file(path, lambda f: written.append(write_tensor(f, arr, ir_dtype)), prefix=TMP_PREFIX,
               private=True, on_open=_lock)
    return written[0]


def _give_back(arr) -> None:
    """Drop the resident pages of an array mapped from a cache file once it has been hashed:
    the array stays valid (its pages come back from the page cache when touched), and
    loading a big program does not keep every tensor it checked in memory."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, mmap.mmap):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):
            pass


def _read(path: Path):
    """The file's bytes; large files are memory-mapped read-only (no copy; the page
    cache backs the array, and an unlinked file stays readable while mapped)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < (1 << 20):
            return f.read()
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _orphaned(path: str, now: float) -> bool:
    """A temporary old enough, that no live writer holds a lock on."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if now - st.st_mtime < ORPHAN_AGE:
            return False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a live writer holds it
        same = os.stat(path, follow_symlinks=False)
        return (same.st_ino, same.st_dev) == (st.st_ino, st.st_dev)
    except OSError:
        return False
    finally:
        os.close(fd)


class DiskCache:
    def __init__(self, path, max_bytes: Optional[int] = None, create: bool = True):
        """`create=False`: the directory must exist already (FileNotFoundError otherwise), as a
        store another process made and may remove (pipeline.distributed's workers)."""
        self.root = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._unwritable: Optional[str] = None  # why stores are skipped (warned once)
        try:
            for sub in SUBDIRS:
                (self.root / sub).mkdir(parents=create, exist_ok=True)
        except OSError as e:
            if not self.root.is_dir():
                raise
            self._cannot_write(e)
        self._real = os.path.realpath(self.root)
        self._size = self.disk_bytes() if max_bytes is not None else 0
        self.hits = self.misses = 0
        if self._unwritable is None:
            self.sweep_orphans()

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # -- paths ----------------------------------------------------------------
    def _tensor_path(self, digest: str) -> Path:
        return self.root / "tensors" / digest[:2] / f"{digest}.bin"

    def _graph_path(self, digest: str) -> Path:
        return self.root / "graphs" / f"{digest}.json"

    def _entry_path(self, input_digest: str, stage_key: str) -> Path:
        return self.root / "entries" / input_digest[:2] / f"{input_digest}-{stage_key}.json"

    def _inside(self, path) -> bool:
        real = os.path.realpath(path)
        return real == self._real or real.startswith(self._real.rstrip(os.sep) + os.sep)

    def _checked(self, path: Path) -> Path:
        """`path` when it (symlinks followed) stays under the root; _Outside else."""
        if not self._inside(path):
            raise _Outside(f"{path} leads outside the cache")
        return path

    # -- reading --------------------------------------------------------------
    def _corrupt(self, path: Path, why: str) -> None:
        warnings.warn(f"cache file {path} is corrupt ({why}); dropping it and recomputing",
                      CacheCorruptionWarning, stacklevel=4)
        self._drop(path)

    def _drop(self, path: Path) -> None:
        """Remove a bad cache file (or a directory planted in its place), only ever inside
        the root: its directory must resolve under the root (a symlink at `path` itself
        is removed as a link, never followed)."""
        if not self._inside(path.parent):
            return
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only cache: the file stays, and is re-checked next time

    def _read_json(self, path: Path, limit: int):
        try:
            self._checked(path)
            if path.stat().st_size > limit:
                raise _Corrupt(f"over {limit} bytes")
            data = path.read_bytes()  # FileNotFoundError: a quiet miss
        except (IsADirectoryError, NotADirectoryError) as e:
            raise _Corrupt(f"not a file ({e.strerror})") from None
        except PermissionError:
            raise FileNotFoundError(path) from None  # someone else's file: a miss, left alone
        except _Outside as e:
            raise _Corrupt(str(e)) from None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Corrupt(f"not JSON: {e}") from None
        except RecursionError:
            raise _Corrupt("JSON nested too deeply") from None

    def _touch(self, *paths) -> None:
        if self.max_bytes is not None:  # recency only matters when evicting
            for p in paths:
                try:
                    os.utime(p)
                except OSError:  # gone, or a read-only cache
                    pass

    def lookup(self, input_digest: str, stage_key: str) -> Optional[Hit]:
        if not (is_digest(input_digest) and is_digest(stage_key)):
            self.misses += 1
            return None
        path = self._entry_path(input_digest, stage_key)
        try:
            doc = self._read_json(path, MAX_ENTRY_BYTES)
            if not isinstance(doc, dict) or doc.get("input") != input_digest or doc.get("key") != stage_key:
                raise _Corrupt("entry does not match its name")
            if not is_digest(doc.get("output")):
                raise _Corrupt(f"output {str(doc.get('output'))[:80]!r} is not a digest")
            if not isinstance(doc.get("stats") or {}, dict):
                raise _Corrupt("stats are not an object")
        except FileNotFoundError:
            self.misses += 1
            return None
        except _Corrupt as e:
            self._corrupt(path, str(e))
            self.misses += 1
            return None
        if not self._graph_path(doc["output"]).is_file():
            self.misses += 1
            return None
        self._touch(path)
        self.hits += 1
        return Hit(doc["output"], freeze(doc.get("stats") or {}))

    def _load_tensor(self, digest: str, info):
        if not is_digest(digest):
            raise _Corrupt(f"tensor table key {str(digest)[:80]!r} is not a digest")
        if not isinstance(info, dict):
            raise _Corrupt(f"tensor {digest[:12]}: table entry is not an object")
        path = self._tensor_path(digest)
        try:
            data = _read(self._checked(path))
        except _Outside as e:
            raise _Corrupt(str(e)) from None
        except (IsADirectoryError, NotADirectoryError) as e:
            self._corrupt(path, f"cannot read: {e.strerror}")
            raise _Corrupt(str(e), handled=True) from None
        except PermissionError as e:  # someone else's file: a miss, left alone
            raise _Corrupt(str(e), handled=True) from None
        try:
            arr = decode_tensor(data, info.get("dtype"), info.get("shape"), info.get("numpy"))
        except (ValueError, KeyError, TypeError, MemoryError) as e:
            self._corrupt(path, f"cannot decode: {e}")
            raise _Corrupt(str(e), handled=True) from None
        if tensor_digest(arr) != digest:
            self._corrupt(path, "content does not match its digest")
            raise _Corrupt("tensor digest mismatch", handled=True)
        _give_back(arr)
        return arr

    def get_program(self, digest: str) -> Optional[Program]:
        """The program stored under `digest` (checked: its digest, its tensors' digests and
        ir.validate), or None when absent or untrustworthy (reported and dropped)."""
        if not is_digest(digest):
            return None
        gpath = self._graph_path(digest)
        try:
            graph = self._read_json(gpath, MAX_JSON_BYTES)
            table = graph.get("tensors", {}) if isinstance(graph, dict) else {}
            if not isinstance(table, dict):
                raise _Corrupt("tensor table is not an object")
            tensors = {d: self._load_tensor(d, info) for d, info in table.items()}
            program = from_parts(graph, tensors)
            if program.digest != digest:
                raise _Corrupt(f"program digest {program.digest[:12]} does not match its name")
            _validate(program)
        except FileNotFoundError:
            return None
        except _Corrupt as e:
            if not e.handled:
                self._corrupt(gpath, str(e))
            return None
        except (SerializationError, InvalidProgram, AttributeError, TypeError, RecursionError) as e:
            self._corrupt(gpath, str(e) or type(e).__name__)
            return None
        self._touch(gpath, *map(self._tensor_path, table))
        return program

    # -- writing --------------------------------------------------------------
    def _write(self, path: Path, data) -> int:
        """Write one cache file atomically, under the root only (a planted directory at
        its name is removed first). `data`: bytes, or (array, IR dtype) for a tensor."""
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            self._corrupt(parent, "a file where a directory belongs")
        self._make_dirs(parent)
        self._checked(parent)
        if path.is_dir() and not path.is_symlink():
            self._corrupt(path, "a directory where a file belongs")
        if isinstance(data, tuple):
            return _atomic_write_tensor(path, *data)
        return _atomic_write(path, data)

    def _make_dirs(self, parent: Path) -> None:
        """The directories from the root down to parent, never the root itself: a cache whose
        directory was removed (a run's temporary store, by its run) is not made again by a
        late writer, which gets FileNotFoundError instead."""
        missing = []
        while parent != self.root and not parent.is_dir():
            missing.append(parent)
            parent = parent.parent
        for level in reversed(missing):
            level.mkdir(exist_ok=True)

    def put_program(self, program: Program) -> None:
        gpath = self._graph_path(program.digest)
        graph, tensors = to_parts(program)
        written = 0
        for d, arr in tensors.items():
            tpath = self._tensor_path(d)
            if not tpath.is_file():
                written += self._write(tpath, (arr, graph["tensors"][d]["dtype"]))
        if not gpath.is_file() or written:
            written += self._write(gpath, json.dumps(graph, separators=(",", ":")).encode())
        self._grew(written)

    def store(self, input_digest: str, stage_key: str, program: Program, stats=None) -> None:
        """Record a step's result; a cache that cannot be written is warned about once and
        the run goes on (a cache only saves time)."""
        if self._unwritable is not None or not (is_digest(input_digest) and is_digest(stage_key)):
            return
        try:
            self.put_program(program)
            doc = {"input": input_digest, "key": stage_key, "output": program.digest,
                   "stats": jsonable_stats(stats)}
            self._grew(self._write(self._entry_path(input_digest, stage_key), json.dumps(doc).encode()))
        except _Outside as e:
            warnings.warn(f"cache {self.root}: {e}; not storing there", CacheCorruptionWarning, stacklevel=3)
        except OSError as e:
            self._cannot_write(e)

    def _cannot_write(self, e: OSError) -> None:
        with self._lock:
            if self._unwritable is not None:
                return
            self._unwritable = e.strerror or str(e)
        hint = " (read-only)" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
        warnings.warn(f"cache {self.root} cannot be written{hint}: {self._unwritable}; continuing without "
                      "storing results", CacheWriteWarning, stacklevel=4)

    # -- orphaned temporaries -------------------------------------------------
    def sweep_orphans(self) -> int:
        """Delete the temporaries killed writers left (see ORPHAN_AGE); returns how many."""
        now, removed = time.time(), 0
        for sub in SUBDIRS:
            for dirpath, _dirs, files in os.walk(self.root / sub):
                for name in files:
                    path = os.path.join(dirpath, name)
                    if name.startswith(TMP_PREFIX) and self._inside(dirpath) and _orphaned(path, now):
                        try:
                            os.unlink(path)
                            removed += 1
                        except OSError:
                            pass
        return removed

    # -- size -----------------------------------------------------------------
    def _files(self) -> list:
        """(mtime, size, path) of every cache file, oldest first (temporaries are not cache
        files: they belong to their writers, or to the sweep)."""
        out = []
        for sub in SUBDIRS:
            for dirpath, _dirs, files in os.walk(self.root / sub):
                for name in files:
                    if name.startswith(TMP_PREFIX):
                        continue
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p, follow_symlinks=False)
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
            self._drop(Path(path))
            total -= size
        self._size = total

    def clear(self) -> None:
        for _t, _s, path in self._files():
            self._drop(Path(path))
        self._size = 0


def _validate(program: Program) -> None:
    from ir.validate import validate

    validate(program)
