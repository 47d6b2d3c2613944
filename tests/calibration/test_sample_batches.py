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


@pytest.mark.parametrize("leading", [("seq", "seq"), ("time_steps", "time_steps"), ("?", "?"),
                                     ("num_points", "num_points"), ("unk__214", "unk__214"), ("batch", "n")])
def test_an_axis_not_named_a_batch_or_unshared_is_not_cut(leading):
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


# ---- trailing padding an attention mask marks --------------------------------------------------

@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """The corpus's 2-layer BERT-style encoder (random weights; its attention masks padding)."""
    from benchmarks.corpus import models
    from ir.formats.onnx import import_onnx

    return import_onnx(models.locate(models.get("bert_tiny"), str(tmp_path_factory.mktemp("bert"))))


def _sentences(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(1, 1000, (1, n)).astype(np.int64), "attention_mask": np.ones((1, n), np.int64),
             "token_type_ids": np.zeros((1, n), np.int64)} for n in lengths]


def _padded(sentences, width, left=False):
    out = {k: np.zeros((len(sentences), width), np.int64) for k in sentences[0]}
    for i, s in enumerate(sentences):
        for k, a in s.items():
            if left:
                out[k][i, width - a.shape[1]:] = a[0]
            else:
                out[k][i, :a.shape[1]] = a[0]
    return out


def test_padded_samples_give_the_unpadded_statistics(bert):
    sentences = _sentences([5, 9, 3, 12])
    padded = calibration_data(_padded(sentences, 20))
    feeds = padded.feeds(bert.main)
    assert [f["input_ids"].shape for f in feeds] == [(1, 5), (1, 9), (1, 3), (1, 12)]
    a = calibrate(data=padded).run(bert).program
    b = calibrate(data=calibration_data(sentences)).run(bert).program
    for name, st in a.attrs["calibration"].items():
        other = b.attrs["calibration"][name]
        assert st["count"] == other["count"]
        for key in ("gram", "input_moment", "token_counts"):
            if key in st:
                np.testing.assert_allclose(st[key], other[key], rtol=1e-5, atol=1e-6 * np.abs(other[key]).max())


def test_leading_padding_and_masks_that_are_not_zero_one_stay(bert):
    sentences = _sentences([5, 9])
    left = calibration_data(_padded(sentences, 20, left=True)).feeds(bert.main)
    assert [f["input_ids"].shape for f in left] == [(1, 20), (1, 20)]
    weights = _padded(sentences, 20)
    weights["attention_mask"] = weights["attention_mask"] * 2  # not a 0/1 mask: nothing is cut
    assert all(f["input_ids"].shape == (1, 20) for f in calibration_data(weights).feeds(bert.main))


def test_a_fixed_batch_is_cut_to_its_longest_sample():
    from pipeline.calibration import _trimmed

    @program(inputs={"ids": TensorSpec((2, "seq"), "int64"), "attention_mask": TensorSpec((2, "seq"), "int64")})
    def net(b, ids, attention_mask):
        return b.add(x=ids, y=attention_mask)

    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    got = _trimmed(net.main, {"ids": np.arange(10).reshape(2, 5), "attention_mask": mask}, "attention_mask", "seq")
    assert np.array_equal(got["ids"], [[0, 1, 2], [5, 6, 7]]) and got["attention_mask"].shape == (2, 3)


def _masked(mask_name="attention_mask", mask_axis="seq", ids_axis="seq"):
    @program(inputs={"input_ids": TensorSpec(("batch", ids_axis), "int64"),
                     mask_name: TensorSpec(("batch", mask_axis), "int64")})
    def net(b, input_ids, mask):
        return b.add(x=input_ids, y=mask)

    return net


def _feed(mask_name="attention_mask"):
    return {"input_ids": np.arange(12).reshape(2, 6), mask_name: np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])}


def test_only_an_attention_mask_cuts_padding():
    cut = calibration_data(_feed()).feeds(_masked().main)
    assert [f["input_ids"].tolist() for f in cut] == [[[0, 1]], [[6, 7, 8]]]
    for other in ("lm_mask", "key_padding_mask", "bool_masked_pos"):  # masks that mean other things
        kept = calibration_data(_feed(other)).feeds(_masked(other).main)
        assert [f["input_ids"].shape for f in kept] == [(1, 6), (1, 6)], other


def test_a_mask_on_an_axis_of_its_own_is_not_cut():
    # an Optimum decoder export: attention_mask [batch, past + sequence], input_ids [batch, sequence]
    feeds = calibration_data(_feed()).feeds(_masked(mask_axis="past_plus_seq").main)
    assert [f["input_ids"].shape for f in feeds] == [(1, 6), (1, 6)]
    assert [f["attention_mask"].shape for f in feeds] == [(1, 6), (1, 6)]


def test_masks_that_are_not_zero_one_or_all_zero_stay_whole():
    from pipeline.calibration import _trimmed

    net = _masked()
    ids = np.arange(12).reshape(2, 6)
    later_row = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 3, 0, 0, 0]])  # the first row alone is 0/1
    assert _trimmed(net.main, {"input_ids": ids, "attention_mask": later_row}, "attention_mask", "seq")[
        "input_ids"].shape == (2, 6)
    empty = np.zeros((2, 6), np.int64)
    assert _trimmed(net.main, {"input_ids": ids, "attention_mask": empty}, "attention_mask", "seq")[
        "input_ids"].shape == (2, 6)


def test_the_cut_follows_the_symbol_not_a_size_that_happens_to_match():
    from pipeline.calibration import _trimmed

    @program(inputs={"input_ids": TensorSpec(("batch", "seq"), "int64"),
                     "attention_mask": TensorSpec(("batch", "seq"), "int64"),
                     "extra": TensorSpec(("batch", "width"), "int64")})
    def net(b, input_ids, attention_mask, extra):
        return b.add(x=input_ids, y=attention_mask), extra

    feed = {"input_ids": np.ones((1, 6), np.int64), "attention_mask": np.array([[1, 1, 0, 0, 0, 0]]),
            "extra": np.arange(6).reshape(1, 6)}  # as long as the sequence, but not along it
    got = _trimmed(net.main, feed, "attention_mask", "seq")
    assert got["input_ids"].shape == (1, 2) and np.array_equal(got["extra"], feed["extra"])


def test_two_masks_or_an_unnamed_sequence_axis_cut_nothing():
    @program(inputs={"input_ids": TensorSpec(("batch", "seq"), "int64"),
                     "attention_mask": TensorSpec(("batch", "seq"), "int64"),
                     "input_mask": TensorSpec(("batch", "seq"), "int64")})
    def two(b, input_ids, attention_mask, input_mask):
        return b.add(x=b.add(x=input_ids, y=attention_mask), y=input_mask)

    feed = {**_feed(), "input_mask": _feed()["attention_mask"]}
    assert [f["input_ids"].shape for f in calibration_data(feed).feeds(two.main)] == [(1, 6), (1, 6)]
    # "?" is no name: the mask's unknown axis need not be input_ids' unknown axis
    unnamed = _masked(mask_axis="?", ids_axis="?")
    assert [f["input_ids"].shape for f in calibration_data(_feed()).feeds(unnamed.main)] == [(1, 6), (1, 6)]
