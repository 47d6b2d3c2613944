"""awq_scale_weights: the fold is exact (any positive scale, every foldable pattern), the
statistics move with the weights (as calibrate would record them on the new program), the
patterns that cannot fold are skipped with their reason, the input is never touched, and the
alpha search finds a scale that beats s = 1 where an input channel is loud."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ir.interpret import evaluate
from pipeline import Pipeline
from pipeline.calibration import calibration_data
from stages.calibration import calibrate, calibration_stats, without_calibration
from stages.compression import ParameterError, awq_scale_weights
from stages.compression.awq import rescale
from stages.compression.awq_fold import fold_groups
from stages.compression.calibrated import NO_STATS
from stages.compression.numeric.awq import (Producer, Reader, Target, alpha_grid, channel_scales, producer_loss,
                                            reader_loss, search)
from stages.contracts import check_step
from tests.calibration.awq_models import (FOLDABLE, REFUSED, attention, chain, inputs_for, mul_add, onnx_attention,
                                         prenorm)

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _calibrated(net, seed=0, n=4, **loud):
    feeds = inputs_for(net, np.random.default_rng(seed), n, **loud)
    return calibrate(data=calibration_data(feeds), evaluator="interpreter").run(net).program


def _const(prog, name):
    return next(op.outputs[0].val for op in prog.main.ops if op.op_type == "const" and op.outputs[0].name == name)


def _assert_same_function(before, after, seed=0, n=3, rtol=2e-5):
    for feeds in inputs_for(before, np.random.default_rng(100 + seed), n):
        a, b = evaluate(before, feeds), evaluate(after, feeds)
        for (name, x), y in zip(a.items(), b.values()):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            assert x.shape == y.shape
            assert np.max(np.abs(x - y)) <= rtol * max(1.0, float(np.max(np.abs(x)))), name


# ---- where it folds --------------------------------------------------------------------------

EXPECTED = {  # pattern -> (producer kind, readers, consts divided, op types the scale passes)
    "prenorm": ("norm", ("wq", "wk", "wv"), {"gamma", "beta"}, ()),
    "mul_add": ("mul", ("w",), {"g", "shift"}, ("add",)),
    "attention": ("linear", ("wo",), {"wv", "bv"}, ("add", "matmul", "reshape", "transpose")),
    "chain": ("linear", ("w2",), {"w1", "b1"}, ("expand_dims", "real_div", "relu", "squeeze")),
}


@pytest.mark.parametrize("pattern", sorted(FOLDABLE))
def test_each_foldable_pattern_is_one_group_with_its_readers(pattern):
    groups, reader_of = fold_groups(FOLDABLE[pattern]().main)
    found = [g for g in groups.values() if not isinstance(g, str)]
    assert len(found) == 1
    g = found[0]
    kind, readers, divided, path = EXPECTED[pattern]
    assert (g.kind, g.reader_names, g.path) == (kind, readers, path)
    assert {c.const for c in g.changes if c.divide} == divided
    assert {c.const for c in g.changes if not c.divide} == set(readers)
    assert all(reader_of[r] == g.producer for r in readers)


_dim = st.integers(2, 9)
SIZES = {"prenorm": dict(c=_dim, o=st.integers(1, 7), t=st.integers(1, 6)),
         "mul_add": dict(c=_dim, o=st.integers(1, 7), t=st.integers(1, 6)),
         "attention": dict(heads=st.integers(1, 3), d=st.integers(1, 5), t=st.integers(1, 5)),
         "chain": dict(c=_dim, h=_dim, o=st.integers(1, 7), t=st.integers(1, 6))}


@pytest.mark.parametrize("pattern", sorted(FOLDABLE))
def test_the_fold_is_exact_for_any_positive_scale(pattern):
    build = FOLDABLE[pattern]

    @SETTINGS
    @given(seed=st.integers(0, 10_000), spread=st.floats(0.1, 3.0), sizes=st.fixed_dictionaries(SIZES[pattern]))
    def run(seed, spread, sizes):
        net = build(seed=seed, **sizes)
        groups, _ = fold_groups(net.main)
        g = next(g for g in groups.values() if not isinstance(g, str))
        s = np.random.default_rng(seed).lognormal(0, spread, g.channels)
        after = rescale(net, {g.producer: s})
        assert after is not net
        for name in g.reader_names:  # every reader took s on its input axis
            site = next(r for r in g.readers if r.weight == name)
            shape = [1, 1]
            shape[site.axes[1]] = -1
            want = (_const(net, name).astype(np.float64) * s[site.index].reshape(shape)).astype(np.float32)
            assert np.array_equal(_const(after, name), want)
        _assert_same_function(net, after, seed)

    run()


def test_attention_rows_and_columns_by_hand():
    """V's output channel c (wv column c, bv[c]) over s_c, wo's row c times s_c: the reshapes and
    transposes between them move channel c around and bring it back to place c."""
    net = attention(seed=3, heads=2, d=3)
    s = np.linspace(0.5, 4.0, 6)
    after = rescale(net, {next(iter(k for k, g in fold_groups(net.main)[0].items() if not isinstance(g, str))): s})
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    assert np.array_equal(_const(after, "wv"), f32(_const(net, "wv").astype(np.float64) / s[None, :]))
    assert np.array_equal(_const(after, "bv"), f32(_const(net, "bv").astype(np.float64) / s))
    assert np.array_equal(_const(after, "wo"), f32(_const(net, "wo").astype(np.float64) * s[:, None]))
    assert np.array_equal(_const(after, "bo"), _const(net, "bo"))


def test_a_reshape_that_mixes_the_channel_axis_with_another_is_refused():
    """[t, 8] -> [t/2?]: merging the channel axis into the token axis puts channels of different
    tokens together; the tag cannot follow it onto the weight's input axis."""
    from ir.builder import TensorSpec, program

    rng = np.random.default_rng(0)

    @program(inputs={"x": TensorSpec((4, 8), "fp32")})
    def net(b, x):
        y = b.linear(x=x, weight=b.const(rng.normal(size=(8, 8)).astype(np.float32), name="w1"))
        y = b.reshape(x=y, shape=[2, 16])
        return b.linear(x=y, weight=b.const(rng.normal(size=(3, 16)).astype(np.float32), name="w2"))

    groups, reader_of = fold_groups(net.main)
    assert isinstance(reader_of["w2"], str) and "reshape" in reader_of["w2"]


