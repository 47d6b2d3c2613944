"""calibrate(sensitivity=N): the measured end-to-end error per unit of proxy, against a numpy
recomputation, the probe and the metric by hand, and mixed_precision weighing weights by it."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.calibration import calibration_data
from stages.calibration import CalibrationError, calibrate, calibration_info, calibration_stats
from stages.calibration.sensitivity import probe_batches, probe_error, relative_error
from stages.calibration.stats import with_calibration
from stages.compression.calibrated import proxy_distortion
from stages.compression.mixed_precision import mixed_precision
from tests.calibration.models import IN, SHIFT, tiny_data, tiny_model

pytest.importorskip("onnxruntime")


def test_probe_is_symmetric_4_bit_rounding_per_output_channel_by_hand():
    w = np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.0]])
    # row 0: step 1/7, codes rint([7, -3.5, 1.75]) = [7, -4, 2] (half to even); row 1 all zero;
    # row 2: step 2/7, codes [-7, 3.5 -> 4, 0]
    want = np.array([[1.0, -4 / 7, 2 / 7], [0.0, 0.0, 0.0], [-2.0, 8 / 7, 0.0]]) - w
    np.testing.assert_allclose(probe_error(w, 0), want, atol=1e-15)
    np.testing.assert_allclose(probe_error(w.T, 1), want.T, atol=1e-15)  # the output axis is honoured


def test_relative_error_by_hand():
    before = [np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[0.0, 0.0]])]
    after = [np.array([[3.0, 5.0], [1.0, 2.0]]), np.array([[1.0, 0.0]])]
    # samples: 1/25 and 4/1; the all-zero reference sample has no relative error and is not counted
    assert relative_error(before, after) == (pytest.approx(1 / 25 + 4), 2)


def test_probe_batches_take_the_first_batches_holding_enough_samples():
    feeds = [{"a": np.zeros((3, 2))}, {"a": np.zeros((3, 2))}, {"a": np.zeros((3, 2))}]
    assert len(probe_batches(feeds, 4)) == 2 and len(probe_batches(feeds, 100)) == 3


def _sensitive(batches=12, samples=24):
    data = calibration_data(tiny_data(batches=batches))
    return calibrate(data=data, sensitivity=samples).run(tiny_model()), data


def test_linear_weight_sensitivity_is_numpys_end_to_end_error_over_the_proxy():
    out, data = _sensitive()
    st = calibration_stats(out.program, "w")
    w = next(op.outputs[0].val for op in tiny_model().main.ops if op.outputs[0].name == "w").astype(np.float64)
    dw = probe_error(w, 0)
    probed = (w + dw).astype(np.float32).astype(np.float64) - w  # the weight as the runtime reads it
    raw = tiny_data(batches=12)
    used = probe_batches(data.feeds(tiny_model().main), 24)  # each batch: ids (4,), x (3, IN)
    num = 0.0
    for i in range(len(used)):
        x = raw["x"][i].astype(np.float64) + SHIFT
        y = x @ w.T
        num += float(np.sum(np.sum((x @ probed.T) ** 2, 1) / np.sum(y ** 2, 1)))
    # samples: the 3 rows of the linear's output and the 4 of the gather's (unchanged) per batch
    expected = num / (7 * len(used)) / proxy_distortion(dw, st, 1, table=False)
    assert st["sensitivity"] == pytest.approx(expected, rel=2e-3)  # 4 digits, onnxruntime's float32
    assert calibration_stats(out.program, "table")["sensitivity"] > 0
    assert "measured on" in calibration_info(out.program)["sensitivity"]


def test_without_sensitivity_nothing_is_measured_and_bad_values_are_refused():
    out = calibrate(data=calibration_data(tiny_data())).run(tiny_model())
    assert "sensitivity" not in calibration_stats(out.program, "w")
    with pytest.raises(CalibrationError, match="sensitivity"):
        calibrate(data=calibration_data(tiny_data()), sensitivity=-1).run(tiny_model())


def test_deterministic():
    a, _ = _sensitive()
    b, _ = _sensitive()
    assert a.program.digest == b.program.digest


def _with_sensitivity(program, values):
    table = {k: {**dict(v), **({"sensitivity": values[k]} if k in values else {})}
             for k, v in program.attrs["calibration"].items()}
    return with_calibration(program, table, program.attrs["calibration_info"])


def test_mixed_precision_scales_each_candidate_by_the_weights_sensitivity():
    base = calibrate(data=calibration_data(tiny_data(batches=12))).run(tiny_model()).program
    cands = ("palettize_2", "palettize_4", "int8_channel")
    plain = mixed_precision(target_bpw=4.0, candidates=cands).run(base).stats["allocation"]
    scaled = mixed_precision(target_bpw=4.0, candidates=cands).run(
        _with_sensitivity(base, {"w": 0.5, "table": 3.0})).stats["allocation"]
    for name, factor in (("w", 0.5), ("table", 3.0)):
        for p, s in zip(plain["candidates"][name], scaled["candidates"][name]):
            if p["distortion"] is not None:
                assert s["distortion"] == pytest.approx(p["distortion"] * factor, rel=1e-12)
    assert "measured sensitivity" in scaled["proxy"]


def test_the_more_sensitive_weight_gets_the_bits():
    base = calibrate(data=calibration_data(tiny_data(batches=12))).run(tiny_model()).program
    cands = ("palettize_2", "palettize_4", "int8_channel")
    bits = {}
    for favoured, other in (("w", "table"), ("table", "w")):
        prog = _with_sensitivity(base, {favoured: 1e6, other: 1e-6})
        rows = {r["weight"]: r for r in mixed_precision(target_bpw=4.0, candidates=cands).run(prog)
                .stats["allocation"]["table"]}
        bits[favoured] = (rows[favoured]["bpw"], rows[other]["bpw"])
        assert rows[favoured]["bpw"] > rows[other]["bpw"]


def test_calibrated_candidates_supersede_the_data_free_ones_and_keep_their_contracts():
    from pipeline import Pipeline

    # Pipeline.run(calibration=...) measures the sensitivity because a mixed_precision stage follows
    trace = Pipeline([mixed_precision(target_bpw=4.0)]).run(tiny_model(), calibration=tiny_data(batches=12),
                                                            verify="each")
    assert calibration_stats(trace.program_at(1), "w")["sensitivity"] > 0
    a = trace.steps[1].stats["allocation"]
    assert "measured sensitivity" in a["proxy"]
    rows = {r["candidate"]: r for r in a["candidates"]["w"]}
    assert rows["palettize_4"]["skipped"] == "superseded by gptq_palettize_4 (calibrated, same bits)"
    assert rows["int4_block32"]["skipped"] == "superseded by gptq_int4_block32 (calibrated, same bits)"
    assert rows["gptq_palettize_4"]["bytes"] is not None
    table = {r["candidate"]: r for r in a["candidates"]["table"]}
    assert table["palettize_4"]["skipped"] == "superseded by weighted_palettize_4 (calibrated, same bits)"
    assert "linear / matmul" in table["gptq_palettize_4"]["skipped"]
    assert trace.steps[1].verification is not None  # the chosen compressors' contracts held


def test_per_batch_sensitivity_averages_to_the_overall_one():
    out, data = _sensitive()
    st = calibration_stats(out.program, "w")
    per = np.asarray(st["sensitivity_per_batch"])
    used = probe_batches(data.feeds(tiny_model().main), 24)
    assert per.shape == (len(used),) and not per.flags.writeable
    # every probe batch has the same rows here, so the overall ratio is the mean of the batches'
    assert float(np.mean(per)) == pytest.approx(st["sensitivity"], rel=2e-3)
    assert np.ptp(per) > 0  # the batches differ: what the worst-sample objective reads


def _with_rates(program, rates):
    table = {k: {**dict(v), "sensitivity": float(np.mean(rates[k])),
                 "sensitivity_per_batch": np.asarray(rates[k], np.float64)}
             for k, v in program.attrs["calibration"].items()}
    return with_calibration(program, table, program.attrs["calibration_info"])


def test_worst_objective_equals_the_mean_one_when_every_batch_is_alike_and_reports_its_bound():
    base = calibrate(data=calibration_data(tiny_data(batches=12))).run(tiny_model()).program
    cands = ("palettize_2", "palettize_4", "int8_channel")
    prog = _with_rates(base, {"w": [2.0] * 4, "table": [0.5] * 4})
    worst = mixed_precision(target_bpw=4.0, candidates=cands).run(prog).stats["allocation"]
    mean = mixed_precision(target_bpw=4.0, candidates=cands, objective="mean").run(prog).stats["allocation"]
    assert [r["candidate"] for r in worst["table"]] == [r["candidate"] for r in mean["table"]]
    assert worst["objective"] == "worst" and mean["objective"] == "mean" and "worst_sample" not in mean
    w = worst["worst_sample"]
    assert w["bound"] <= w["estimate"] + 1e-12 and len(w["per_sample"]) == 4
    # with equal batches every sample's estimate is the mean distortion in proxy units times the rate
    assert w["estimate"] == pytest.approx(max(w["per_sample"])) == pytest.approx(w["mean"])


def _per_sample(a, rates, choice):
    """T_s of a choice {weight: candidate}: each candidate's distortion over the weight's mean rate
    (its proxy) times the weight's rate on s."""
    dist = {(k, c["candidate"]): c["distortion"] for k, rows in a["candidates"].items() for c in rows}
    return sum(dist[(k, choice[k])] / np.mean(rates[k]) * np.asarray(rates[k]) for k in choice)


