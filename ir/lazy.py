"""File-backed tensors: a const's value that is a region of a file, read on demand.

`file_array(path, offset, dtype, shape)` is a read-only numpy array over a
memory map of the file (one map per file, shared by its tensors): to every
consumer it is an ordinary read-only ndarray, but nothing is read until a
consumer touches its elements, and an importer that makes one reads only the
model's headers. What the module remembers per array (keyed by id, dropped
when the array dies) is its `Region`: the file, the byte range, and the file's
stamp (size, mtime, inode) when it was mapped.

Invariants:
* The IR stays immutable: the map is read-only (ACCESS_READ), so the array
  cannot be made writeable; a stage that writes into it fails loudly.
* `region_digest` is the digest `ir.digest.tensor_digest` would compute from
  the bytes (same header, same bytes), computed by reading the file in chunks
  with pread, never through the map, so hashing a 6 GB model never holds more
  than one chunk; ir.digest remembers it once computed.
* `release(arr)` gives the pages a consumer touched back (madvise DONTNEED on
  the read-only map: the next touch reads them again from the page cache), so
  resident memory stays bounded by what is in flight, not by what was read.
* `verify(arr)` checks the file still has the stamp it had when it was mapped;
  a file changed while a run is in progress is a `WeightFileChanged` naming it
  (a ValueError). A digest computed again from the file that disagrees with
  the remembered one is the same error.
* A file shorter than the region a model declares is `WeightFileTruncated`.

Page-cache pages are not this process's memory; pages of the map count in the
resident set only while they are mapped in, hence `release`.
"""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import weakref
from typing import NamedTuple, Optional

import numpy as np

CHUNK = 16 << 20  # bytes per pread when hashing or copying: bounded, and large enough to be fast
_PAGE = mmap.PAGESIZE


class WeightFileError(ValueError):
    """A weight file that does not hold what the model says, or changed under a run."""


class WeightFileTruncated(WeightFileError):
    pass


class WeightFileChanged(WeightFileError):
    pass


class Stamp(NamedTuple):
    size: int
    mtime_ns: int
    ino: int


class Region(NamedTuple):
    path: str
    offset: int
    length: int
    dtype: str  # numpy dtype.str
    shape: tuple
    stamp: Stamp


def _stamp(path: str) -> Stamp:
    st = os.stat(path)
    return Stamp(st.st_size, st.st_mtime_ns, st.st_ino)


# path -> (Stamp, weakref to the mmap): one map per file while any of its arrays lives (the
# arrays hold the map; when the last one dies the map, and its file descriptor, go too)
_MAPS: dict = {}
# id(array) -> (weakref to the array, Region)
_REGIONS: dict = {}
# counters the tests read: how many bytes were hashed / copied from files
READS = {"digest_bytes": 0, "copy_bytes": 0}


def _map_of(path: str, stamp: Stamp) -> mmap.mmap:
    got = _MAPS.get(path)
    mm = got[1]() if got is not None and got[0] == stamp else None
    if mm is not None:
        return mm
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    _MAPS[path] = (stamp, weakref.ref(mm))
    return mm


