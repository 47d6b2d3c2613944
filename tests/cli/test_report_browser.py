"""The compress report in a real browser (headless Chromium; skipped when none is installed):
benchmarks/report_screenshot.py's checks on the small demo model, and the checks failing on a
blank page and on an unsorted table (so they can fail)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import report_screenshot as shot

pytestmark = pytest.mark.skipif(shot.chromium() is None, reason="no chromium installed")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The demo MLP palettized to 2 bits with calibration samples: a page with an output error."""
    from pipeline import demo
    from pipeline.models import save_model

    d = tmp_path_factory.mktemp("browser")
    save_model(demo.build_program(), d / "digits.wpz")
    np.savez(d / "calib.npz", image=demo.held_out()[0][:32])
    return shot.build_report(d / "digits.wpz", d, d / "calib.npz", ("--palettize", "2"), timeout=300)


def test_the_report_is_drawn_and_sorts_in_chromium(report, tmp_path):
    png = shot.screenshot(report, tmp_path / "r.png", 1000, 1400)
    dom = shot.dump_dom(report, "#sort=-ratio")
    results = shot.check(report, png, dom)
    assert all(ok for _, ok, _ in results), results
    assert "End-to-end output error" in dom and ("onnxruntime" in dom or "interpreter" in dom)


def test_the_checks_fail_on_a_blank_page_and_an_unsorted_table(report, tmp_path):
    figures = shot.blank_figures(np.full((300, 400, 3), 255, np.uint8))  # what a blank page shoots as
    assert figures["grey_std"] == 0 and figures["non_white"] == 0
    assert shot.colour_pixels(np.full((30, 40, 3), 255, np.uint8), ["#b2182b"]) == {"#b2182b": 0}
    # the page as written (no script run, no #sort): rows in program order, no sort mark
    ratios, mark = shot.sorted_ratios(report.read_text())
    assert mark is None and len(ratios) == 2  # fc1, fc2 (fc3 is below the size threshold)


def test_png_reader_against_a_hand_made_file(tmp_path):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # 2x2 RGB; row 0 unfiltered, row 1 with the "up" filter (adds the row above)
    raw = bytes([0, 255, 0, 0, 0, 0, 255]) + bytes([2, 0, 10, 0, 10, 0, 0])
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "t.png").write_bytes(png)
    pixels = shot.read_png(tmp_path / "t.png")
    np.testing.assert_array_equal(pixels, [[[255, 0, 0], [0, 0, 255]], [[255, 10, 0], [10, 0, 255]]])
