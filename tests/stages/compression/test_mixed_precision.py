"""mixed_precision: one candidate form per weight under a size budget (stages/compression/mixed_precision.py)."""
from __future__ import annotations

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from ir.interpret import evaluate
from stages.compression import mixed_precision
from stages.compression.checked import ParameterError
from stages.compression.mixed_precision import CANDIDATES, distortion
from stages.compression.numeric.allocation import InfeasibleBudget
from stages.contracts import check_step

FAST = ("palettize_2", "palettize_4", "int4_block32", "int8_channel", "fp16", "keep")


def two_weights(seed=0):
    """A loud weight (std 1) and a quiet one (std 0.01) of the same shape, both read by linear ops."""
    rng = np.random.default_rng(seed)
    loud = rng.normal(0, 1.0, (64, 64)).astype(np.float32)
    quiet = rng.normal(0, 0.01, (64, 64)).astype(np.float32)

    @program(inputs={"x": TensorSpec((2, 64), "fp32")})
    def net(b, x):
        h = b.linear(x=x, weight=b.const(loud, name="loud"))
        return b.linear(x=h, weight=b.const(quiet, name="quiet"))

    return net


def chosen(stats) -> dict:
    return {row["weight"]: row for row in stats["allocation"]["table"]}


def run(prog, **params):
    stage = mixed_precision(candidates=FAST, **params)
    return stage, stage.run(prog)


def test_budget_respected_and_the_louder_weight_gets_more_bits():
    prog = two_weights()
    stage, res = run(prog, target_bpw=5.5, proxy="absolute")
    a = res.stats["allocation"]
    table = chosen(res.stats)
    assert a["size_bytes"] <= a["budget_bytes"] == int(5.5 * 2 * 64 * 64 / 8)
    assert a["size_bytes"] == sum(r["bytes"] for r in table.values())
    assert a["bpw"] <= 5.5
    # |dW|^2 scales with the weight's variance: the loud weight's error dominates, so it gets the bytes
    assert table["loud"]["bytes"] > table["quiet"]["bytes"]
    assert a["gap"] >= 0 and a["dual_bound"] <= a["distortion"] + 1e-12
    # the per-weight records carry the choice, and the form written is the chosen method's
    for name, row in table.items():
        st = res.stats["weights"][name]
        if row["candidate"] == "keep":
            assert "kept as it is" in st["skipped"]
        else:
            assert st["candidate"] == row["candidate"] and st["compressed_bytes"] == row["bytes"]
    # the contract of each chosen compressor holds, outputs checked on random inputs
    x = np.random.default_rng(1).normal(size=(2, 64)).astype(np.float32)
    assert check_step(prog, res.program, stage, res.stats, inputs=[{"x": x}]) == []


@pytest.mark.parametrize("proxy", ["absolute", "relative"])
def test_distortion_reported_is_the_proxy_of_the_written_weight(proxy):
    prog = two_weights()
    _, res = run(prog, target_bpw=4.0, proxy=proxy)
    table = chosen(res.stats)
    values = {op.name: op.outputs[0].val for op in prog.main.ops if op.op_type == "const"}
    for name in ("loud", "quiet"):
        row = table[name]
        if row["candidate"] == "keep":
            continue
        st = res.stats["weights"][name]
        # data-free proxy: |dW|^2 = mse * elements (64 x 64); relative: over |W|^2
        signal = float(np.sum(values[name].astype(np.float64) ** 2)) if proxy == "relative" else 1.0
        assert row["distortion"] == pytest.approx(st["mse"] * 64 * 64 / signal, rel=1e-9)


def test_relative_proxy_ignores_the_scale_of_a_weight():
    # the loud weight is the quiet one's pattern times 100: relative, both cost the same per byte,
    # so the two get the same form; absolute, the loud one takes the bytes
    rng = np.random.default_rng(3)
    base = rng.normal(0, 0.01, (64, 64)).astype(np.float32)

    @program(inputs={"x": TensorSpec((2, 64), "fp32")})
    def net(b, x):
        h = b.linear(x=x, weight=b.const(base * 100, name="loud"))
        return b.linear(x=h, weight=b.const(base, name="quiet"))

    _, rel = run(net, target_bpw=5.5, proxy="relative")
    t = chosen(rel.stats)
    assert t["loud"]["distortion"] == pytest.approx(t["quiet"]["distortion"], rel=1e-3)
    _, ab = run(net, target_bpw=5.5, proxy="absolute")
    t = chosen(ab.stats)
    assert t["loud"]["bytes"] > t["quiet"]["bytes"]


