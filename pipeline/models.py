"""Model files in and out, chosen by file extension, written atomically.

    program = load_model("net.onnx")          # .onnx | .mlpackage | .wpz
    save_model(program, "net-int8.onnx")      # all or nothing

Readers and writers are imported only when a file of their kind is touched,
so the command line starts fast and coremltools stays optional. Any failure
to read becomes a ModelFileError naming the file, so a shell user sees one
line rather than the parser's traceback.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from ir.atomic import exchange, new_scratch, remove, replace
from pipeline.interrupts import deferred


class ModelFileError(ValueError):
    """A model file is missing, of an unknown kind, or cannot be read or written."""


class Format(NamedTuple):
    name: str
    module: str  # imported lazily
    reader: str
    writer: str
    chatty: bool = False  # its library prints banners, progress bars and warnings of its own


FORMATS = {
    ".onnx": Format("ONNX", "ir.formats.onnx", "import_onnx", "export_onnx"),
    ".mlpackage": Format("Core ML", "ir.formats.coreml", "import_coreml", "export_coreml"),
    ".wpz": Format("weightpress", "ir.serialize", "load", "save"),
}


def format_of(path) -> Format:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ModelFileError(f"{path}: unknown model format {suffix or '(no extension)'!r}; "
                             f"known: {', '.join(FORMATS)}")
    return FORMATS[suffix]


def _function(fmt: Format, which: str) -> Callable:
    try:
        module = importlib.import_module(fmt.module)
    except ImportError as e:
        raise ModelFileError(f"{fmt.name} files need {fmt.module}, which cannot be imported here ({e})") from e
    fn = getattr(module, getattr(fmt, which))
    return _quietly(fn) if fmt.chatty else fn


def _quietly(fn: Callable) -> Callable:
    """fn with its Python-level prints and warnings swallowed: coremltools announces
    missing native proxies and draws its own pass bars, which would bury our one line."""

    def quiet(*args, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return quiet


def check_writable(path) -> None:
    """Fail now, not after the work, when `path`'s format cannot be written here."""
    _function(format_of(path), "writer")


def load_model(path):
    """The Program stored in `path`, checked by ir.validate whatever its format; the file
    itself is only read. Anything wrong with it is a ModelFileError naming the file."""
    from ir import InvalidProgram
    from ir.validate import validate

    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    reader = _function(fmt, "reader")
    try:
        return validate(reader(str(path)))
    except ModelFileError:
        raise
    except InvalidProgram as e:
        raise ModelFileError(f"{path}: not a valid {fmt.name} model: {_short(e, path)}") from e
    except MemoryError as e:
        raise ModelFileError(f"{path}: this {fmt.name} model does not fit in memory") from e
    except RecursionError as e:
        raise ModelFileError(f"{path}: this {fmt.name} model is nested too deeply") from e
    except Exception as e:  # noqa: BLE001 - parsers raise anything on a damaged file
        raise ModelFileError(f"{path}: cannot read this {fmt.name} model: {_short(e, path)}") from e


def save_model(program, path, check: Optional[Callable] = None, target=None, **options) -> Path:
    """Write `program` to `path` (plus any sidecar files its format makes), atomically;
    `options` go to the format's writer (e.g. matmul_nbits=True for ONNX).

    `target`: a Core ML deployment target to write at; by default a Core ML model keeps
    the program's own (the input model's, or what set_target made it).
    `check(written)`, when given, runs on the written file before it is moved into
    place; if it raises, nothing is left at `path`."""
    path = Path(path)
    writer = _function(format_of(path), "writer")
    if target is not None:
        options["target"] = target
    with staged_outputs(path.parent) as scratch:
        writer(program, str(scratch / path.name), **options)
        if check is not None:
            check(scratch / path.name)
    return path


def write_text_atomic(path, text: str) -> Path:
    path = Path(path)
    with staged_outputs(path.parent) as scratch:
        (scratch / path.name).write_text(text, encoding="utf-8")
    return path


SCRATCH_PREFIX = ".weightpress-"


