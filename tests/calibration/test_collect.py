"""calibrate: the statistics against numpy, where they live, purity, determinism, caching,
the data loader's errors."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import DiskCache, MemoryCache, Pipeline
from pipeline.calibration import CalibrationDataError, calibration_data
from stages.calibration import CalibrationError, calibrate, calibration_info, calibration_stats
from tests.calibration.models import IN, ROWS, SHIFT, tiny_data, tiny_model


def _expected(data):
    x = data["x"].reshape(-1, IN).astype(np.float32) + np.float32(SHIFT)  # what the model computes
    x = x.astype(np.float64)
    return {"input_moment": np.mean(x * x, axis=0), "gram": x.T @ x / len(x), "count": len(x),
            "token_counts": np.bincount(data["ids"].ravel(), minlength=ROWS).astype(np.float64)}


@pytest.mark.parametrize("evaluator", ["interpreter", "onnxruntime"])
def test_statistics_are_numpys(evaluator):
    data = tiny_data()
    out = calibrate(data=calibration_data(data), evaluator=evaluator).run(tiny_model())
    want = _expected(data)
    w = calibration_stats(out.program, "w")
    assert w["count"] == want["count"] == 18
    np.testing.assert_allclose(w["input_moment"], want["input_moment"], rtol=1e-6)
    # products in float32 per batch (collect.py): within ~1e-6 of the largest entry
    np.testing.assert_allclose(w["gram"], want["gram"], rtol=1e-5, atol=1e-6 * np.abs(want["gram"]).max())
    assert np.array_equal(w["gram"], w["gram"].T)
    t = calibration_stats(out.program, "table")
    assert np.array_equal(t["token_counts"], want["token_counts"]) and t["count"] == 24
    assert out.stats["evaluator"] == evaluator
    info = calibration_info(out.program)
    assert info["batches"] == 6 and info["data_digest"] == calibration_data(data).digest


def test_pure_and_read_only_and_deterministic():
    net = tiny_model()
    before = net.digest
    a = calibrate(data=calibration_data(tiny_data())).run(net).program
    b = calibrate(data=calibration_data(tiny_data())).run(net).program
    assert net.digest == before and "calibration" not in net.attrs
    assert a.digest == b.digest != before
    for stats in a.attrs["calibration"].values():
        for v in stats.values():
            if isinstance(v, np.ndarray):
                assert not v.flags.writeable
    assert calibration_stats(net, "w") is None


def test_other_data_other_statistics_and_digest():
    net = tiny_model()
    a = calibrate(data=calibration_data(tiny_data(seed=2))).run(net).program
    b = calibrate(data=calibration_data(tiny_data(seed=3))).run(net).program
    assert a.digest != b.digest


def test_fixed_batch_model_gets_its_batches():
    data = tiny_data(batches=4)
    flat = {"x": data["x"].reshape(12, IN), "ids": data["ids"].reshape(16)}  # rank == input rank: chunks
    out = calibrate(data=calibration_data(flat)).run(tiny_model())
    assert out.stats["batches"] == 4
    np.testing.assert_allclose(calibration_stats(out.program, "w")["input_moment"],
                               _expected(data)["input_moment"], rtol=1e-6)


def test_batch_split_does_not_change_the_statistics():
    data = tiny_data(batches=6)
    whole = calibrate(data=calibration_data(data)).run(tiny_model()).program
    halves = [{k: v[:3] for k, v in data.items()}, {k: v[3:] for k, v in data.items()}]
    split = calibrate(data=calibration_data(halves)).run(tiny_model()).program
    np.testing.assert_allclose(calibration_stats(whole, "w")["gram"], calibration_stats(split, "w")["gram"],
                               rtol=1e-12)


def test_cached_by_program_and_data_digest(tmp_path):
    net = tiny_model()
    for cache in (MemoryCache(), DiskCache(tmp_path / "c")):
        first = Pipeline([]).run(net, cache=cache, calibration=tiny_data())
        again = Pipeline([]).run(net, cache=cache, calibration=tiny_data())
        other = Pipeline([]).run(net, cache=cache, calibration=tiny_data(seed=5))
        assert not first.steps[0].cached and again.steps[0].cached and not other.steps[0].cached
        assert again.result.digest == first.result.digest
        np.testing.assert_array_equal(calibration_stats(again.result, "w")["gram"],
                                      calibration_stats(first.result, "w")["gram"])
    # the same samples from a file hit the cache too: the key is the content
    path = tmp_path / "calib.npz"
    np.savez(path, **tiny_data())
    assert Pipeline([]).run(net, cache=cache, calibration=str(path)).steps[0].cached


def test_directory_of_npz_and_spec_and_recipe(tmp_path):
    data = tiny_data()
    d = tmp_path / "calib"
    d.mkdir()
    np.savez(d / "a.npz", **{k: v[:2] for k, v in data.items()})
    np.savez(d / "b.npz", **{k: v[2:] for k, v in data.items()})
    (d / "notes.txt").write_text("ignored")
    whole = calibrate(data=calibration_data(data)).run(tiny_model()).program
    from_dir = Pipeline.from_spec(f'calibrate{{data="{d}"}}').run(tiny_model()).result
    np.testing.assert_allclose(calibration_stats(from_dir, "w")["gram"], calibration_stats(whole, "w")["gram"],
                               rtol=1e-12)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[stages]]\nstage = "calibrate"\ndata = "{d / "a.npz"}"\n')
    got = Pipeline.from_recipe(recipe).run(tiny_model()).result
    assert calibration_stats(got, "w")["count"] == 6


def test_exporters_ignore_the_statistics():
    from ir.formats.onnx.exporter import to_onnx_model

    net = tiny_model()
    cal = calibrate(data=calibration_data(tiny_data())).run(net).program
    assert to_onnx_model(cal).SerializeToString() == to_onnx_model(net).SerializeToString()


@pytest.mark.parametrize("change, named", [
    (lambda d: {"x": d["x"]}, "'ids'"),
    (lambda d: {**d, "extra": d["x"]}, "'extra'"),
    (lambda d: {**d, "x": d["x"][..., :60]}, "'x'"),
    (lambda d: {**d, "ids": d["ids"].astype(np.float32)}, "'ids'"),
    (lambda d: {**d, "x": np.where(np.arange(64) == 3, np.nan, d["x"]).astype(np.float32)}, "'x'"),
])
def test_bad_data_is_one_line_naming_the_input(change, named):
    with pytest.raises(CalibrationDataError) as e:
        Pipeline([]).run(tiny_model(), calibration=change(tiny_data()))
    assert named in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_bad_files(tmp_path):
    with pytest.raises(CalibrationDataError, match="no such file"):
        calibration_data(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(CalibrationDataError, match="bad.npz"):
        calibration_data(tmp_path / "bad.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="no .npz"):
        calibration_data(tmp_path / "empty")


def test_non_finite_activations_name_the_activation_and_weight():
    with pytest.raises(CalibrationError, match=r"activation .* weight 'w'.*NaN or Inf"):
        calibrate(data=calibration_data(tiny_data()), evaluator="interpreter").run(tiny_model(nan_path=True))


def test_calibrate_without_data_says_so():
    with pytest.raises(CalibrationError, match="data="):
        calibrate().run(tiny_model())
