"""`compress`: the table's note column (why a stage left a weight as it was, from the
trace) and the ONNX writer options (--onnx-matmul-nbits, --onnx-opset)."""
from __future__ import annotations

import pytest

from tests.cli.conftest import assert_one_line_error, run_cli


def _row(stdout: str, name: str) -> str:
    return next(ln for ln in stdout.splitlines() if ln.startswith(name + " "))


def test_note_says_why_a_stage_left_a_weight(model, tmp_path):
    out, report = tmp_path / "u.wpz", tmp_path / "r.md"
    spec = 'palettize_weights{mode="unique",nbits=4},affine_quantize_weights{dtype="int8"}'
    proc = run_cli("compress", model, "-o", out, "--pipeline", spec, "--report", report)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header[header.index("compression") + 1] == "note"
    reason = "palettize_weights: mode 'unique': more than 16 distinct values"  # the stage's own words
    assert reason in _row(proc.stdout, "fc2_weight")
    assert reason not in _row(proc.stdout, "fc2_bias")  # nobody skipped it: no note
    text = report.read_text()
    assert reason in text and "| note |" in text
    files = next(ln for ln in proc.stdout.splitlines() if ln.startswith("files: "))
    assert "model.wpz" in files and "u.wpz" in files and "on disk" in files and files in text


def test_matmul_nbits_and_opset_options(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    out = tmp_path / "nb.onnx"
    proc = run_cli("compress", model, "-o", out, "--preset", "int4-block32", "--onnx-matmul-nbits",
                   "--onnx-opset", "17", "-q")
    assert proc.returncode == 0, proc.stderr
    m = onnx.load(out)
    assert [o.version for o in m.opset_import if o.domain == ""] == [17]
    # fc1 (64 inputs) and fc2 (256) have 32-blocks; fc3 is too small for the preset
    assert [n.op_type for n in m.graph.node].count("MatMulNBits") == 2
    x = np.random.default_rng(0).random((1, 64)).astype(np.float32)
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {m.graph.input[0].name: x})
    assert y.shape == (1, 10)


def test_onnx_options_need_an_onnx_output(model, tmp_path):
    proc = run_cli("compress", model, "-o", tmp_path / "x.wpz", "--preset", "int8", "--onnx-matmul-nbits")
    assert_one_line_error(proc, "--onnx-matmul-nbits applies to .onnx outputs", code=2)
    assert not (tmp_path / "x.wpz").exists()