def test_generous_budget_keeps_everything_and_returns_the_input():
    prog = two_weights()
    _, res = run(prog, target_bpw=32)
    assert res.program is prog
    assert {r["candidate"] for r in res.stats["allocation"]["table"]} == {"keep"}
    assert res.stats["allocation"]["gap"] == 0.0


def test_tight_budget_takes_the_smallest_forms():
    prog = two_weights()
    _, res = run(prog, target_bpw=2.25)  # 2-bit LUTs take 2 bits + a LUT per group of 16 channels
    assert {r["candidate"] for r in res.stats["allocation"]["table"]} == {"palettize_2"}


def test_infeasible_budget_says_the_minimum():
    prog = two_weights()
    with pytest.raises(InfeasibleBudget, match=r"target_bpw=1\.0 is below the smallest configuration: "
                                                r"2\.\d+ bits per weight"):
        run(prog, target_bpw=1.0)
    with pytest.raises(InfeasibleBudget, match=r"target_size=1000 bytes is below the smallest configuration: "
                                                r"\d+ bytes"):
        run(prog, target_size=1000)
    assert issubclass(InfeasibleBudget, ValueError)


def test_target_size_counts_every_stored_constant():
    prog = two_weights()
    _, res = run(prog, target_size=6000)
    a = res.stats["allocation"]
    assert a["size_bytes"] + a["other_const_bytes"] <= 6000
    assert a["other_const_bytes"] == 0  # the builder's program has no other constants


@pytest.mark.parametrize("params, match", [
    (dict(target_bpw=4, target_size=100), "not both"),
    (dict(target_bpw=0), r"\(0, 64\]"),
    (dict(target_size=-3), "positive number of bytes"),
    (dict(target_bpw=4, candidates=("palettize_5",)), "candidates"),
    (dict(target_bpw=4, proxy="sqnr"), "proxy"),
])
def test_bad_parameters_are_named_at_bind_time(params, match):
    with pytest.raises(ParameterError, match=match):
        mixed_precision(**params)


def test_no_budget_is_an_error_when_run():
    with pytest.raises(ParameterError, match="needs a budget"):
        mixed_precision(two_weights())


def test_pure_and_deterministic():
    prog = two_weights()
    before = prog.digest
    arrays = {op.name: op.outputs[0].val.copy() for op in prog.main.ops if op.op_type == "const"}
    _, a = run(prog, target_bpw=4.5)
    _, b = run(prog, target_bpw=4.5)
    assert prog.digest == before
    for op in prog.main.ops:
        if op.op_type == "const":
            np.testing.assert_array_equal(op.outputs[0].val, arrays[op.name])
            assert not op.outputs[0].val.flags.writeable
    assert a.program.digest == b.program.digest
    for op in a.program.main.ops:
        for v in op.outputs:
            if isinstance(v.val, np.ndarray):
                assert not v.val.flags.writeable


def test_fp16_form_decodes_to_the_rounded_weight():
    prog = two_weights()
    stage = mixed_precision(candidates=("fp16",), target_bpw=16)
    res = stage.run(prog)
    assert {r["candidate"] for r in res.stats["allocation"]["table"]} == {"fp16"}
    assert "constexpr_cast" in {op.op_type for op in res.program.main.ops}
    x = np.random.default_rng(2).normal(size=(2, 64)).astype(np.float32)
    assert check_step(prog, res.program, stage, res.stats, inputs=[{"x": x}]) == []


# ---- the proxy, by hand ----------------------------------------------------------------------

