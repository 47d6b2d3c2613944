"""`weightpress compress --target-bpw / --target-size` (the mixed_precision stage) on the demo model."""
from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET

import pytest

from pipeline.cli import parse_size
from tests.cli.conftest import assert_one_line_error, leftovers, run_cli

WEIGHTS = ("fc1_weight", "fc2_weight", "fc3_weight")


def test_target_bpw_prints_the_allocation_and_reports_it(model, tmp_path):
    out, report = tmp_path / "mp.onnx", tmp_path / "report.html"
    proc = run_cli("compress", model, "-o", out, "--target-bpw", "4.5", "--report", report, "--no-progress",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("mixed precision (target 4.5 bits"))
    bpw = float(re.search(r": ([0-9.]+) bits per weight", line).group(1))
    assert bpw <= 4.5
    assert "dual bound" in line and "optimal" in line
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.split()[:1] and ln.split()[0] in WEIGHTS]
    chosen = [r for r in rows if len(r) >= 2 and r[1] in ("palettize_2", "palettize_3", "palettize_4", "palettize_6",
                                                           "int4_block32", "int8_channel", "fp16", "keep")]
    assert {r[0] for r in chosen} == {"fc1_weight", "fc2_weight"}  # fc3 (10x64) is below the size threshold
    text = report.read_text()
    assert "<h2>Mixed precision</h2>" in text and "rate-distortion" in text
    for svg in re.findall(r"<svg.*?</svg>", text, re.S):
        ET.fromstring(svg)
    assert leftovers(tmp_path) == []


def test_infeasible_size_is_one_line_naming_the_minimum(model, tmp_path):
    out = tmp_path / "mp.wpz"
    proc = run_cli("compress", model, "-o", out, "--target-size", "1KB", "--no-progress", timeout=300)
    assert_one_line_error(proc, code=1)
    assert "below the smallest configuration" in proc.stderr and "bytes" in proc.stderr
    assert not out.exists()


def test_two_budgets_are_refused(model, tmp_path):
    proc = run_cli("compress", model, "-o", tmp_path / "x.wpz", "--target-bpw", "4", "--target-size", "5MB")
    assert_one_line_error(proc)
    assert "give one" in proc.stderr


@pytest.mark.parametrize("text, size", [("5MB", 5_000_000), ("4.5MiB", int(4.5 * 2 ** 20)), ("800kb", 800_000),
                                        ("123", 123), ("2 GiB", 2 * 2 ** 30), ("1.5K", 1500)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "5XB", "-3MB", "0"])
def test_bad_sizes(text):
    with pytest.raises(argparse.ArgumentTypeError, match="positive number of bytes"):
        parse_size(text)
