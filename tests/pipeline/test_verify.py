import math

import numpy as np
import pytest
from hypothesis import given, settings

from ir.builder import TensorSpec, program
from ir.interpret import evaluate
from pipeline import EquivalenceError, Pipeline, verify
from pipeline.strategies import inputs_for, tensors
from tests.pipeline import pipeline_helpers as h


def relu_net(threshold_shift=0.0):
    @program(inputs={"x": TensorSpec((4,), "fp32")})
    def net(b, x):
        return b.relu(x=b.sub(x=x, y=np.float32(threshold_shift)), name="out")

    return net


def test_identical_behaviour_passes_with_zero_error():
    a, b = h.mlp(), Pipeline([h.identity])(h.mlp())
    other = h.mlp()  # same structure, different object
    report = verify(a, other, samples=8)
    assert report.passed and report.samples == 8
    [(name, err)] = report.outputs.items()
    assert err.max_abs_error == 0.0 and err.snr_db == math.inf
    assert verify(a, b).passed


def test_wrong_program_fails_with_a_shrunk_counterexample():
    # relu(x) vs relu(x - 0.5): they differ only where x > 0, by at most 0.5
    report = verify(relu_net(0.0), relu_net(0.5), samples=32)
    assert not report.passed
    assert report.counterexample is not None and "x" in report.counterexample
    assert report.outputs["out"].max_abs_error == pytest.approx(0.5)
    x = report.counterexample["x"]
    assert np.any(x > 0)  # a real witness ...
    assert np.abs(x).max() <= 1.0  # ... shrunk towards small values (drawn from [-4, 4])
    assert "out" in report.summary() and "FAILED" in report.summary()


def test_worst_input_is_the_one_with_the_largest_error():
    a, b = h.mlp(), h.scale_const(h.mlp(), name="w2", factor=1.001)
    report = verify(a, b, samples=16, snr_db=40)
    assert report.passed  # a 0.1% change: ~60 dB
    worst = report.worst_input
    err = np.abs(evaluate(a, worst)["lin2"] - evaluate(b, worst)["lin2"]).max()
    assert err == pytest.approx(report.outputs["lin2"].max_abs_error)
    assert 55 < report.outputs["lin2"].snr_db < 65


def test_snr_threshold_and_tolerances():
    a, b = h.mlp(), h.scale_const(h.mlp(), name="w2", factor=1.1)  # 10%: exactly 20 dB
    assert verify(a, b, samples=8, snr_db=15).passed
    assert not verify(a, b, samples=8, snr_db=25).passed
    assert not verify(a, b, samples=8).passed
    assert verify(a, b, samples=8, rtol=0.11, atol=1e-5).passed


def test_explicit_inputs_are_used_as_given():
    x = {"x": np.array([-1.0, 0.25, 2.0, -3.0], np.float32)}
    report = verify(relu_net(0.0), relu_net(0.5), inputs=x)
    assert not report.passed and report.samples == 1
    assert report.outputs["out"].max_abs_error == pytest.approx(0.5)
    assert verify(relu_net(0.0), relu_net(0.5), inputs=[{"x": -np.ones(4, np.float32)}] * 3).passed


def test_signature_mismatch_fails_without_running():
    @program(inputs={"y": TensorSpec((4,), "fp32")})
    def other(b, y):
        return b.relu(x=y)

    report = verify(relu_net(), other)
    assert not report.passed and "inputs differ" in report.reason


@h.stage("test_wrong_bias", version="1")
def wrong_bias(prog, *, context=None):
    """Deliberately wrong: replaces w1 by zeros, changing what the network computes."""
    return h._map_const(prog, "w1", lambda v: np.zeros_like(v))


def test_verify_each_stops_at_the_first_wrong_step_and_names_it():
    h.CALLS.clear()
    pipe = Pipeline([h.identity, h.round_const(name="w0", decimals=6), wrong_bias, h.identity(tag="after")])
    with pytest.raises(EquivalenceError) as e:
        pipe.run(h.mlp(), verify={"mode": "each", "rtol": 1e-4, "atol": 1e-4, "samples": 8})
    assert e.value.step == 2 and e.value.stage is wrong_bias
    assert "test_wrong_bias" in str(e.value) and "step 2" in str(e.value)
    assert isinstance(e.value, ValueError) and not e.value.report.passed
    assert h.CALLS == ["identity", "round_const:w0"]  # the step after it never ran


def test_verify_each_passes_equivalent_steps_and_records_reports():
    trace = Pipeline([h.identity, h.round_const(name="w0", decimals=6)]).run(
        h.mlp(), verify={"mode": "each", "rtol": 1e-4, "atol": 1e-4, "samples": 4})
    assert trace.steps[0].verification is None  # unchanged: nothing to check
    assert trace.steps[1].verification.passed and trace.steps[1].verification.samples == 4


def test_verify_final_checks_only_the_result():
    with pytest.raises(EquivalenceError, match="broke equivalence"):
        Pipeline([h.identity, wrong_bias]).run(h.mlp(), verify="final")


@settings(max_examples=10)
@given(inputs_for(h.mlp(width=8)))
def test_users_write_their_own_property_tests(inputs):
    assert set(inputs) == {"x"} and inputs["x"].shape == (1, 8) and inputs["x"].dtype == np.float32
    net = h.mlp(width=8)
    out = evaluate(Pipeline([h.identity])(net), inputs)
    np.testing.assert_array_equal(out["lin2"], evaluate(net, inputs)["lin2"])


@settings(max_examples=15)
@given(tensors(__import__("ir").TensorType.of("int4", (3, "n")), sizes={"n": 5}))
def test_tensor_strategy_respects_dtype_range_and_symbolic_dims(arr):
    assert arr.shape == (3, 5) and arr.dtype == np.int8 and arr.min() >= -8 and arr.max() <= 7


@settings(max_examples=5)
@given(tensors(__import__("ir").TensorType.of("fp32", (64, 64))))
def test_large_tensors_are_drawn_quickly(arr):
    assert arr.shape == (64, 64) and np.isfinite(arr).all()
