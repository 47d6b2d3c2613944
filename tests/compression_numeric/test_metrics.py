"""The one error-figures module: hand-computed values and every edge case (issue 14)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stages.compression.numeric import metrics
from stages.compression.numeric.metrics import Sums, cosine_from_sums, snr_db_from_sums, sums

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("signal, noise, expected", [
    (200.0, 2.0, 20.0),          # 10 log10(100)
    (1.0, 1.0, 0.0),
    (0.0, 0.0, INF),             # exact, even with no signal
    (NAN, 0.0, INF),             # exact wins over everything
    (1.0, NAN, NAN), (NAN, 1.0, NAN),
    (0.0, 1.0, -INF),            # all noise
    (INF, INF, -INF), (5.0, INF, -INF),
    (INF, 1.0, INF),
    (1e-300, 1e300, -INF),       # the ratio underflows: -inf, not a math domain error
    (1e300, 1e-300, INF),        # the ratio overflows
])
def test_snr_edge_cases(signal, noise, expected):
    got = snr_db_from_sums(signal, noise)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12) if math.isfinite(expected) else got == expected


@pytest.mark.parametrize("dot, r2, a2, expected", [
    (2.0, 1.0, 4.0, 1.0), (-2.0, 1.0, 4.0, -1.0), (0.0, 1.0, 1.0, 0.0), (1.0, 2.0, 2.0, 0.5),
    (0.0, 0.0, 0.0, 1.0),        # both zero: identical
    (0.0, 0.0, 3.0, 0.0), (0.0, 3.0, 0.0, 0.0),
    (NAN, 1.0, 1.0, NAN),
    (1.0 + 1e-15, 1.0, 1.0, 1.0),  # rounding past 1 is clipped
])
def test_cosine_edge_cases(dot, r2, a2, expected):
    got = cosine_from_sums(dot, r2, a2)
    assert math.isnan(got) if math.isnan(expected) else got == pytest.approx(expected, abs=1e-15)


def test_figures_by_hand():
    r, a = np.array([3.0, 4.0]), np.array([3.0, 3.0])
    s = sums(r, a)
    assert (s.count, s.signal, s.noise, s.worst, s.dot, s.approx2) == (2, 25.0, 1.0, 1.0, 21.0, 18.0)
    assert s.snr_db == pytest.approx(10 * math.log10(25.0))
    assert s.cosine == pytest.approx(21 / math.sqrt(25 * 18)) and s.mse == 0.5
    assert metrics.error_figures(r, a) == (pytest.approx(13.9794, abs=1e-4), 1.0, 0.5)
    assert metrics.max_abs_error(r, a) == 1.0 and metrics.cosine(r, a) == pytest.approx(0.98994949)


def test_nan_sticks_and_equal_nan_leaves_matching_non_finite_values_out():
    r = np.array([1.0, NAN, INF, 2.0])
    a = np.array([1.0, NAN, INF, 4.0])
    plain = sums(r, a)
    assert math.isnan(plain.worst) and math.isnan(plain.snr_db)
    matched = sums(r, a, equal_nan=True)  # only [1, 2] vs [1, 4] is compared
    assert (matched.count, matched.signal, matched.noise, matched.worst) == (2, 5.0, 4.0, 2.0)
    one_sided = sums(np.array([1.0, 2.0]), np.array([1.0, NAN]), equal_nan=True)
    assert math.isnan(one_sided.worst) and math.isnan(one_sided.snr_db) and math.isnan(one_sided.cosine)
    assert (Sums(1, 1.0, 1.0, NAN) + Sums(1, 1.0, 0.0, 5.0)).worst != 5.0  # NaN is never hidden


def test_empty_arrays_and_mismatched_sizes():
    s = sums(np.zeros(0), np.zeros(0))
    assert s.worst == 0.0 and s.snr_db == INF and s.cosine == 1.0 and s.mse == 0.0
    with pytest.raises(ValueError, match="reference has 3 elements, approximation 2"):
        sums(np.zeros(3), np.zeros(2))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-100, 100)),
       hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-100, 100)),
       st.integers(1, 19))
def test_accumulating_over_samples_equals_the_figures_of_everything_at_once(r, noise, cut):
    n = min(r.size, noise.size)
    r, a = r[:n], r[:n] + noise[:n]
    cut = min(cut, n)
    whole, parts = sums(r, a), sums(r[:cut], a[:cut]) + sums(r[cut:], a[cut:])
    assert parts.count == whole.count and parts.worst == whole.worst
    for field in ("signal", "noise", "dot", "approx2"):
        assert getattr(parts, field) == pytest.approx(getattr(whole, field), rel=1e-9, abs=1e-9)


def test_every_caller_uses_this_module():
    """The stages' chunked engine, the report and verify give the figures decided here."""
    import importlib

    from pipeline import report
    from stages.compression import figures

    verify = importlib.import_module("pipeline.verify")  # the module, not the function

    for signal, noise in ((0.0, 1.0), (1.0, 0.0), (1.0, INF), (1e-300, 1e300), (200.0, 2.0)):
        want = snr_db_from_sums(signal, noise)
        assert verify.snr(signal, noise) == want
        assert figures.figures_from_sums(noise, signal, 0.0, 1)["snr_db"] == want
    r, a = np.array([0.0, 0.0]), np.array([1.0, 0.0])
    assert report.snr_db(r, a) == metrics.snr_db(r, a) == -INF
