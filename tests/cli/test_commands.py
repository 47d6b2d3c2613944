"""Each command through a subprocess, on the embedded demo model."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.cli.conftest import leftovers, run_cli, snapshot, stage_available

needs = lambda stage: pytest.mark.skipif(not stage_available(stage), reason=f"stage {stage} not written yet")  # noqa: E731
WEIGHTS = ("fc1_weight", "fc2_weight", "fc3_weight")


def _total_row(stdout: str) -> list:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("total (")]
    return line.split()


def test_inspect_lists_every_weight(model):
    before = snapshot(model)
    proc = run_cli("inspect", model)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["weight", "shape", "dtype", "size", "sparsity", "unique", "compression", "used",
                                "by"]
    row = next(ln.split() for ln in lines if ln.startswith("fc1_weight"))
    # 256 x 64 fp32 = 65536 bytes, dense, every value distinct, stored plainly, read by the linear op fc1
    assert row == ["fc1_weight", "256x64", "fp32", "64.0", "KB", "0.0%", "16384", "plain", "linear", "(fc1)"]
    assert _total_row(proc.stdout)[:3] == ["total", "(6", "weights)"]
    assert snapshot(model) == before


def test_diff_of_a_model_with_itself(model):
    proc = run_cli("diff", model, model, "--exit-code")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no differences"


def _perturbed_model(tmp_path, scale):
    """The demo model with fc2_weight multiplied by `scale`."""
    from pipeline import demo
    from pipeline.models import save_model

    params = demo.weights()
    params["fc2_weight"] = (params["fc2_weight"] * np.float32(scale)).astype(np.float32)
    return save_model(demo.build_program(params), tmp_path / f"scaled-{scale}.wpz")


def test_diff_reports_a_changed_weight(model, tmp_path):
    other = _perturbed_model(tmp_path, 2.0)
    proc = run_cli("diff", model, other, "--exit-code")
    assert proc.returncode == 1, proc.stderr
    assert "weights changed (1):" in proc.stdout
    assert "fc2_weight" in proc.stdout and "fc1_weight" not in proc.stdout
    # doubling every value: noise == signal, so SNR = 10 log10(1) = 0 dB
    assert re.search(r"fc2_weight.*\s0\.0 dB", proc.stdout), proc.stdout
    assert "weights unchanged: 5" in proc.stdout


def _needs_verify():
    import importlib

    try:
        return not hasattr(importlib.import_module("pipeline"), "verify")
    except ImportError:
        return True


@pytest.mark.skipif(_needs_verify(), reason="pipeline.verify not written yet")
def test_verify_equivalent_and_different(model, tmp_path):
    same = run_cli("verify", model, model, "--samples", "4")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "equivalent within tolerance" in same.stdout
    different = run_cli("verify", model, _perturbed_model(tmp_path, 3.0), "--samples", "4")
    assert different.returncode == 1, different.stdout + different.stderr
    assert "NOT equivalent" in different.stdout
    assert "Traceback" not in different.stderr
    # a 0.1% change of one weight: beyond rtol/atol, but well above 30 dB SNR
    close = _perturbed_model(tmp_path, 1.001)
    assert run_cli("verify", model, close, "--samples", "4").returncode == 1
    lenient = run_cli("verify", model, close, "--samples", "4", "--snr-db", "30")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr


def test_pipeline_list_shows_stages_and_presets():
    proc = run_cli("pipeline", "list")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for preset in ("int8", "int4-block32", "palettize-4bit", "palettize-4bit-grouped", "sparse-50",
                   "sparse+palettize"):
        assert re.search(rf"^{re.escape(preset)}\s", out, re.M), preset
    assert re.search(r"^int8\s+affine_quantize_weights\{.*dtype=\"int8\"", out, re.M)
    import stages

    for name in stages.names():
        st = stages.get(name)
        row = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        for key in st.defaults:
            assert f"{key}=" in row, (name, key)


@needs("affine_quantize_weights")
def test_compress_with_a_preset(model, tmp_path):
    before = snapshot(model)
    out = tmp_path / "int8.wpz"
    proc = run_cli("compress", model, "-o", out, "--preset", "int8", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(model) == before
    assert out.exists() and leftovers(tmp_path) == []
    # the summary: each weight and the total, fp32 -> int8 is about 4x on the big weights
    row = next(ln.split() for ln in proc.stdout.splitlines() if ln.startswith("fc2_weight"))
    # bytes as written in the .wpz files: 128 KB of data plus its zip entry's headers
    assert row[1] == "128x256" and row[3] == "KB" and 128.0 < float(row[2]) < 128.5
    ratio = float(next(c for c in row if c.endswith("x") and c[:-1].replace(".", "").isdigit())[:-1])
    assert 3.8 < ratio <= 4.0
    assert "dB" in " ".join(row)
    assert row[-1] == "s" and float(row[-2]) >= 0  # the stage timed each weight
    total = _total_row(proc.stdout)
    assert total[4] == "KB" and 198.5 < float(total[3]) < 200.5  # 198.5 KB of data, 6 zip entries
    inspected = run_cli("inspect", out)
    assert inspected.returncode == 0, inspected.stderr
    fc2 = next(ln for ln in inspected.stdout.splitlines() if ln.startswith("fc2_weight"))
    assert "int8" in fc2 and "plain" not in fc2


@needs("palettize_weights")
@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_compress_with_stage_options_and_report(model, tmp_path, suffix):
    out, report = tmp_path / "pal.wpz", tmp_path / f"report{suffix}"
    proc = run_cli("compress", model, "-o", out, "--palettize", "4", "--report", report, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    for w in WEIGHTS:
        assert w in text
    if suffix == ".html":
        svgs = re.findall(r"<svg.*?</svg>", text, re.S)
        assert len(svgs) >= len(WEIGHTS)
        for svg in svgs:
            ET.fromstring(svg)  # well-formed
        # 16 LUT entries drawn as red lines on each palettized weight's histogram
        assert max(s.count('stroke="#d62728"') for s in svgs) == 16
    else:
        assert text.count("data:image/svg+xml;base64,") >= len(WEIGHTS)
        assert "| weight |" in text
    assert leftovers(tmp_path) == []


@needs("sparsify_weights")
def test_compress_with_a_recipe_and_cache(model, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[stages]]\nstage = "sparsify_weights"\ntarget_sparsity = 0.5\n')
    cache = tmp_path / "cache"
    for _ in range(2):  # the second run is served by the cache and gives the same file
        out = tmp_path / "sparse.wpz"
        proc = run_cli("compress", model, "-o", out, "--recipe", recipe, "--cache", cache)
        assert proc.returncode == 0, proc.stderr
    inspected = run_cli("inspect", out).stdout
    fc2 = next(ln.split() for ln in inspected.splitlines() if ln.startswith("fc2_weight"))
    assert fc2[5] == "50.0%"


def test_compress_with_a_pipeline_spec_that_changes_nothing(model, tmp_path):
    from pipeline.models import load_model

    out = tmp_path / "same.wpz"
    proc = run_cli("compress", model, "-o", out, "--pipeline", "dead_code_elimination,const_deduplication")
    assert proc.returncode == 0, proc.stderr
    total = _total_row(proc.stdout)
    assert total[3] == total[5] and total[4] == total[6] == "KB" and total[7] == "1.00x"
    assert load_model(out).digest == load_model(model).digest
    assert proc.stderr.strip().splitlines()[-1] == f"wrote {out}"


@pytest.mark.parametrize("suffix", [".onnx", ".mlpackage"])
def test_other_formats_out_and_back(model, tmp_path, suffix):
    pytest.importorskip("coremltools" if suffix == ".mlpackage" else "onnx")
    out = tmp_path / f"model{suffix}"
    proc = run_cli("compress", model, "-o", out, "--pipeline", "dead_code_elimination", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"wrote {out}"  # nothing from the format library
    same = run_cli("verify", model, out, "--samples", "3")  # signatures too: dim names survive
    assert same.returncode == 0, same.stdout + same.stderr
    diffed = run_cli("diff", model, out)
    assert diffed.stdout.strip() == "no differences" or "weights unchanged: 6" in diffed.stdout, diffed.stdout
    assert "weights changed" not in diffed.stdout
    assert leftovers(tmp_path) == []


def test_compressed_onnx_inspects_as_compressed(model, tmp_path):
    """A compressed model written as ONNX reads back compressed: inspect names the forms."""
    pytest.importorskip("onnx")
    out = tmp_path / "sp.onnx"
    proc = run_cli("compress", model, "-o", out, "--preset", "sparse+palettize", "-q")
    assert proc.returncode == 0, proc.stderr
    shown = run_cli("inspect", out)
    assert shown.returncode == 0, shown.stderr
    row = next(ln for ln in shown.stdout.splitlines() if ln.startswith("fc1_weight"))
    assert "50.0%" in row and "lut_to_sparse" in row, row
    assert out.stat().st_size < 40_000  # 4-bit indices and a 1-bit mask, not fp32 values