class staged_outputs:
    """A scratch directory next to the destination; on success every entry
    written into it is moved into place (ir.atomic.replace), on failure it is
    removed and nothing at the destination has changed.

    Inside an OutputTransaction (the command line runs every command in one),
    what an entry replaces is kept aside (.NAME.old-PID) until the transaction
    ends, so that a command stopped half-way (Ctrl-C, an error in a later
    output) can put every output back as it was."""

    def __init__(self, dest_dir):
        self.dest_dir = Path(dest_dir) if str(dest_dir) else Path(".")

    def __enter__(self) -> Path:
        if not self.dest_dir.is_dir():
            raise ModelFileError(f"{self.dest_dir}: output directory does not exist")
        _remove_stale(self.dest_dir)
        with deferred(raise_after=True):  # created and registered, or neither
            self.scratch = new_scratch(self.dest_dir, f"{SCRATCH_PREFIX}{os.getpid()}-")
            if _transaction is not None:
                _transaction.scratches.append(self.scratch)
        return self.scratch

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                with deferred(raise_after=True):  # every rename pair whole; Ctrl-C raised after
                    for entry in sorted(self.scratch.iterdir()):
                        _move_into_place(entry, self.dest_dir / entry.name, _transaction)
        finally:
            with deferred():
                remove(self.scratch)
        return False


_transaction = None  # the OutputTransaction of the running command, if any


def readable(path) -> Path:
    """Where a model this command saved can be read now: its own path (outputs are in
    place as soon as written; an OutputTransaction only keeps what they replaced)."""
    return Path(path)


class OutputTransaction:
    """All of a command's outputs, or none of them.

        with OutputTransaction() as tx:     # outputs written inside keep what they replace
            ...write outputs...
            tx.finish()                     # done: drop what was kept (Ctrl-C deferred)
        # leaving without finish() (an error, an interrupt): every output is put back as it
        # was before the command (new ones removed, replaced ones restored), scratch removed

    Outputs are in place as soon as written, so the command can read them back (file
    sizes); what they replaced is restored on the way out if the command does not finish.
    """

    def __init__(self):
        self.scratches: list = []  # every scratch directory created
        self.placed: list = []     # (destination, what it replaced kept aside, or None), in order
        self.finished = False

    def __enter__(self) -> "OutputTransaction":
        global _transaction
        self._outer, _transaction = _transaction, self
        return self

    def keeps(self, dst: Path) -> bool:
        """Whether `dst` was already placed by this transaction (its original is kept)."""
        return any(d == dst for d, _ in self.placed)

    def finish(self) -> None:
        with deferred():
            for _dst, kept in self.placed:
                if kept is not None:
                    remove(kept)
            self.finished = True

    def rollback(self) -> None:
        with deferred():
            for dst, kept in reversed(self.placed):
                if kept is None:
                    remove(dst)
                elif kept.is_dir() and dst.is_dir() and exchange(kept, dst):
                    remove(kept)  # which now holds the new output
                else:
                    remove(dst)
                    replace(kept, dst)
            self.placed = []

    def __exit__(self, exc_type, exc, tb) -> bool:
        global _transaction
        _transaction = self._outer
        with deferred():
            if not self.finished:
                self.rollback()
            for scratch in self.scratches:
                remove(scratch)
        return False


def _move_into_place(src: Path, dst: Path, tx=None) -> None:
    """ir.atomic.replace(src, dst), for directories too; inside a transaction what dst held is
    kept aside (a hard link for files, so readers never see dst missing)."""
    if dst.exists() and dst.is_dir() != src.is_dir():  # never a user's directory for a file (or back)
        raise ModelFileError(f"{dst}: exists and is a {'directory' if dst.is_dir() else 'file'}; "
                             "not replacing it with a " + ("directory" if src.is_dir() else "file"))
    keep = tx is not None and not tx.keeps(dst) and os.path.lexists(dst)
    kept = dst.with_name(f".{dst.name}.old-{os.getpid()}") if keep else None
    replace(src, dst, keep=kept)
    if tx is not None:
        tx.placed.append((dst, kept))
    # temporary files and directories are private (0600 / 0700); the result gets the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dst, (0o777 if dst.is_dir() else 0o666) & ~umask)


_STALE = re.compile(r"\.(?P<name>.+)\.old-(?P<pid>\d+)\Z|" + re.escape(SCRATCH_PREFIX) + r"(?P<spid>\d+)-")


def _remove_stale(directory: Path) -> None:
    """What killed runs left in an output directory (old outputs .NAME.old-PID, scratch
    directories .weightpress-PID-...) whose process is gone."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for p in entries:
        m = _STALE.match(p.name)
        if m and not _alive(int(m.group("pid") or m.group("spid"))):
            remove(p)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _short(e: BaseException, path) -> str:
    """The first line of an error message, without the path the caller already names."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines and lines[0] else type(e).__name__
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text
