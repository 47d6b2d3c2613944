"""weightpress compress --calibration, through a subprocess, on the embedded demo model."""
from __future__ import annotations

import numpy as np

from tests.cli.conftest import assert_one_line_error, run_cli


def _calib(tmp_path, **arrays):
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    return path


def _digits(n=64):
    from pipeline import demo

    return demo.held_out()[0][:n]


def test_quantize_with_calibration_runs_gptq(model, tmp_path):
    out = tmp_path / "out.wpz"
    proc = run_cli("compress", model, "-o", out, "--quantize", "int4", "--calibration", _calib(tmp_path, image=_digits()))
    assert proc.returncode == 0, proc.stderr
    from ir.serialize import load
    from pipeline.verify import verify

    prog = load(out)
    assert "calibration" not in prog.attrs  # the statistics are not written with the model
    kinds = {op.op_type for op in prog.main.ops}
    assert "constexpr_blockwise_shift_scale" in kinds
    from pipeline import demo

    report = verify(demo.build_program(), prog, inputs={"image": _digits(32)}, rtol=1, atol=10)
    assert report.passed


def test_bad_calibration_file_is_one_line(model, tmp_path):
    out = tmp_path / "out.wpz"
    proc = run_cli("compress", model, "-o", out, "--quantize", "int4",
                   "--calibration", _calib(tmp_path, pixels=_digits()))
    assert_one_line_error(proc, "calibration data", "'image'")  # the input it lacks
    assert not out.exists()
    proc = run_cli("compress", model, "-o", out, "--palettize", "4", "--calibration", tmp_path / "none.npz")
    assert_one_line_error(proc, "no such file")
    assert not out.exists()


def test_pipeline_spec_gets_a_calibrate_step(model, tmp_path):
    out = tmp_path / "out.wpz"
    proc = run_cli("compress", model, "-o", out, "--pipeline", 'weighted_palettize_weights{nbits=4}',
                   "--calibration", _calib(tmp_path, image=_digits()))
    assert proc.returncode == 0, proc.stderr
    assert "weighted_kmeans" in proc.stdout or "lut" in proc.stdout
