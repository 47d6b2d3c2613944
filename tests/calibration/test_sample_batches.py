"""Calibration samples given along a symbolic batch axis are run one sample at a time (so the
measured sensitivity and the worst-sample objective see samples, not one whole set), with the
same statistics; a time-like or unshared leading axis is never cut."""
from __future__ import annotations

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from pipeline.calibration import calibration_data
from stages.calibration import calibrate, calibration_info, calibration_stats

IN, OUT, N = 64, 64, 12  # weights of more than 2048 elements get a measured sensitivity


def _linear(leading=("batch", "batch")):
    w = np.random.default_rng(0).normal(size=(OUT, IN)).astype(np.float32)
    t = np.random.default_rng(1).normal(size=(50, IN)).astype(np.float32)

    @program(inputs={"x": TensorSpec((leading[0], 3, IN), "fp32"), "ids": TensorSpec((leading[1], 3), "int32")})
    def net(b, x, ids):
        e = b.gather(x=b.const(t, name="table"), indices=ids, axis=0)
        return b.linear(x=b.add(x=x, y=e), weight=b.const(w, name="w"))

    return net


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(N, 3, IN)).astype(np.float32), "ids": rng.integers(0, 50, (N, 3)).astype(np.int32)}


def test_a_symbolic_batch_is_fed_one_sample_at_a_time():
    data = _data()
    feeds = calibration_data(data).feeds(_linear().main)
    assert len(feeds) == N
    for i, f in enumerate(feeds):
        assert f["x"].shape == (1, 3, IN) and np.array_equal(f["x"][0], data["x"][i])
        assert np.array_equal(f["ids"][0], data["ids"][i])


@pytest.mark.parametrize("leading", [("seq", "seq"), ("time_steps", "time_steps"), ("batch", "n")])
def test_a_time_axis_or_an_unshared_one_is_not_cut(leading):
    feeds = calibration_data(_data()).feeds(_linear(leading).main)
    assert len(feeds) == 1 and feeds[0]["x"].shape == (N, 3, IN)


def test_the_statistics_are_those_of_the_whole_set():
    data = _data()
    out = calibrate(data=calibration_data(data)).run(_linear()).program
    assert calibration_info(out)["batches"] == N
    x = (data["x"] + np.random.default_rng(1).normal(size=(50, IN)).astype(np.float32)[data["ids"]])
    x = x.reshape(-1, IN).astype(np.float64)
    st = calibration_stats(out, "w")
    np.testing.assert_allclose(st["gram"], x.T @ x / len(x), rtol=1e-5, atol=1e-6 * np.abs(x.T @ x / len(x)).max())
    assert st["count"] == N * 3
    assert np.array_equal(calibration_stats(out, "table")["token_counts"],
                          np.bincount(data["ids"].ravel(), minlength=50).astype(np.float64))


def test_the_sensitivity_is_measured_per_sample_on_the_first_ones():
    out = calibrate(data=calibration_data(_data()), sensitivity=5).run(_linear()).program
    per = calibration_stats(out, "w")["sensitivity_per_batch"]
    assert len(per) == 5  # 5 probe samples, each its own batch (one batch of 12 before)
    assert "measured on 5 samples" in calibration_info(out)["sensitivity"]
