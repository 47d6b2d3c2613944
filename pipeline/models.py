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
import warnings
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple


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
    """The Program stored in `path`; the file itself is only read."""
    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    reader = _function(fmt, "reader")
    try:
        return reader(str(path))
    except ModelFileError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - parsers raise anything on a damaged file
        raise ModelFileError(f"{path}: cannot read this {fmt.name} model: {_short(e, path)}") from e


def save_model(program, path, target=None) -> Path:
    """Write `program` to `path` (plus any sidecar files its format makes), atomically.

    `target`: a Core ML deployment target to write at; by default a Core ML model keeps
    the program's own (the input model's, or what set_target made it)."""
    path = Path(path)
    writer = _function(format_of(path), "writer")
    options = {} if target is None else {"target": target}
    with staged_outputs(path.parent) as scratch:
        writer(program, str(scratch / path.name), **options)
    return path


def write_text_atomic(path, text: str) -> Path:
    path = Path(path)
    with staged_outputs(path.parent) as scratch:
        (scratch / path.name).write_text(text, encoding="utf-8")
    return path


class staged_outputs:
    """A scratch directory next to the destination; on success every entry
    written into it is moved into place with os.replace, on failure it is
    removed and nothing at the destination has changed."""

    def __init__(self, dest_dir):
        self.dest_dir = Path(dest_dir) if str(dest_dir) else Path(".")

    def __enter__(self) -> Path:
        if not self.dest_dir.is_dir():
            raise ModelFileError(f"{self.dest_dir}: output directory does not exist")
        self.scratch = Path(tempfile.mkdtemp(prefix=".weightpress-", dir=self.dest_dir))
        return self.scratch

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                for entry in sorted(self.scratch.iterdir()):
                    _move_into_place(entry, self.dest_dir / entry.name)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return False


def _move_into_place(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.exists():
        # os.replace cannot replace a non-empty directory (.mlpackage): swap it out first.
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    # temporary files and directories are private (0600 / 0700); the result gets the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dst, (0o777 if dst.is_dir() else 0o666) & ~umask)


def _short(e: BaseException, path) -> str:
    """The first line of an error message, without the path the caller already names."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines and lines[0] else type(e).__name__
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text