# ---- refused ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_cannot_fold_is_skipped_with_its_reason(name):
    build, weight, words = REFUSED[name]
    net = _calibrated(build())
    got = awq_scale_weights().run(net)
    assert got.program is net  # nothing folds
    reason = got.stats["weights"][weight]["skipped"]
    assert words in reason, reason


def test_without_statistics_every_weight_is_skipped_and_the_program_returned():
    net = prenorm()
    got = awq_scale_weights(op_selector=lambda v: True).run(net)
    assert got.program is net
    assert all(got.stats["weights"][w]["skipped"] == NO_STATS for w in ("wq", "wk", "wv"))


def test_a_group_is_scaled_only_when_every_reader_is_selected():
    net = _calibrated(prenorm(c=64, o=64))
    got = awq_scale_weights(op_selector=lambda v: v.name != "wk").run(net)
    assert got.program is net
    assert "declined" in got.stats["weights"]["wk"]["skipped"]
    assert "shares its input with 'wk'" in got.stats["weights"]["wq"]["skipped"]


# ---- the stage end to end ----------------------------------------------------------------------

@pytest.mark.parametrize("pattern", sorted(FOLDABLE))
def test_the_stage_scales_where_channels_are_loud_and_keeps_the_function(pattern):
    net = _calibrated(FOLDABLE[pattern](seed=1, **_big(pattern)), gain=30.0)
    got = awq_scale_weights(op_selector=lambda v: True, target="int4_block", block_size=8).run(net)
    readers = EXPECTED[pattern][1]
    scaled = [r for r in readers if "alpha" in got.stats["weights"][r]]
    assert scaled == list(readers), dict(got.stats["weights"])
    g = next(iter(got.stats["groups"].values()))
    assert g["alpha"] > 0 and g["proxy"] < g["proxy_unscaled"]
    _assert_same_function(net, got.program)


