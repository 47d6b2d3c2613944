"""Embedding tables' candidates measured end to end: calibrate(sensitivity=N) keeps its probe
batches, measure_forms runs each decoded form on them (against numpy here), and mixed_precision
ranks a table's candidates by those errors instead of sensitivity x proxy."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from ir.fold import evaluate_ops
from pipeline.calibration import calibration_data
from stages.calibration import calibrate, calibration_info
from stages.calibration import sensitivity as sens
from stages.calibration.sensitivity import measure_forms, probe_batches
from stages.compression.weights import Names
from tests.calibration.models import tiny_data, tiny_model

mp = importlib.import_module("stages.compression.mixed_precision")  # the module (the package exports the stage)

pytest.importorskip("onnxruntime")

SAMPLES = 12


@pytest.fixture(scope="module")
def calibrated():
    data = calibration_data(tiny_data(batches=12))
    return calibrate(data=data, sensitivity=SAMPLES).run(tiny_model()).program, data


def _table(program) -> np.ndarray:
    return next(op.outputs[0].val for op in program.main.ops if op.outputs[0].name == "table")


def test_calibrate_keeps_its_probe_batches_read_only(calibrated):
    program, data = calibrated
    kept = calibration_info(program)["probe_batches"]
    want = probe_batches(data.feeds(tiny_model().main), SAMPLES)
    assert len(kept) == len(want) > 1
    for k, w in zip(kept, want):
        assert set(k) == set(w)
        for name in w:
            np.testing.assert_array_equal(k[name], w[name])
            assert not k[name].flags.writeable


def test_probe_batches_too_large_to_keep_are_not_kept(monkeypatch):
    monkeypatch.setattr(sens, "KEEP_PROBES_BYTES", 10)
    program = calibrate(data=calibration_data(tiny_data(batches=4)), sensitivity=4).run(tiny_model()).program
    assert "probe_batches" not in calibration_info(program)
    # and then mixed_precision falls back to sensitivity x proxy for the table
    a = mp.mixed_precision(target_bpw=4.0, candidates=("palettize_2", "palettize_4")).run(program).stats["allocation"]
    assert a["measured_end_to_end"] == ()


def test_measure_forms_is_numpys_relative_output_error_per_batch(calibrated):
    program, data = calibrated
    table = _table(program).astype(np.float64)
    rng = np.random.default_rng(5)
    noisy = (table + rng.normal(scale=0.1, size=table.shape)).astype(np.float32)
    found, terms, note = measure_forms(program, {"table": [noisy, table.astype(np.float32)]})
    n = len(probe_batches(data.feeds(tiny_model().main), SAMPLES))
    assert "probe batches" in note and found["table"].shape == (2, n)
    np.testing.assert_array_equal(terms, 7.0)  # per batch: the gather's 4 rows and the linear's 3
    np.testing.assert_array_equal(found["table"][1], 0.0)  # the weight itself: no error
    expected = []
    for batch in probe_batches(data.feeds(tiny_model().main), SAMPLES):
        ids = np.asarray(batch["ids"]).reshape(-1)
        e, e2 = table[ids], noisy.astype(np.float64)[ids]
        # per batch: the gather's 4 rows, each |e' - e|^2 / |e|^2, and the linear's 3 rows (unchanged)
        expected.append(float(np.sum(np.sum((e2 - e) ** 2, 1) / np.sum(e ** 2, 1))) / 7)
    np.testing.assert_allclose(found["table"][0], expected, rtol=2e-3)


def test_without_probe_batches_nothing_is_measured():
    program = calibrate(data=calibration_data(tiny_data(batches=4))).run(tiny_model()).program
    found, terms, note = measure_forms(program, {"table": [_table(program)]})
    assert found == {} and terms.size == 0 and "no probe batches" in note


def test_a_form_onnxruntime_cannot_run_leaves_the_tables_unmeasured(calibrated):
    program, _ = calibrated
    wrong = np.zeros((7, 5), np.float32)  # not the table's shape
    found, _, note = measure_forms(program, {"table": [wrong]})
    assert found == {} and note.startswith("not measured: onnxruntime cannot run")


def test_mixed_precision_ranks_a_tables_candidates_by_their_measured_errors(calibrated):
    program, _ = calibrated
    cands = ("palettize_2", "palettize_4", "int8_channel")
    a = mp.mixed_precision(target_bpw=4.0, candidates=cands).run(program).stats["allocation"]
    assert a["measured_end_to_end"] == ("table",)
    view = next(v for k, v, _ in mp._selected(program, None) if k == "table")
    rows = [r for r in a["candidates"]["table"] if r["bytes"] is not None]
    decoded = []
    for r in rows:
        method, params, _ = mp.CANDIDATES[r["candidate"]]
        if method == "keep":
            decoded.append(np.asarray(view.value))
            continue
        rep = mp._compress(method, view, mp._params_for(view, method, params), Names("table", set()), None)
        decoded.append(np.asarray(evaluate_ops(rep.ops, rep.ops[-1].outputs[0]), np.float32))
    found, terms, _ = measure_forms(program, {"table": decoded})
    for r, errors in zip(rows, found["table"]):  # pooled over the batches, as the sensitivity is
        assert r["distortion"] == pytest.approx(float(errors @ terms / terms.sum()), rel=1e-9)
    # the linear weight keeps its sensitivity x proxy estimate (not measured)
    assert "w" not in a["measured_end_to_end"]


def test_worst_case_counts_the_measured_errors_sample_by_sample():
    # two weights of two options (small, large); by proxy x rate weight 0 needs the large option,
    # but its measured errors say its small option is harmless: the bytes go to weight 1 instead
    sizes = [np.array([10, 20]), np.array([10, 20])]
    dists = [np.array([1.0, 0.0]), np.array([0.5, 0.0])]
    stats = [{"sensitivity": 1.0, "sensitivity_per_batch": np.array([1.0, 1.0])}] * 2
    by_proxy = mp._worst_case(sizes, dists, stats, {}, 30, 100)
    assert tuple(by_proxy.choice) == (1, 0)
    measured = {0: np.array([[0.01, 0.02], [0.0, 0.0]])}
    by_measure = mp._worst_case(sizes, dists, stats, measured, 30, 100)
    assert tuple(by_measure.choice) == (0, 1)
    assert by_measure.worst == pytest.approx(0.02)


def test_measure_forms_decodes_a_form_only_when_it_measures_it(calibrated):
    program, _ = calibrated
    table = _table(program)
    calls = []

    def form(scale):
        def decode():
            calls.append(scale)
            return (table * scale).astype(np.float32)
        return decode

    lazy = measure_forms(program, {"table": [form(1.0), form(1.5)]}).errors
    eager = measure_forms(program, {"table": [table, (table * 1.5).astype(np.float32)]}).errors
    assert calls == [1.0, 1.5]
    np.testing.assert_array_equal(lazy["table"], eager["table"])
    assert np.all(lazy["table"][1] > 0) and np.all(lazy["table"][0] == 0)


def test_kept_probe_batches_survive_a_save_and_load_with_the_same_digest(calibrated, tmp_path):
    import ir.serialize as serialize
    from ir.digest import program_digest

    program, _ = calibrated
    path = str(tmp_path / "p.wpz")
    serialize.save(program, path)
    back = serialize.load(path)
    assert program_digest(back) == program_digest(program)
    before, after = calibration_info(program)["probe_batches"], calibration_info(back)["probe_batches"]
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_kept_probe_batches_are_copies_even_of_read_only_views():
    raw = tiny_data(batches=4)
    views = {}
    for k, v in raw.items():
        view = v.view()
        view.flags.writeable = False
        views[k] = view
    program = calibrate(data=calibration_data(views), sensitivity=4).run(tiny_model()).program
    kept = calibration_info(program)["probe_batches"]
    before = np.array(kept[0]["ids"], copy=True)
    raw["ids"][...] = 99  # the caller writes to the array its read-only views showed
    np.testing.assert_array_equal(kept[0]["ids"], before)
