"""ir.atomic: an output appears whole or not at all; a write that fails midway leaves the
old content and no temporary behind (the helper, and the writers that call it)."""
import os

import numpy as np
import pytest

from ir import atomic
from ir.atomic import replace, scratch, write_bytes, write_file, write_text, write_tree


class Boom(Exception):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_file_writes_and_leaves_nothing_else(tmp_path):
    write_bytes(tmp_path / "a.bin", b"new")
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.bin"]
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~_umask()
    write_text(tmp_path / "p.txt", "é", private=True)
    assert (tmp_path / "p.txt").read_text(encoding="utf-8") == "é"
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_fill_that_raises_midway_keeps_the_old_file(tmp_path, error):
    target = tmp_path / "m.wpz"
    target.write_bytes(b"old")

    def fill(f):
        f.write(b"half of the new")
        f.flush()
        raise error()

    with pytest.raises(error):
        write_file(target, fill, fsync=True)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.wpz"]


def test_on_open_failing_leaves_no_temporary(tmp_path):
    def refuse(fd):
        raise Boom()

    with pytest.raises(Boom):
        write_bytes(tmp_path / "x", b"1", on_open=refuse)
    assert os.listdir(tmp_path) == []


def test_fsync_only_when_asked(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    write_bytes(tmp_path / "a", b"1")
    assert calls == []
    write_bytes(tmp_path / "b", b"1", fsync=True)
    assert len(calls) == 1


def _tree(path, text):
    os.makedirs(os.path.join(path, "sub"))
    with open(os.path.join(path, "sub", "f"), "w") as f:
        f.write(text)


@pytest.mark.parametrize("can_exchange", [True, False])
def test_a_directory_replaces_a_directory(tmp_path, monkeypatch, can_exchange):
    if not can_exchange:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    dst = tmp_path / "m.mlpackage"
    _tree(dst, "old")
    write_tree(dst, lambda staged: _tree(staged, "new"))
    assert (dst / "sub" / "f").read_text() == "new" and os.listdir(tmp_path) == ["m.mlpackage"]


def test_replace_keeps_what_it_replaced_when_asked(tmp_path):
    (tmp_path / "dst").write_text("old")
    (tmp_path / "src").write_text("new")
    replace(tmp_path / "src", tmp_path / "dst", keep=tmp_path / "kept")
    assert (tmp_path / "dst").read_text() == "new" and (tmp_path / "kept").read_text() == "old"
    _tree(tmp_path / "d1", "old")
    _tree(tmp_path / "d2", "new")
    replace(tmp_path / "d2", tmp_path / "d1", keep=tmp_path / "d-kept")
    assert (tmp_path / "d1" / "sub" / "f").read_text() == "new"
    assert (tmp_path / "d-kept" / "sub" / "f").read_text() == "old"
    assert not (tmp_path / "d2").exists()


def test_replace_never_swaps_a_file_for_a_directory(tmp_path):
    _tree(tmp_path / "d", "x")
    (tmp_path / "f").write_text("y")
    with pytest.raises(IsADirectoryError):
        replace(tmp_path / "f", tmp_path / "d")
    with pytest.raises(NotADirectoryError):
        replace(tmp_path / "d", tmp_path / "f")
    assert (tmp_path / "f").read_text() == "y" and (tmp_path / "d" / "sub" / "f").read_text() == "x"


def test_a_tree_build_that_raises_keeps_the_old_tree(tmp_path):
    dst = tmp_path / "m.mlpackage"
    _tree(dst, "old")

    def build(staged):
        _tree(staged, "new")
        raise Boom()

    with pytest.raises(Boom):
        write_tree(dst, build)
    assert (dst / "sub" / "f").read_text() == "old" and os.listdir(tmp_path) == ["m.mlpackage"]


def test_scratch_is_removed_whatever_happens(tmp_path):
    with pytest.raises(Boom):
        with scratch(tmp_path) as s:
            (s / "x").write_text("1")
            raise Boom()
    assert os.listdir(tmp_path) == []


# ---- the writers that call it -------------------------------------------------------------

def _program(value):
    from ir.builder import TensorSpec, program

    @program(inputs={"x": TensorSpec((1, 4), "fp32")})
    def net(b, x):
        return b.linear(x=x, weight=b.const(np.full((3, 4), value, np.float32), name="w"))

    return net


def test_serialize_save_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    from ir import serialize

    path = tmp_path / "m.wpz"
    serialize.save(_program(1.0), path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise Boom()

    monkeypatch.setattr(serialize, "encode_tensor", broken)
    with pytest.raises(Boom):
        serialize.save(_program(2.0), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.wpz"]
    assert serialize.load(path).digest == _program(1.0).digest


def test_onnx_export_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from ir.formats.onnx import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(_program(1.0), path)
    before = path.read_bytes()

    def broken(model, target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"partial")
        raise Boom()

    monkeypatch.setattr(onnx, "save_model", broken)
    with pytest.raises(Boom):
        export_onnx(_program(2.0), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.onnx"]


def _weights(data):
    def write(p):
        with open(p, "wb") as f:
            f.write(data)
    return write


def test_coreml_package_failing_midway_keeps_the_old_package(tmp_path):
    from ir.formats.coreml import package

    path = tmp_path / "m.mlpackage"
    package.write(path, b"model-1", _weights(b"weights-1"))

    def broken(p):
        with open(p, "wb") as f:
            f.write(b"half")
        raise Boom()

    with pytest.raises(Boom):
        package.write(path, b"model-2", broken)
    model, weights = package.locate(path)
    assert open(model, "rb").read() == b"model-1" and os.listdir(tmp_path) == ["m.mlpackage"]
    package.write(path, b"model-3", _weights(b"weights-3"))
    assert open(package.locate(path)[0], "rb").read() == b"model-3"
    (tmp_path / "file.mlpackage").write_text("x")
    with pytest.raises(package.PackageError, match="exists and is not a package directory"):
        package.write(tmp_path / "file.mlpackage", b"", _weights(b""))
    assert (tmp_path / "file.mlpackage").read_text() == "x"