def test_on_generated_programs_the_stage_keeps_its_contract():
    """Whatever the graph (the property tests' generated programs, calibrated on generated
    inputs), the stage either folds exactly or leaves the program as it was."""
    from pipeline.strategies import quantization_programs, weight_models
    from tests.calibration.models import GeneratedData

    @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(quantization_programs() | weight_models())
    def run(program):
        net = calibrate(data=GeneratedData(), evaluator="interpreter").run(program).program
        stage = awq_scale_weights(op_selector=lambda v: True)
        got = stage.run(net)
        assert check_step(net, got.program, stage, got.stats, inputs=GeneratedData().feeds(net.main)) == []

    run()


def _big(pattern) -> dict:
    return {"attention": dict(heads=2, d=8)}.get(pattern, dict(c=16))


@pytest.mark.parametrize("pattern", ["prenorm", "attention", "chain"])
def test_the_statistics_are_what_calibrate_records_on_the_new_program(pattern):
    net = _calibrated(FOLDABLE[pattern](seed=2, **_big(pattern)), seed=5, gain=30.0)
    got = awq_scale_weights(op_selector=lambda v: True, block_size=8).run(net)
    again = _calibrated(without_calibration(got.program), seed=5, gain=30.0)
    for r in EXPECTED[pattern][1]:
        assert "alpha" in got.stats["weights"][r]
        moved, fresh = calibration_stats(got.program, r), calibration_stats(again, r)
        before = calibration_stats(net, r)
        assert not np.allclose(moved["gram"], before["gram"])  # it did move
        for key in ("gram", "input_moment"):
            np.testing.assert_allclose(moved[key], fresh[key], rtol=1e-4, atol=1e-6 * np.max(np.abs(fresh[key])))
        assert moved["count"] == before["count"]
        assert not moved["gram"].flags.writeable


def test_a_producer_weights_sensitivity_follows_its_output_energy():
    """w1 (the producer of w2's input) has its output channels divided: its proxy shrinks with
    its output energy, so its measured error per unit of proxy grows by the same ratio; w2's
    proxy is in the units of its unchanged output, so its sensitivity stays."""
    net = chain(seed=3, c=64, h=64, o=48)
    feeds = inputs_for(net, np.random.default_rng(0), 6, gain=30.0)
    net = calibrate(data=calibration_data(feeds), evaluator="interpreter", sensitivity=6).run(net).program
    got = awq_scale_weights(block_size=16).run(net)
    assert "alpha" in got.stats["weights"]["w2"]
    w1, w1_new = _const(net, "w1").astype(np.float64), _const(got.program, "w1").astype(np.float64)
    h = calibration_stats(net, "w1")["gram"]
    ratio = np.einsum("ij,ij->", w1 @ h, w1) / np.einsum("ij,ij->", w1_new @ h, w1_new)
    before, after = calibration_stats(net, "w1"), calibration_stats(got.program, "w1")
    assert ratio != pytest.approx(1.0, rel=1e-3)
    assert after["sensitivity"] == pytest.approx(before["sensitivity"] * ratio, rel=1e-9)
    np.testing.assert_allclose(after["sensitivity_per_batch"], np.asarray(before["sensitivity_per_batch"]) * ratio)
    assert calibration_stats(got.program, "w2")["sensitivity"] == calibration_stats(net, "w2")["sensitivity"]


def test_the_input_program_is_untouched():
    net = _calibrated(prenorm(c=16), gain=30.0)
    digest = net.digest
    values = {op.outputs[0].name: op.outputs[0].val.copy() for op in net.main.ops if op.op_type == "const"}
    got = awq_scale_weights(op_selector=lambda v: True, block_size=8).run(net)
    assert got.program is not net and net.digest == digest
    for op in net.main.ops:
        if op.op_type == "const":
            assert np.array_equal(op.outputs[0].val, values[op.outputs[0].name])
    for op in got.program.main.ops:
        if op.op_type == "const":
            assert not op.outputs[0].val.flags.writeable


