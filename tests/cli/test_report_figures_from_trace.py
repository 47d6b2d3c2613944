"""The compress table reads each weight's error figures from the trace (the figures the
stage computed exactly), recomputing only what no single stage reported (issue 14)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from pipeline import Pipeline
from pipeline.cli import _weight_stats
from pipeline.report import compare_weights, stage_figures
from stages.compression import affine_quantize_weights, palettize_weights

W = np.random.default_rng(0).standard_normal((48, 64)).astype(np.float32)


@program(inputs={"x": TensorSpec((1, 64))})
def net(b, x):
    return b.linear(x=x, weight=b.const(W, name="w"), name="fc")


def test_stage_figures_keeps_weights_one_step_compressed():
    steps = [{"w": {"snr_db": 40.0, "max_abs_error": 0.01, "mode": "x"}, "v": {"skipped": "too small"},
              "u": {"snr_db": 30.0, "max_abs_error": 0.1}},
             {"u": {"snr_db": 20.0, "max_abs_error": 0.2}, "v": {"skipped": "too small"}}]
    # u went through two stages: figures against each stage's input do not compose
    assert stage_figures(steps) == {"w": {"snr_db": 40.0, "max_abs_error": 0.01}}


def test_given_figures_are_shown_instead_of_recomputed_ones():
    after = affine_quantize_weights(net, dtype="int8")
    (recomputed,) = compare_weights(net, after)
    assert 30 < recomputed.snr < 60
    (given,) = compare_weights(net, after, figures_by_weight={"w": {"snr_db": 12.5, "max_abs_error": 0.25}})
    assert (given.snr, given.max_abs_error) == (12.5, 0.25)


def test_the_table_shows_the_stage_figures_of_the_trace():
    trace = Pipeline([palettize_weights(nbits=2)]).run(net)
    stats = trace.steps[0].stats["weights"]["w"]
    figures = stage_figures(dict(_weight_stats(s)) for s in trace.steps)
    (change,) = compare_weights(net, trace.result, figures_by_weight=figures)
    assert change.snr == stats["snr_db"] and change.max_abs_error == stats["max_abs_error"]
    (recomputed,) = compare_weights(net, trace.result)  # float64 from the dense values: the same figure
    assert change.snr == pytest.approx(recomputed.snr, abs=1e-4)
    assert math.isfinite(change.snr)
