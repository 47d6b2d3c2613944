"""Model files by extension; writes are all or nothing."""
from __future__ import annotations

import os
import stat

import pytest

from pipeline.models import ModelFileError, format_of, load_model, save_model, staged_outputs


def test_formats_by_extension():
    assert format_of("a/b.ONNX").name == "ONNX"
    assert format_of("m.mlpackage").name == "Core ML"
    assert format_of("m.wpz").name == "weightpress"
    with pytest.raises(ModelFileError, match="unknown model format '.pt'"):
        format_of("m.pt")


def test_missing_file_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "none.wpz")


def test_round_trip_and_replace(demo_model, tmp_path):
    prog = load_model(demo_model)
    out = tmp_path / "copy.wpz"
    out.write_bytes(b"old")
    save_model(prog, out)
    assert load_model(out).digest == prog.digest
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.wpz"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    (tmp_path / "keep.onnx").write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with staged_outputs(tmp_path) as scratch:
            (scratch / "keep.onnx").write_bytes(b"half writ")
            (scratch / "keep.onnx.data").write_bytes(b"sidecar")
            raise RuntimeError("writer crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]
    assert (tmp_path / "keep.onnx").read_bytes() == b"previous"


def test_sidecars_and_directories_move_into_place(tmp_path):
    (tmp_path / "m.mlpackage").mkdir()
    (tmp_path / "m.mlpackage" / "old").write_text("old")
    with staged_outputs(tmp_path) as scratch:
        (scratch / "m.mlpackage").mkdir()
        (scratch / "m.mlpackage" / "new").write_text("new")
        (scratch / "m.onnx.data").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage", "m.onnx.data"]
    assert [p.name for p in (tmp_path / "m.mlpackage").iterdir()] == ["new"]