def test_distortion_proxies_by_hand():
    e = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]])  # [out 3, in 2] with input axis 1
    assert distortion(e, None, 1, table=False) == 15.0  # |dW|^2
    moments = {"input_moment": np.array([2.0, 0.5])}
    assert distortion(e, moments, 1, table=False) == 2 * (1 + 0 + 9) + 0.5 * (4 + 1 + 0)
    gram = {"gram": np.array([[2.0, 1.0], [1.0, 0.5]])}
    # tr(E G E^T) = sum over rows r G r^T: (1,2): 2+4+2=8; (0,-1): 0.5; (3,0): 18
    assert distortion(e, gram, 1, table=False) == pytest.approx(26.5)
    # input axis 0: the same error transposed gives the same figures
    assert distortion(e.T, gram, 0, table=False) == pytest.approx(26.5)
    # a table: one uniformly drawn row's |dW_t|^2, or weighted by token counts
    assert distortion(e, None, 0, table=True) == pytest.approx(15.0 / 3)
    assert distortion(e, {"token_counts": np.array([1.0, 0.0, 3.0])}, 0, table=True) == pytest.approx(
        0.25 * 5 + 0.75 * 9)


def test_candidate_table_is_consistent():
    for name, (method, params, bits) in CANDIDATES.items():
        assert method in ("palettize", "affine", "fp16", "keep", "gptq_palettize", "gptq_affine",
                          "weighted_palettize")
        if method in ("palettize", "gptq_palettize", "weighted_palettize"):
            assert params["nbits"] == bits


# ---- a real small model ------------------------------------------------------------------------

def test_real_small_model_within_budget(tmp_path):
    pytest.importorskip("torch")
    from benchmarks.corpus import models
    from ir.formats.onnx import import_onnx

    model = models.get("bert_tiny")
    prog = import_onnx(models.locate(model, str(tmp_path)))
    stage = mixed_precision(candidates=FAST, target_bpw=4.5)
    res = stage.run(prog)
    a = res.stats["allocation"]
    assert a["bpw"] <= 4.5 and a["size_bytes"] <= a["budget_bytes"]
    names = {row["weight"] for row in a["table"]}
    assert "word_weight" in names and len(names) >= 10  # the embedding table and every matmul weight
    inputs = model.inputs(0)[0]
    assert check_step(prog, res.program, stage, res.stats, inputs=[inputs]) == []
    ref, got = evaluate(prog, inputs), evaluate(res.program, inputs)
    out = next(iter(ref))
    r, g = ref[out].ravel(), got[out].ravel()
    assert float(r @ g / np.linalg.norm(r) / np.linalg.norm(g)) > 0.95


def test_the_allocation_survives_the_disk_cache(tmp_path):
    from pipeline import DiskCache, Pipeline

    pipe = Pipeline([mixed_precision(target_bpw=4.5, candidates=FAST)])
    first = pipe.run(two_weights(), cache=DiskCache(str(tmp_path)))
    again = pipe.run(two_weights(), cache=DiskCache(str(tmp_path)))
    assert again.steps[0].cached and again.result.digest == first.result.digest
    a, b = first.steps[0].stats["allocation"], again.steps[0].stats["allocation"]
    assert [r["candidate"] for r in b["table"]] == [r["candidate"] for r in a["table"]]
    assert b["gap"] == a["gap"] and len(b["frontier"]) == len(a["frontier"])


def test_keeping_the_measured_forms_writes_what_building_them_again_writes(monkeypatch):
    """The forms built while measuring are written as chosen (below KEEP_BUILT_BYTES); above it
    each chosen form is built again: the same program either way, to the digest."""
    import importlib

    module = importlib.import_module("stages.compression.mixed_precision")
    prog = two_weights()
    kept = mixed_precision(target_bpw=4.0, candidates=FAST).run(prog)
    monkeypatch.setattr(module, "KEEP_BUILT_BYTES", 0)
    rebuilt = mixed_precision(target_bpw=4.0, candidates=FAST).run(prog)
    assert kept.program.digest == rebuilt.program.digest
    assert {r["candidate"] for r in chosen(kept.stats).values()} - {"keep"}  # something was compressed
