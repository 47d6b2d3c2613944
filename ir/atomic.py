"""Atomic writes: a file or a directory tree appears whole at its path, or not at all.

The one place that writes outputs (native files, ONNX models with their data file, Core ML
packages, the disk cache, traces, the command line's outputs). Everything is written
beside its destination (same directory, so the same file system and the final rename is
atomic) under a temporary name, then renamed onto the destination: a reader sees the old
content or the new one, never a part. On any failure (an exception, Ctrl-C) the temporary
is removed and the destination is as it was.

* `write_file(path, fill)`: `fill(binary file)` writes the content into a temporary file,
  optionally fsync'd before the rename (durable across a power cut: `ir.serialize` asks for
  it; the cache, which re-hashes what it reads, does not). `on_open(fd)` runs first (the
  cache locks its temporaries so its sweep can tell a live writer's from an orphan).
* `write_bytes`, `write_text`: the same for a value in hand.
* `scratch(directory)`: a temporary directory beside the destinations, removed on the way
  out whatever happens; build a tree, or several files, in it and `replace` each into place.
* `replace(src, dst, keep=None)`: rename src onto dst, directories included. A directory
  replacing a directory is exchanged with it in one step where the system can (Linux
  renameat2), else the old one is moved aside first. What dst held is deleted, or moved to
  `keep` when given (a file is hard-linked there first, so dst never goes missing).
* `write_tree(path, build)`: `build(staged path)` makes a file or directory in a scratch
  directory, which then replaces `path`.

Temporary files are created with the usual permissions (0666 less the umask, applied by the
system: no process-wide umask juggling) or, `private=True`, 0600.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]
TMP_PREFIX = ".tmp-"
SCRATCH_PREFIX = ".weightpress-"


def _create(directory: str, prefix: str, suffix: str, mode: int) -> tuple:
    """(fd, path) of a new file with a fresh name in `directory` (never an existing one)."""
    for _ in range(100):
        tmp = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}: no free temporary name after 100 tries")


def write_file(path: PathLike, fill: Callable[[BinaryIO], object], *, fsync: bool = False,
               prefix: str = TMP_PREFIX, suffix: str = "", private: bool = False,
               on_open: Optional[Callable[[int], object]] = None) -> None:
    """Write `path` atomically: `fill(f)` writes into a temporary file beside it, renamed
    onto `path` only when `fill` returned (after an fsync when asked)."""
    path = os.fspath(path)
    fd, tmp = _create(os.path.dirname(os.path.abspath(path)), prefix, suffix, 0o600 if private else 0o666)
    try:
        try:
            if on_open is not None:
                on_open(fd)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "wb") as f:
            fill(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: PathLike, data: bytes, **options) -> int:
    write_file(path, lambda f: f.write(data), **options)
    return len(data)


def write_text(path: PathLike, text: str, **options) -> None:
    write_bytes(path, text.encode("utf-8"), **options)


def new_scratch(directory: PathLike, prefix: str = SCRATCH_PREFIX) -> Path:
    """A fresh private directory in `directory` (the caller removes it: see `scratch`)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.fspath(directory) or "."))


@contextlib.contextmanager
def scratch(directory: PathLike, prefix: str = SCRATCH_PREFIX) -> Iterator[Path]:
    """A temporary directory in `directory`, removed with all it holds on the way out."""
    path = new_scratch(directory, prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def exchange(a: PathLike, b: PathLike) -> bool:
    """Swap two directory entries in one step (renameat2 RENAME_EXCHANGE); False when the
    system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def remove(path: PathLike) -> None:
    """Delete a file, a symlink or a directory tree; nothing there is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace(src: PathLike, dst: PathLike, keep: Optional[PathLike] = None) -> None:
    """Rename `src` onto `dst` (files and directories); what dst held is deleted, or moved
    to `keep`. A file never replaces a directory nor the reverse (IsADirectoryError /
    NotADirectoryError): the caller says why in its own words first."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.is_dir() != src.is_dir():
        raise (IsADirectoryError if dst.is_dir() else NotADirectoryError)(f"{dst}: not replacing it with {src}")
    if src.is_dir() and dst.exists():
        # os.replace cannot replace a non-empty directory: exchange the two in one step
        # where the system can (the old one then sits where src was), else move it aside
        old = Path(keep) if keep is not None else dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if exchange(src, dst):
            os.replace(src, old)
        else:
            os.replace(dst, old)
            os.replace(src, dst)
        if keep is None:
            shutil.rmtree(old, ignore_errors=True)
        return
    if keep is not None and os.path.lexists(dst):
        try:
            os.link(dst, keep, follow_symlinks=False)
        except OSError:  # no hard links here: move it aside
            os.replace(dst, keep)
    os.replace(src, dst)


def write_tree(path: PathLike, build: Callable[[str], object], prefix: str = SCRATCH_PREFIX) -> str:
    """`build(staged)` makes a file or a directory at `staged` (a path in a scratch
    directory beside `path`), which then replaces `path`; the scratch goes either way."""
    path = os.path.abspath(os.fspath(path))
    with scratch(os.path.dirname(path), prefix) as tmp:
        staged = os.path.join(tmp, os.path.basename(path))
        build(staged)
        replace(staged, path)
    return path
