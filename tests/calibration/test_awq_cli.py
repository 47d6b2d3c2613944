"""weightpress compress --awq: awq_scale_weights before the calibrated quantizer, on the demo MLP
(linear -> relu -> linear -> relu -> linear: fc1's and fc2's output channels take the scales of
fc2's and fc3's inputs through the relus)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.cli.conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pipeline import demo as d
    from pipeline.models import save_model

    root = tmp_path_factory.mktemp("awq_cli")
    save_model(d.build_program(), root / "digits.wpz")
    np.savez(root / "calib.npz", image=d.held_out()[0][:64])
    return root


def test_awq_flag_scales_then_quantizes(demo):
    from ir.serialize import load
    from pipeline import demo as d
    from pipeline.verify import verify

    out = demo / "awq.wpz"
    proc = run_cli("compress", demo / "digits.wpz", "-o", out, "--quantize", "int4", "--awq",
                   "--calibration", demo / "calib.npz")
    assert proc.returncode == 0, proc.stderr
    assert "awq_scale_weights" in proc.stdout, proc.stdout
    prog = load(out)
    assert "calibration" not in prog.attrs
    images, labels = d.held_out()
    assert d.accuracy(prog, images, labels) >= d.accuracy(d.build_program(), images, labels) - 0.05
    assert verify(d.build_program(), prog, inputs={"image": images[:32]}, rtol=1, atol=10).passed


@pytest.mark.parametrize("extra, words", [
    (("--quantize", "int4"), "needs --calibration"),
    (("--pipeline", "gptq_quantize_weights", "--calibration", "CALIB"), "--quantize or --palettize"),
])
def test_awq_flag_misuse_is_one_line(demo, extra, words):
    args = [str(demo / "calib.npz") if a == "CALIB" else a for a in extra]
    out = demo / "bad.wpz"
    proc = run_cli("compress", demo / "digits.wpz", "-o", out, "--awq", *args)
    assert_one_line_error(proc, words)
    assert not out.exists()
