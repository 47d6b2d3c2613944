"""Foreign-op providers load by prefix, not by whatever the caller imported before.

Each check runs in a fresh interpreter: in this test process ir.formats.onnx is
long imported, which is exactly what hid the bug (a .wpz with onnx.* ops
evaluated only when the ONNX package happened to be loaded).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ir import Program
from ir.builder import Builder
from ir.ops import DuplicateRegistration, register, register_block_kernel, register_foreign
from ir.serialize import save
from ir.types import TensorType

REPO = Path(__file__).resolve().parents[2]


def _softmax_program():
    b = Builder()
    x = b.input("x", TensorType.of("fp32", (2, 3)))
    y = b.foreign("onnx.Softmax", [TensorType.of("fp32", (2, 3))], in0=x, attrs={"axis": -1})
    return Program.make([b.function("main", y)])


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_a_loaded_wpz_with_onnx_ops_evaluates_without_importing_the_onnx_package(tmp_path):
    path = tmp_path / "m.wpz"
    save(_softmax_program(), path)
    proc = _fresh_python(f"""
        import sys
        import numpy as np
        from ir.serialize import load
        from ir.interpret import evaluate
        assert "ir.formats.onnx" not in sys.modules, "the test must start without the ONNX package"
        prog = load({str(path)!r})
        out = evaluate(prog, {{"x": np.array([[0, 0, 0], [0, 1, 2]], np.float32)}})
        print(repr(np.asarray(list(out.values())[0]).round(4).tolist()))
    """)
    assert proc.returncode == 0, proc.stderr
    # softmax by hand: uniform thirds; exp(0..2) / sum
    e = np.exp([0.0, 1.0, 2.0])
    expected = [[0.3333, 0.3333, 0.3333], (e / e.sum()).round(4).tolist()]
    assert np.allclose(eval(proc.stdout.strip()), expected, atol=1e-4)


def test_cli_verify_of_a_wpz_with_onnx_ops_against_itself_is_equivalent(tmp_path):
    path = tmp_path / "m.wpz"
    save(_softmax_program(), path)
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "verify", str(path), str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT" not in proc.stdout


def test_registering_an_op_type_twice_is_refused():
    with pytest.raises(DuplicateRegistration, match="'relu' is already registered"):
        register("relu", (), lambda ins, attrs: [], lambda vals, ctx: [])


def test_registering_a_foreign_prefix_or_block_kernel_twice_is_refused():
    from ir.ops import foreign_handler

    assert foreign_handler("onnx.Relu") is not None  # loads the provider
    with pytest.raises(DuplicateRegistration, match="onnx"):
        register_foreign("onnx", lambda op, vals, types: [])
    with pytest.raises(DuplicateRegistration, match="onnx.If"):
        register_block_kernel("onnx.If", lambda *a: [])