def file_array(path, offset: int, dtype, shape, length: Optional[int] = None) -> np.ndarray:
    """A read-only array of `shape` / `dtype` over bytes [offset, offset + nbytes) of `path`.
    `length`, when the model states it, must equal the array's byte size."""
    path = os.path.abspath(os.fspath(path))
    dt = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if length is not None and int(length) != nbytes:
        raise WeightFileError(f"{path}: region of {length} bytes at offset {offset} cannot hold "
                              f"{dt.name}{list(shape)} ({nbytes} bytes)")
    try:
        stamp = _stamp(path)
    except OSError as e:
        raise WeightFileError(f"{path}: cannot read the weight file ({e.strerror})") from None
    if offset < 0 or offset + nbytes > stamp.size:
        raise WeightFileTruncated(f"{path}: the file is {stamp.size} bytes, shorter than the "
                                  f"{nbytes} bytes at offset {offset} the model says it holds")
    if nbytes == 0:
        arr = np.zeros(shape, dt)
        arr.flags.writeable = False
        return arr
    arr = np.frombuffer(_map_of(path, stamp), dtype=dt, count=nbytes // dt.itemsize, offset=offset).reshape(shape)
    key = id(arr)
    _REGIONS[key] = (weakref.ref(arr, lambda _r, k=key: _REGIONS.pop(k, None)),
                     Region(path, int(offset), nbytes, dt.str, shape, stamp))
    return arr


def region_of(arr) -> Optional[Region]:
    """The file region behind `arr`, when `arr` is one file_array made (not a view of one)."""
    hit = _REGIONS.get(id(arr))
    if hit is None or hit[0]() is not arr:
        return None
    return hit[1]


def verify(arr) -> None:
    """WeightFileChanged when the file behind `arr` is no longer the one that was mapped."""
    r = region_of(arr)
    if r is None:
        return
    try:
        now = _stamp(r.path)
    except OSError:
        raise WeightFileChanged(f"{r.path}: the weight file disappeared during the run") from None
    if now != r.stamp:
        raise WeightFileChanged(f"{r.path}: the weight file changed on disk during the run "
                                f"(size {r.stamp.size} -> {now.size}, modified again)")


def _read_range(r: Region, fd: int, pos: int, end: int, buf: memoryview):
    while pos < end:
        want = min(len(buf), end - pos)
        got = os.preadv(fd, [buf[:want]], pos)
        if got <= 0:
            raise WeightFileTruncated(f"{r.path}: the file ended at byte {pos}, before the "
                                      f"{r.length} bytes at offset {r.offset} the model says it holds")
        pos += got
        yield buf[:got]


def chunks(r: Region):
    """The region's bytes in chunks of at most CHUNK, read with preadv into one reused buffer
    (not through the map, and no fresh pages per chunk): each memoryview is valid only until
    the next one is asked for."""
    buf = memoryview(bytearray(min(CHUNK, r.length)))
    with open(r.path, "rb") as f:
        yield from _read_range(r, f.fileno(), r.offset, r.offset + r.length, buf)


def _data_segments(fd: int, start: int, end: int):
    """The parts of [start, end) of a file that hold data; holes of a sparse file (which read
    as zeros) are left out. The whole range where the system cannot tell."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except (AttributeError, OSError) as e:
            if getattr(e, "errno", None) == errno.ENXIO:  # no data after pos: all hole
                return
            yield pos, end
            return
        if data >= end:
            return
        yield data, min(hole, end)
        pos = hole


def region_digest(arr, header: bytes) -> Optional[str]:
    """sha256 of `header` + the array's bytes, read from its file in chunks (or, for a
    computed() stand-in, made chunk by chunk); None when `arr` is neither. The file is
    checked before and after (WeightFileChanged)."""
    r = region_of(arr)
    if r is None:
        if producer_of(arr) is None:
            return None
        h = hashlib.sha256(header)
        for data in produced_bytes(arr):
            h.update(data)
        return h.hexdigest()
    verify(arr)
    known = known_digest(arr)
    if known is not None:
        return known
    h = hashlib.sha256(header)
    for data in chunks(r):
        h.update(data)
        READS["digest_bytes"] += len(data)
    verify(arr)
    return h.hexdigest()


def release(arr) -> None:
    """Give back the resident pages of a file-backed array (a no-op for any other array)."""
    r = region_of(arr)
    if r is None:
        return
    mm = _mmap_behind(arr)
    if mm is None:
        return
    start = r.offset - r.offset % _PAGE
    end = min(r.offset + r.length, len(mm))
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (AttributeError, OSError, ValueError):  # no madvise here: the kernel reclaims them itself
        pass
    _drop_cached(r)


def _mmap_behind(arr) -> Optional[mmap.mmap]:
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer keeps a memoryview of the map
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def copy_to(arr, out) -> int:
    """Write the bytes of a file-backed array to the binary file `out` chunk by chunk (no
    more than one chunk in memory); the number of bytes written. The file's stamp is
    checked before and after (WeightFileChanged)."""
    r = region_of(arr)
    verify(arr)
    base = out.tell()
    end = base + r.length
    buf = memoryview(bytearray(min(CHUNK, r.length)))
    with open(r.path, "rb") as f:
        for start, stop in _data_segments(f.fileno(), r.offset, r.offset + r.length):
            out.seek(base + start - r.offset)  # a hole stays a hole (sparse files): seek past it
            for data in _read_range(r, f.fileno(), start, stop, buf):
                if _zeros(data):
                    out.seek(len(data), os.SEEK_CUR)
                else:
                    out.write(data)
                READS["copy_bytes"] += len(data)
    out.seek(end)
    if os.fstat(out.fileno()).st_size < end:
        out.truncate(end)  # the region ended in a hole: the file must still reach its end
    verify(arr)
    return r.length


def _zeros(data) -> bool:
    return not any(data[:64]) and not np.frombuffer(data, np.uint8).any()


# ---- computed tensors: bytes made on demand, chunk by chunk --------------------------------

# id(stand-in) -> (weakref to it, produce): see computed()
_COMPUTED: dict = {}


def computed(shape, dtype, produce) -> np.ndarray:
    """A read-only stand-in of `shape` / `dtype` for a tensor whose bytes are made only when
    they are written: `produce()` yields the tensor as C-ordered arrays, consecutive slices
    along axis 0 (it may be called more than once, and gives the same bytes each time). The
    stand-in takes no memory (one element broadcast), and its own elements mean nothing: it
    exists for an exporter's derived forms (ir.formats.onnx.nbits), where DataSink writes
    the chunks as they come, so a model's packed weights are never all in memory at once;
    whatever else may meet one reads it through materialize(). Its digest is the digest of
    the produced bytes (region_digest)."""
    dt = np.dtype(dtype)
    arr = np.broadcast_to(np.zeros((), dt), tuple(int(d) for d in shape))
    key = id(arr)
    _COMPUTED[key] = (weakref.ref(arr, lambda _r, k=key: _COMPUTED.pop(k, None)), produce)
    return arr


def producer_of(arr):
    """The produce function behind a computed() stand-in; None for any other array."""
    hit = _COMPUTED.get(id(arr))
    if hit is None or hit[0]() is not arr:
        return None
    return hit[1]


def materialize(arr):
    """The real array of a computed() stand-in (made now, whole, read-only); `arr` itself
    for any other value."""
    produce = producer_of(arr)
    if produce is None:
        return arr
    out = np.empty(arr.shape, arr.dtype)
    flat, pos = out.reshape(-1), 0
    for chunk in produce():
        chunk = np.ascontiguousarray(chunk).reshape(-1)
        flat[pos:pos + chunk.size] = chunk
        pos += chunk.size
    if pos != out.size:
        raise ValueError(f"a computed tensor {arr.dtype}{list(arr.shape)} produced {pos} of its {out.size} elements")
    out.flags.writeable = False
    return out


def produced_bytes(arr):
    """The bytes of a computed() stand-in, chunk by chunk (memoryviews of C-ordered chunks)."""
    for chunk in producer_of(arr)():
        yield memoryview(np.ascontiguousarray(chunk).reshape(-1)).cast("B")


# ---- spilling: big results of a run kept in files, not in memory -------------------------

SPILL_MIN_BYTES = 1 << 20  # smaller arrays stay in memory: a file per array would cost more
SPILL_PREFIX = "weightpress-spill-"
# spill files are written around the page cache (O_DIRECT) from one reused aligned buffer:
# a page-cache page is fresh memory the system must find (on the VMs this was measured on,
# a fresh page costs as much as the quantization of its bytes), and the bytes are read
# back once, by the export, so caching them on the way out buys nothing
_DIRECT_ALIGN = 4096
_direct_buffer: list = []  # [mmap] once made: CHUNK bytes, page-aligned, reused by every put
# id(array) -> (weakref, digest): digests of spilled arrays, computed from the bytes in memory
# before they went to the file, so the run's digest of its result reads nothing back
_DIGESTS: dict = {}
_SPILL_PATHS: set = set()  # files of spills: release() drops their cached pages too


class Spill:
    """Where a run puts the big arrays it makes (compressed weights) so that memory holds
    only the ones in flight: `put(arr)` writes the bytes to a new file and returns a
    file-backed array equal to `arr` (same dtype, shape, bytes, digest). Each file is
    removed when its array is collected; the directory (under the system's temporary
    directory, or `directory`) when the process ends: normally, on an exception, on Ctrl-C
    (KeyboardInterrupt) and on SIGTERM (a handler is installed when none was, which exits
    with status 143 after the clean-up). SIGKILL cannot be caught: a directory left by a
    killed process is removed by the next Spill made under the same parent (its name holds
    the host and the process id, and that process no longer runs)."""

    def __init__(self, directory: Optional[str] = None):
        self._parent = directory
        self._dir: Optional[str] = None

    def wants(self, arr) -> bool:
        return (isinstance(arr, np.ndarray) and arr.nbytes >= SPILL_MIN_BYTES and arr.dtype.kind in "biuf"
                and region_of(arr) is None and producer_of(arr) is None)

    @property
    def directory(self) -> Optional[str]:
        """The spill directory, once something was spilled."""
        return self._dir

    def _directory(self) -> str:
        if self._dir is None:
            import atexit
            import shutil
            import tempfile

            parent = self._parent or tempfile.gettempdir()
            os.makedirs(parent, exist_ok=True)
            remove_stale_spills(parent)
            self._dir = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{_host()}-{os.getpid()}-", dir=parent)
            atexit.register(shutil.rmtree, self._dir, True)
            _exit_on_sigterm()
        return self._dir

    def put(self, arr: np.ndarray, digest: Optional[str] = None) -> np.ndarray:
        """`digest`: arr's ir.digest.tensor_digest when the caller has it (computed while the
        bytes are in memory: the run's digest of its result then reads nothing back)."""
        if not self.wants(arr):
            return arr
        import tempfile

        # the range of integer codes too: validation checks sub-byte values fit their dtype,
        # and would otherwise read every spilled code back from its file to learn it
        span = (int(arr.min()), int(arr.max())) if arr.dtype.kind in "iu" and arr.size else None
        fd, path = tempfile.mkstemp(dir=self._directory(), suffix=".bin")
        os.close(fd)
        _write_file(path, memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B"))
        stamp = _stamp(path)
        with open(path, "rb") as f:  # a map of its own (not shared in _MAPS): it dies with the array
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        out = np.frombuffer(mm, dtype=arr.dtype, count=arr.size).reshape(arr.shape)
        key = id(out)
        _REGIONS[key] = (weakref.ref(out, lambda _r, k=key: _REGIONS.pop(k, None)),
                         Region(path, 0, arr.nbytes, arr.dtype.str, tuple(arr.shape), stamp))
        _DIGESTS[key] = (weakref.ref(out, lambda _r, k=key: _DIGESTS.pop(k, None)), digest, span)  # digest may be None
        _SPILL_PATHS.add(path)
        weakref.finalize(out, _remove, path)
        return out


def _host() -> str:
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def remove_stale_spills(parent: str) -> list:
    """Remove the spill directories under `parent` that this host's processes left when they
    were killed (their process no longer runs); the paths removed."""
    import shutil

    mine = f"{SPILL_PREFIX}{_host()}-"
    gone = []
    try:
        names = os.listdir(parent)
    except OSError:
        return gone
    for name in names:
        if not name.startswith(mine):
            continue
        pid = name[len(mine):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            gone.append(os.path.join(parent, name))
    return gone


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def _exit_on_sigterm() -> None:
    """SIGTERM exits through SystemExit (so atexit and finally blocks run and spills go), when
    nothing else handles it and this is the main thread (where handlers can be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - no signals here (embedded interpreters)
        pass


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _write_file(path: str, data: memoryview) -> None:
    """Write `data` as the whole content of the file at `path`: through O_DIRECT (no page
    cache) where the file system takes it, else an ordinary write."""
    flag = getattr(os, "O_DIRECT", 0)
    fd = -1
    if flag and len(data) >= _DIRECT_ALIGN:
        try:
            fd = os.open(path, os.O_WRONLY | flag)
        except OSError:  # tmpfs and some others refuse O_DIRECT
            fd = -1
    if fd < 0:
        with open(path, "wb") as f:
            f.write(data)
        return
    try:
        if not _direct_buffer:
            _direct_buffer.append(mmap.mmap(-1, CHUNK))  # anonymous maps are page-aligned
        buf = _direct_buffer[0]
        pos = 0
        while pos < len(data):
            n = min(CHUNK, len(data) - pos)
            buf[:n] = data[pos:pos + n]
            whole = -(-n // _DIRECT_ALIGN) * _DIRECT_ALIGN
            if whole != n:  # the last block is padded with zeros, and the file cut back below
                buf[n:whole] = bytes(whole - n)
            view = memoryview(buf)[:whole]
            try:
                written = 0
                while written < whole:
                    written += os.write(fd, view[written:])
            finally:
                view.release()
            pos += n
        os.ftruncate(fd, len(data))
    except OSError:  # a device that refused the direct write midway: an ordinary one
        os.close(fd)
        fd = -1
        with open(path, "wb") as f:
            f.write(data)
    finally:
        if fd >= 0:
            os.close(fd)


def known_digest(arr) -> Optional[str]:
    """The digest remembered for a spilled array (computed before it went to its file)."""
    hit = _DIGESTS.get(id(arr))
    return hit[1] if hit is not None and hit[0]() is arr else None


def known_range(arr) -> Optional[tuple]:
    """(min, max) remembered for a spilled integer array; None when not known."""
    hit = _DIGESTS.get(id(arr))
    return hit[2] if hit is not None and hit[0]() is arr else None


def _drop_cached(r: Region) -> None:
    """A spill file's pages leave the page cache once read (it is read once, by the export)."""
    if r.path not in _SPILL_PATHS:
        return
    try:
        fd = os.open(r.path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, r.offset, r.length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    _SPILL_PATHS.discard(path)
    try:
        os.remove(path)
    except OSError:
        pass
