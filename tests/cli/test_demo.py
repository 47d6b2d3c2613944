"""`weightpress demo` end to end on the embedded digits model."""
from __future__ import annotations

import pytest

from tests.cli.conftest import run_cli, stage_available

PRESETS = ("int8", "int4-block32", "palettize-4bit", "palettize-4bit-grouped", "sparse-50", "sparse+palettize")


def _rows(stdout: str) -> dict:
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and (cells[0] in PRESETS or cells[0] == "fp32"):
            rows[cells[0]] = cells
    return rows


@pytest.mark.skipif(not all(stage_available(s) for s in ("affine_quantize_weights", "palettize_weights",
                                                          "sparsify_weights")),
                    reason="compression stages not written yet")
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo-out"
    proc = run_cli("demo", "--out", out, "--no-progress", timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == {"fp32", *PRESETS}, proc.stdout
    # columns: preset, size before, after, ratio (ends in x), accuracy, change, time
    accuracy = {name: float(cells[next(i for i, c in enumerate(cells) if c.endswith("x")) + 1])
                for name, cells in rows.items()}
    assert accuracy["fp32"] >= 0.9
    assert abs(accuracy["int8"] - accuracy["fp32"]) <= 0.01
    for name in PRESETS:
        assert 0.5 <= accuracy[name] <= 1.0, (name, accuracy[name])
        ratio = float(next(c for c in rows[name] if c.endswith("x"))[:-1])
        assert ratio > 1.5, (name, ratio)
    written = {p.name for p in out.iterdir()}
    assert "digits_mlp_fp32.wpz" in written and "digits_mlp_int8.wpz" in written
    assert len([n for n in written if n.endswith(".wpz")]) == 1 + len(PRESETS)