def test_before_gptq_in_a_pipeline_checked_each_step():
    net = _calibrated(attention(heads=4, d=16), gain=30.0)  # wo 64 x 64: above the size threshold
    pipe = Pipeline.from_spec('awq_scale_weights{target="int4_block",block_size=8},'
                              'gptq_quantize_weights{dtype="int4",granularity="per_block",block_size=8}')
    trace = pipe.run(net, verify="each")
    assert trace.steps[0].changed and "alpha" in trace.steps[0].stats["weights"]["wo"]
    gptq = trace.steps[1].stats["weights"]["wo"]
    assert gptq["method"] == "gptq" and 0 < gptq["output_error"] < gptq["output_error_data_free"]


def test_the_contract_catches_a_fold_that_forgets_the_bias():
    """verify's check of the step: the same fold with the value bias left unscaled changes the
    outputs, and the stage's contract says so."""
    from ir.construct import const_op
    from ir.rewrite import replace_all_uses

    net = _calibrated(attention(heads=2, d=8), gain=30.0)
    st_ = awq_scale_weights(op_selector=lambda v: True, block_size=8)
    got = st_.run(net)
    inputs = inputs_for(net, np.random.default_rng(7), 2)
    assert check_step(net, got.program, st_, got.stats, inputs=inputs) == []
    fn = got.program.main
    old = const_op("bv", _const(net, "bv"))
    ops = [old if o.op_type == "const" and o.outputs[0].name == "bv" else o for o in fn.block.ops]
    broken_fn = replace_all_uses(fn.replace(block=fn.block.replace(ops=ops)), {"bv": old.outputs[0]})
    broken = got.program.with_function(broken_fn)
    problems = check_step(net, broken, st_, got.stats, inputs=inputs)
    assert any(p.where.startswith("output") and "beyond rtol" in p.detail for p in problems), problems


# ---- the search ------------------------------------------------------------------------------

def test_the_search_beats_no_scaling_with_an_outlier_channel():
    """64 inputs, channel 5 a thousand times louder: rounding the weight's block with channel 5
    on a grid set by the other channels' values costs little, but channel 5's error is multiplied
    by its activations; scaling channel 5 up gives it a finer grid relative to its value."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 64)).astype(np.float32)
    m = np.ones(64)
    m[5] = 1e6
    reader = Reader(w, np.arange(64), m, np.diag(m), Target("int4_block", block_size=32))
    found = search([reader], 64, alpha_grid(20))
    losses = dict(found.losses)
    assert found.alpha > 0
    assert losses[found.alpha] < 0.5 * losses[0.0]
    assert np.argmax(found.scale) == 5
    # the loss of s = 1 by hand: plain rounding's error weighted by the moments
    assert np.isclose(losses[0.0], reader_loss(reader, np.ones(64)))


def test_the_producers_own_error_follows_a_per_block_grid_but_not_a_shared_lut():
    """Dividing the producer's rows by s: a grid per row (per block along its input axis) scales
    with each row, so its error at the output is the same for every s; a LUT shared by 16 rows
    is not, and the search sees the difference."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(32, 64)).astype(np.float32)
    m = rng.lognormal(0, 1, 64)
    s = rng.lognormal(0, 1, 32)
    block = Producer(w, m, np.diag(m), Target("int4_block", block_size=16))
    lut = Producer(w, m, np.diag(m), Target("lut", nbits=3, group_size=16))
    assert np.isclose(producer_loss(block, s), producer_loss(block, np.ones(32)), rtol=1e-5)
    assert producer_loss(lut, s) > 1.2 * producer_loss(lut, np.ones(32))
    for method in ("rounding", "gptq"):  # the gptq search as well
        b = block._replace(target=block.target._replace(method=method))
        assert np.isclose(producer_loss(b, s), producer_loss(b, np.ones(32)), rtol=1e-4)


