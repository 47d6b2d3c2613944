"""The HTML report's model-level view (pipeline.report_page) and the end-to-end output error
(pipeline.output_error), in process on small programs with figures computed by hand."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from pipeline.output_error import output_error_line, output_errors
from pipeline.report import compare_weights, render_report
from pipeline.report_page import compressed, layers_svg, nominal_bits, render_page
from stages.compression import palettize_weights

RNG = np.random.default_rng(0)
W_BIG = RNG.standard_normal((64, 64)).astype(np.float32)
W_TINY = RNG.standard_normal((4,)).astype(np.float32)


@program(inputs={"x": TensorSpec((2, 64))})
def net(b, x):
    h = b.linear(x=x, weight=b.const(W_BIG, name="big"), name="fc")
    return b.add(x=h, y=b.const(np.resize(W_TINY, 64).astype(np.float32), name="bias"), name="out")


def _identity_weight(scale: float):
    @program(inputs={"x": TensorSpec((2, 4))})
    def lin(b, x):
        return b.linear(x=x, weight=b.const(np.eye(4, dtype=np.float32) * scale, name="w"), name="fc")

    return lin


def _changes():
    after = palettize_weights(nbits=2)(net)
    after = getattr(after, "program", after)
    notes = {"bias": "below the size threshold: 64 elements, compressed when more than 2048"}
    return compare_weights(net, after, notes=notes)


def test_output_error_figures_by_hand():
    # y = 2x against y = x: every sample's direction is the same (cosine 1), the noise is x
    # itself: SNR = 10 log10(sum 4x^2 / sum x^2) = 10 log10 4; max |2x - x| / max |2x| = 1/2
    x = np.array([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, -1.0]], np.float32)
    (e,) = output_errors(_identity_weight(2.0), _identity_weight(1.0), [{"x": x}], evaluator="interpreter")
    assert (e.samples, e.evaluator) == (2, "interpreter")
    assert e.cosines == pytest.approx((1.0, 1.0))
    assert e.snr_db == pytest.approx(10 * math.log10(4))
    assert e.max_rel_error == pytest.approx(0.5)
    assert "cosine min 1.0000" in output_error_line([e])


def test_output_error_cosine_per_sample():
    # a weight that zeroes the last input: sample 1 loses nothing, sample 2 = (0, 0, 3, -1) -> (0, 0, 3, 0)
    # cosine = 9 / (sqrt(10) * 3)
    weight = np.diag([1.0, 1.0, 1.0, 0.0]).astype(np.float32)

    @program(inputs={"x": TensorSpec((2, 4))})
    def cut(b, x):
        return b.linear(x=x, weight=b.const(weight, name="w"), name="fc")

    x = np.array([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, -1.0]], np.float32)
    (e,) = output_errors(_identity_weight(1.0), cut, [{"x": x}, {"x": x}], evaluator="interpreter")
    assert e.samples == 4
    assert e.cosines == pytest.approx((1.0, 9 / (math.sqrt(10) * 3)) * 2)
    assert e.min_cosine == pytest.approx(9 / (math.sqrt(10) * 3))
    # the same figures from onnxruntime, when it is installed and the programs export
    pytest.importorskip("onnxruntime")
    (o,) = output_errors(_identity_weight(1.0), cut, [{"x": x}])
    assert o.evaluator == "onnxruntime" and o.cosines == pytest.approx(e.cosines[:2], abs=1e-6)


def test_max_batches_caps_the_samples_run():
    x = np.ones((2, 4), np.float32)
    (e,) = output_errors(_identity_weight(1.0), _identity_weight(1.0), [{"x": x}] * 5, max_batches=2,
                         evaluator="interpreter")
    assert e.samples == 4 and e.snr_db == math.inf


def test_the_page_shows_compressed_weights_and_folds_the_rest_by_reason():
    changes = _changes()
    assert [c.name for c in compressed(changes)] == ["big"]
    assert nominal_bits(compressed(changes)[0]) == 2.0  # lut_to_dense(uint2)
    page = render_page("t", changes, 1.5, notes=("model: m",))
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)  # every chart is well-formed
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing external
    table = page[page.index("<table class='sortable' id='weights'>"):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 2  # the header and the one compressed weight
    ratio = compressed(changes)[0].ratio
    assert f'data-v="{ratio!r}"' in table  # the number behind the cell, for the sort
    folded = page[page.index("<details id='left-alone'>"):]
    assert folded.startswith("<details id='left-alone'><summary>1 weights left as they were")
    assert "<h3>below the size threshold (1)</h3>" in folded and ">bias<" in folded
    assert "not measured" in page  # no calibration samples given: said so


def test_the_layer_chart_has_one_bar_pair_per_compressed_weight():
    changes = _changes()
    root = ET.fromstring(layers_svg(changes))
    ns = "{http://www.w3.org/2000/svg}"
    groups = list(root.iter(ns + "g"))
    assert len(groups) == 1
    before, after, snr = [r for r in groups[0].iter(ns + "rect")]
    c = compressed(changes)[0]
    # both bars on one scale: their widths are in the ratio of the bytes
    assert float(before.get("width")) / float(after.get("width")) == pytest.approx(c.ratio, rel=1e-2)
    assert after.get("fill") == "#b2182b"  # 2-bit codes


def test_report_with_output_errors_in_both_kinds():
    changes = _changes()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    after = palettize_weights(nbits=2)(net)
    errors = output_errors(net, getattr(after, "program", after), [{"x": x}], evaluator="interpreter")
    page = render_report("r.html", "t", changes, output_errors=errors)
    assert "End-to-end output error" in page and f"{errors[0].min_cosine:.5f}" in page
    md = render_report("r.md", "t", changes, output_errors=errors)
    assert "## End-to-end output error" in md and f"{errors[0].min_cosine:.5f}" in md
    assert "not measured" in render_report("r.md", "t", changes)


def test_reasons_are_grouped_without_their_figures_or_stage_name():
    from pipeline.report_page import _reason_group

    assert _reason_group("below the size threshold: 64 elements, compressed when more than 2048") == \
        "below the size threshold"
    assert _reason_group("palettize_weights: below the size threshold: 8 elements; affine: x") == \
        "below the size threshold"
    assert _reason_group("") == "not selected by any stage"


def test_compress_with_calibration_prints_and_reports_the_output_error(demo_model, tmp_path):
    from pipeline import demo
    from tests.cli.conftest import run_cli

    np.savez(tmp_path / "calib.npz", image=demo.held_out()[0][:32])
    out, report = tmp_path / "out.wpz", tmp_path / "r.html"
    proc = run_cli("compress", demo_model, "-o", out, "--palettize", "4", "--calibration", tmp_path / "calib.npz",
                   "--report", report, "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("output error on 32 of the calibration"))
    worst = float(line.split("cosine min ")[1].split(" ")[0])
    assert 0.9 < worst <= 1.0
    assert f"{worst:.4f}" in report.read_text()


def test_an_output_error_that_cannot_be_measured_is_a_note_not_a_failure():
    from pipeline.calibration import calibration_data
    from pipeline.cli import _output_errors

    @program(inputs={"x": TensorSpec((2, 64))})
    def other(b, x):  # another output shape: nothing to compare with
        return b.linear(x=x, weight=b.const(W_BIG[:8], name="big"), name="fc")

    data = calibration_data({"x": np.ones((4, 64), np.float32)})
    errors, note = _output_errors(net, other, data)
    assert errors == [] and note.startswith("not measured: the models could not be run")
    assert "changed shape" in note
    page = render_report("r.html", "t", _changes(), output_note=note)
    assert "changed shape" in page


def test_one_giant_weight_is_drawn_cut_and_the_rest_keep_the_scale():
    from pipeline.report_page import _bar_scale

    assert _bar_scale([100, 90, 10]) == 100  # no outlier: the largest fills the width
    assert _bar_scale([1000, 100, 10]) == 150  # 10x the second: the scale follows the second
    assert _bar_scale([]) == 1.0
