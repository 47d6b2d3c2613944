"""The pieces behind inspect / diff / the compress summary and report, in process."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from pipeline.report import (compare_weights, diff_models, format_table, histogram_svg, render_report,
                             snr_db, summary_rows, weights_of)

LUT = np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1) * 0.5 - 1.0
INDICES = (np.arange(8 * 64) % 16).astype(np.uint8).reshape(8, 64)


def _model(weight_fn):
    @program(inputs={"x": TensorSpec((2, 64))})
    def net(b, x):
        return b.linear(x=x, weight=weight_fn(b), name="fc")

    return net


def _palettized(b):
    idx = b.const(INDICES, name="w_indices", dtype="uint4")
    return b.constexpr_lut_to_dense(indices=idx, lut=LUT, name="w")


def test_snr_hand_computed():
    # signal 3^2 + 4^2 = 25, noise (4-3)^2 = 1: 10 log10(25)
    assert snr_db(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(13.9794, abs=1e-4)
    assert snr_db(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == math.inf


def test_palettized_weight_is_described_by_its_stored_form():
    (w,) = weights_of(_model(_palettized))  # the indices and the LUT are ingredients, not weights
    assert (w.name, w.shape, w.dtype) == ("w", (8, 64), "fp32")
    assert w.stored_bytes == 8 * 64 * 4 // 8 + 16 * 4  # packed uint4 indices + fp32 LUT
    assert w.compression == "lut_to_dense(uint4)"
    assert w.unique_values == 16 and w.consumers == (("fc", "weight"),)
    np.testing.assert_array_equal(w.marks, LUT.reshape(-1))
    assert w.marks_label == "LUT"
    assert w.sparsity == pytest.approx(32 / 512)  # LUT entry 2 is 0.0, used by 1 index in 16


def test_blockwise_quantized_weight_marks_the_grid_of_its_first_block():
    data = (np.arange(8 * 64) % 255 - 127).astype(np.int8).reshape(8, 64)
    scale = np.array([[0.5], [1.0], [1.5], [2.0], [2.5], [3.0], [3.5], [4.0]], np.float32)

    def quantized(b):
        return b.constexpr_blockwise_shift_scale(data=b.const(data, name="q"), scale=scale, name="w")

    (w,) = weights_of(_model(quantized))
    assert w.stored_bytes == 512 + 8 * 4
    assert w.compression == "blockwise_shift_scale(int8)"
    assert w.marks_label == "int8 grid of block 1 of 8"
    np.testing.assert_array_equal(w.marks, 0.5 * np.arange(-128, 128))


def test_sparse_weight_counts_mask_bits_and_nonzeros():
    mask = np.zeros((8, 64), np.uint8)
    mask[:, ::4] = 1  # 128 of 512 kept

    def sparse(b):
        return b.constexpr_sparse_to_dense(nonzero_data=np.ones(128, np.float32),
                                           mask=b.const(mask, name="m", dtype="uint1"), name="w")

    (w,) = weights_of(_model(sparse))
    assert w.stored_bytes == 512 // 8 + 128 * 4
    assert w.sparsity == pytest.approx(0.75)
    assert w.compression == "sparse_to_dense(uint1)"


def test_compare_matches_a_renamed_weight_through_its_consumer():
    dense = LUT.reshape(-1)[INDICES]
    before = _model(lambda b: b.const(dense, name="fc_weight"))
    after = _model(_palettized)  # named "w" now, still feeding fc.weight
    (change,) = compare_weights(before, after)
    assert change.after.name == "w"
    assert change.snr == math.inf and change.max_abs_error == 0.0
    assert change.ratio == pytest.approx(2048 / 320)
    headers, rows = summary_rows([change], total_seconds=1.5)
    assert rows[-1][:5] == ("total (1 weights)", "", "2.0 KB", "320 B", "6.40x")
    assert rows[-1][-1] == "1.500 s"


def test_diff_reports_storage_and_op_changes():
    dense = LUT.reshape(-1)[INDICES]
    d = diff_models(_model(lambda b: b.const(dense, name="w")), _model(_palettized))
    assert not d.added and not d.removed and len(d.changed) == 1 and d.unchanged == 0
    assert ("constexpr_lut_to_dense", 0, 1) in d.op_counts
    assert diff_models(_model(_palettized), _model(_palettized)).empty


def test_histogram_svg_is_well_formed_and_marks_each_lut_entry():
    values = np.random.default_rng(0).normal(size=1000)
    svg = histogram_svg(values, marks=np.linspace(-2, 2, 16), title="w <&> test")
    root = ET.fromstring(svg)
    lines = [e for e in root if e.tag.endswith("line") and e.get("stroke") == "#d62728"]
    assert len(lines) == 16
    assert all(float(e.get("y1")) < float(e.get("y2")) for e in lines)
    rects = [e for e in root if e.tag.endswith("rect")]
    assert 0 < len(rects) <= 64
    ticks = ET.fromstring(histogram_svg(values, marks=np.linspace(-2, 2, 256)))
    assert len([e for e in ticks if e.get("stroke") == "#d62728"]) == 256  # many: ticks under the axis
    ET.fromstring(histogram_svg(np.zeros(10)))  # a constant weight still draws


def test_format_table_aligns_numbers_right():
    text = format_table(("name", "bytes"), [("a", "1.0 KB"), ("long_name", "12.5 KB")])
    assert text.splitlines() == ["name" + " " * 9 + "bytes", "---------  -------", "a" + " " * 11 + "1.0 KB",
                                 "long_name  12.5 KB"]


def test_report_kind_follows_the_extension():
    dense = LUT.reshape(-1)[INDICES]
    changes = compare_weights(_model(lambda b: b.const(dense, name="w")), _model(_palettized))
    html_text = render_report("r.html", "t", changes)
    assert html_text.startswith("<!DOCTYPE html>") and "<svg" in html_text
    assert render_report("r.md", "t", changes).startswith("# t")
    with pytest.raises(ValueError, match="html or .md"):
        render_report("r.pdf", "t", changes)


def test_a_spike_is_cut_so_the_rest_stays_readable():
    from pipeline.report import histogram_svg

    values = np.concatenate([np.zeros(1000), np.linspace(-1, 1, 640)])  # 10 per bin, 1010 at zero
    root = ET.fromstring(histogram_svg(values, bins=64))
    ns = "{http://www.w3.org/2000/svg}"
    heights = sorted(float(r.get("height")) for r in root.iter(ns + "rect"))
    plot = 170 - 30 - 22
    assert heights[-1] == pytest.approx(plot)  # the spike fills the plot, cut
    assert heights[0] == pytest.approx(plot / 1.25)  # a 10-count bin: 10 / (1.25 * 10) of the height
    labels = [t.text for t in root.iter(ns + "text")]
    assert "1010 \u2191" in labels and "0" in labels
