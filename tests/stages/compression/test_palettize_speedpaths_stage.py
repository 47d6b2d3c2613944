"""palettize_weights on fp16 weights takes its error figures from the kernel's histograms
instead of a pass over the reconstruction: they must be the figures of what the emitted ops
decompress to (here: as exact as float64 sums; figures.py documents looser bounds)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.compression import palettize_weights
from stages.compression.figures import error_figures, figures_from_sums
from stages.compression.numeric.metrics import error_figures as reference_figures
from tests.stages.compression.helpers import assert_decompress_exact, linear_program

RNG = np.random.default_rng(11)

CASES = [("iOS18", dict(nbits=4)), ("iOS18", dict(nbits=2, granularity="per_grouped_channel", group_size=1)),
         ("iOS18", dict(nbits=3, granularity="per_grouped_channel", group_size=4)),
         ("iOS18", dict(nbits=4, mode="uniform")), ("iOS18", dict(mode="unique")),
         ("iOS18", dict(nbits=2, enable_per_channel_scale=True)),  # the generic path
         ("iOS18", dict(nbits=2, cluster_dim=2)),                  # the generic path
         ("iOS16", dict(nbits=4)), ("iOS17", dict(nbits=2))]


def assert_figures_exact(got: dict, w: np.ndarray, dense: np.ndarray):
    ref = reference_figures(w, dense)  # float64 throughout
    if math.isinf(ref.snr_db):
        assert got["snr_db"] == ref.snr_db
    else:
        assert got["snr_db"] == pytest.approx(ref.snr_db, rel=1e-12)
    assert got["max_abs_error"] == ref.max_abs_error
    assert got["mse"] == pytest.approx(ref.mse, rel=1e-12)


@pytest.mark.parametrize("opset, kw", CASES)
@given(rows=st.sampled_from([4, 8]), cols=st.integers(1, 600), scale=st.sampled_from([1e-6, 0.02, 3e3]),
       seed=st.integers(0, 2 ** 16))
def test_stage_figures_are_those_of_the_decompressed_weight(opset, kw, rows, cols, scale, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * scale).astype(np.float16)
    if kw.get("mode") == "unique":
        w = np.round(w / scale * 2).astype(np.float16)  # few distinct values, -0 among them
    prog = linear_program(w, opset)
    before = prog.digest
    res = palettize_weights(**kw, op_selector=lambda view: True).run(prog)
    assert prog.digest == before
    stats = dict(res.stats["weights"]["w"])
    if "skipped" in stats:  # unique: too many values
        return
    dense = assert_decompress_exact(res.program)
    if kw.get("cluster_dim", 1) == 1 and not kw.get("enable_per_channel_scale"):  # from the histograms
        assert_figures_exact(stats, w, dense)
    # and the chunked float32 pass (the other weights') agrees within its documented precision
    chunked = error_figures(w, dense)
    assert stats["max_abs_error"] == pytest.approx(chunked["max_abs_error"], rel=6e-8, abs=0)
    assert stats["mse"] == pytest.approx(chunked["mse"], rel=2e-6, abs=0)


def test_stage_figures_of_an_exactly_representable_weight():
    w = np.tile(np.array([-1.0, -0.0, 0.0, 2.0], np.float16), (4, 16))
    res = palettize_weights(nbits=2, op_selector=lambda view: True).run(linear_program(w))
    stats = res.stats["weights"]["w"]
    assert stats["snr_db"] == math.inf and stats["max_abs_error"] == 0.0 and stats["mse"] == 0.0


def test_figures_from_sums_by_hand():
    assert figures_from_sums(2.0, 200.0, 1.5, 4) == {"snr_db": 20.0, "max_abs_error": 1.5, "mse": 0.5}
    assert figures_from_sums(0.0, 1.0, 0.0, 4)["snr_db"] == math.inf
    assert figures_from_sums(1.0, 0.0, 1.0, 4)["snr_db"] == -math.inf