def test_the_gptq_search_rounds_as_gptq_does():
    """search="gptq": the loss of s = 1 is GPTQ's output error on the grid, below plain rounding's."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(16, 32)).astype(np.float32)
    x = rng.normal(size=(256, 32)) @ (np.eye(32) + 0.5 * rng.normal(size=(32, 32)))
    h = x.T @ x / len(x)
    target = Target("int4_block", block_size=16)
    plain = reader_loss(Reader(w, np.arange(32), np.diag(h), h, target), np.ones(32))
    gptq = reader_loss(Reader(w, np.arange(32), np.diag(h), h, target._replace(method="gptq")), np.ones(32))
    assert gptq < 0.8 * plain


def test_channel_scales_are_awq_s_normalised():
    m = np.array([1.0, 4.0, 16.0])
    s = channel_scales(m, 1.0)  # sqrt(m) = 1, 2, 4; normalised by sqrt(4 * 1) = 2
    assert np.allclose(s, [0.5, 1.0, 2.0])
    assert np.allclose(channel_scales(m, 0.0), 1.0)


def test_a_lut_target_searches_too():
    net = _calibrated(mul_add(c=32, o=32), gain=30.0)
    got = awq_scale_weights(op_selector=lambda v: True, target="lut", nbits=3, group_size=8).run(net)
    g = next(iter(got.stats["groups"].values()))
    assert g["proxy"] <= g["proxy_unscaled"]
    _assert_same_function(net, got.program)


@pytest.mark.parametrize("bad", [dict(target="int3"), dict(grid=0), dict(nbits=5), dict(block_size=-1)])
def test_bad_parameters_are_refused_at_bind(bad):
    with pytest.raises(ParameterError):
        awq_scale_weights(**bad)


def test_spec_round_trip():
    stage = Pipeline.from_spec('awq_scale_weights{target="lut",nbits=4,group_size=16}').stages[0]
    assert dict(stage.params) == {"target": "lut", "nbits": 4, "group_size": 16}
    assert Pipeline.from_spec(stage.spec()).stages[0].key() == stage.key()


# ---- as exporters write it ---------------------------------------------------------------------

def _attention_feeds(rng, batch=2, t=5, heads=2, d=4):
    x = rng.normal(size=(batch, t, heads * d)).astype(np.float32)
    x[..., 1] *= 30
    return {"x": x, "p": rng.normal(size=(batch, heads, t, t)).astype(np.float32)}


def test_an_onnx_export_with_run_time_reshape_targets_folds():
    """The head split's target comes from Shape / Gather / Concat of the input, the merge's holds a
    -1: the sizes the tag needs are the constant entries, and the output projection's weight fixes
    the merged axis (384 in the real encoder)."""
    net = onnx_attention(seed=4)
    groups, reader_of = fold_groups(net.main)
    g = groups[reader_of["wo"]]
    assert g.path == ("add", "matmul", "onnx.Reshape", "transpose")
    assert np.array_equal(g.readers[0].index, np.arange(8))
    rng = np.random.default_rng(0)
    after = rescale(net, {g.producer: rng.lognormal(0, 1, 8)})
    for _ in range(3):
        feeds = _attention_feeds(rng)
        a, b = evaluate(net, feeds)["y"], evaluate(after, feeds)["y"]
        assert np.max(np.abs(a - b)) <= 2e-5 * np.max(np.abs(a))


def test_the_stage_on_the_onnx_export_keeps_its_contract():
    net = onnx_attention(seed=5)
    rng = np.random.default_rng(1)
    data = calibration_data([_attention_feeds(rng, batch=1) for _ in range(6)])
    net = calibrate(data=data).run(net).program  # onnxruntime runs the probe
    st_ = awq_scale_weights(op_selector=lambda v: True, block_size=4)
    got = st_.run(net)
    wv = got.stats["weights"]["wv"]  # changed (as the producer), so not "skipped"; why its own input was not
    assert "alpha" in got.stats["weights"]["wo"] and wv["output_divided"] == "v0" and "skipped" not in wv
    assert "model input" in wv["input_not_scaled"]
    assert check_step(net, got.program, st_, got.stats, inputs=[_attention_feeds(rng) for _ in range(2)]) == []