def test_worst_objective_spends_bytes_on_the_weight_one_batch_depends_on():
    base = calibrate(data=calibration_data(tiny_data(batches=12))).run(tiny_model()).program
    cands = ("palettize_2", "palettize_4", "int8_channel")
    # "w" errs on one batch only, "table" on every batch: on average the table's bytes pay more,
    # on the worst batch w's do
    rates = {"w": [1.0, 0.0, 0.0, 0.0], "table": [1500.0] * 4}
    prog = _with_rates(base, rates)
    worst = mixed_precision(target_bpw=4.0, candidates=cands).run(prog).stats["allocation"]
    mean = mixed_precision(target_bpw=4.0, candidates=cands, objective="mean").run(prog).stats["allocation"]
    chosen = lambda a: {r["weight"]: r["candidate"] for r in a["table"]}  # noqa: E731
    # exhaustive: the least worst-sample estimate over every choice within the budget
    rows = {k: [c for c in v if c["bytes"] is not None] for k, v in worst["candidates"].items()}
    best = min((max(_per_sample(worst, rates, {"w": a["candidate"], "table": b["candidate"]})), a["candidate"],
                b["candidate"]) for a in rows["w"] for b in rows["table"]
               if a["bytes"] + b["bytes"] <= worst["budget_bytes"])
    assert chosen(worst) == {"w": best[1], "table": best[2]}
    assert worst["worst_sample"]["estimate"] == pytest.approx(best[0])
    assert chosen(mean) != chosen(worst)  # the construction parts the two objectives
    assert max(_per_sample(mean, rates, chosen(mean))) > best[0]


def _transposed_model():
    from ir.builder import TensorSpec, program

    rng = np.random.default_rng(7)
    w = rng.normal(size=(IN, IN)).astype(np.float32)
    w2 = rng.normal(size=(IN, IN)).astype(np.float32)

    @program(inputs={"x": TensorSpec((3, IN), "fp32")})
    def net(b, x):
        h = b.linear(x=x, weight=b.const(w, name="w"))
        # w2 reaches its matmul through a transpose: calibrate records no statistics for it
        return b.matmul(x=h, y=b.transpose(x=b.const(w2, name="w2"), perm=np.array([1, 0], np.int32)))

    return net


def test_a_weight_without_statistics_is_probed_against_its_data_free_proxy():
    data = calibration_data({"x": tiny_data(batches=8)["x"]})
    plain = calibrate(data=data).run(_transposed_model()).program
    assert calibration_stats(plain, "w2") is None and calibration_stats(plain, "w") is not None
    out = calibrate(data=data, sensitivity=8).run(_transposed_model())
    st = calibration_stats(out.program, "w2")
    assert set(st) == {"sensitivity", "sensitivity_per_batch"} and st["sensitivity"] > 0
    assert out.stats["calibrated_weights"] == 1  # the statistics themselves: still only w's
    # the allocation then reads w2's distortion as |dW|^2 times that rate, like every other weight's
    a = mixed_precision(target_bpw=4.0, candidates=("palettize_2", "palettize_4", "int8_channel")).run(
        out.program).stats["allocation"]
    assert "measured sensitivity" in a["proxy"] and {r["weight"] for r in a["table"]} == {"w", "w2"}
