import io
import json

import numpy as np
import pytest

from ir.interpret import evaluate
from pipeline import (CrashReproducer, MemoryCache, Pipeline, PrintIRAfterChange, StageFailed, Timing,
                      Trace, UncacheableWarning, repeat_until_fixed_point)
from stages.base import Stage
from tests.pipeline import pipeline_helpers as h


@pytest.fixture(autouse=True)
def fresh_calls():
    h.CALLS.clear()
    yield


def six_steps():
    return Pipeline([h.scale_const(name="w0"), h.identity, h.scale_const(name="w1", factor=3.0),
                     h.round_const(name="w2"), h.scale_const(name="w0", factor=0.5), h.identity(tag="end")])


def test_trace_records_every_step():
    net = h.mlp()
    before = net.digest
    trace = six_steps().run(net)
    assert net.digest == before  # the input is untouched
    assert len(trace.steps) == 6 and isinstance(trace, Trace)
    assert [s.changed for s in trace.steps] == [True, False, True, True, True, False]
    assert not any(s.cached for s in trace.steps)
    assert trace.steps[0].input_digest == net.digest
    assert all(a.output_digest == b.input_digest for a, b in zip(trace.steps, trace.steps[1:]))
    assert trace.steps[2].params["factor"] == 3.0 and trace.steps[2].spec == 'test_scale_const{factor=3.0,name="w1"}'
    assert trace.steps[1].stage is h.identity
    assert all(s.seconds >= 0 for s in trace.steps)
    assert trace.program_at(0) is net and trace.program_at(6) is trace.result
    with pytest.raises(AttributeError):
        trace.steps = ()  # a Trace is frozen
    with pytest.raises(AttributeError):
        trace.steps[0].seconds = 0.0
    assert trace.program_at(2) is trace.program_at(1)  # identity returned its input object
    w0 = net.main.ops[0].attrs["val"]
    got = [op for op in trace.result.main.ops if op.name == "w0"][0].attrs["val"]
    np.testing.assert_array_equal(got, w0 * np.float32(2.0) * np.float32(0.5))
    assert trace.result is six_steps()(net) or trace.result.digest == six_steps()(net).digest


def test_stage_stats_reach_the_trace():
    from pyrsistent import pmap
    from stages.base import StageResult

    @h.stage("test_counting", version="1")
    def counting(prog, *, context=None):
        return StageResult(prog, pmap({"ops": sum(1 for _ in prog.walk())}))

    trace = Pipeline([counting]).run(h.mlp(n_layers=2))
    assert trace.steps[0].stats["ops"] == 5  # w0 lin0 relu0 w1 lin1


def test_memory_cache_second_run_executes_nothing():
    cache, net = MemoryCache(), h.mlp()
    first = six_steps().run(net, cache=cache)
    n_calls = len(h.CALLS)
    assert n_calls == 6
    second = six_steps().run(net, cache=cache)
    assert len(h.CALLS) == n_calls
    assert all(s.cached for s in second.steps)
    assert [s.changed for s in second.steps] == [s.changed for s in first.steps]
    assert second.result.digest == first.result.digest


def test_cache_key_covers_parameters_and_version():
    cache, net = MemoryCache(), h.mlp()
    Pipeline([h.scale_const(factor=2.0)]).run(net, cache=cache)
    t = Pipeline([h.scale_const(factor=4.0)]).run(net, cache=cache)
    assert not t.steps[0].cached
    bumped = Stage(h.scale_const.name, h.scale_const.fn, "2", h.scale_const.params).bind(factor=2.0)
    assert not Pipeline([bumped]).run(net, cache=cache).steps[0].cached


def test_uncacheable_parameter_runs_uncached_with_a_warning():
    @h.stage("test_with_fn", version="1")
    def with_fn(prog, *, fn=None, context=None):
        h.CALLS.append("with_fn")
        return prog

    st = with_fn(fn=eval("lambda x: x"))  # a lambda with no source
    cache = MemoryCache()
    with pytest.warns(UncacheableWarning, match="test_with_fn"):
        Pipeline([st]).run(h.mlp(), cache=cache)
    with pytest.warns(UncacheableWarning):
        trace = Pipeline([st]).run(h.mlp(), cache=cache)
    assert h.CALLS.count("with_fn") == 2 and not trace.steps[0].cached and trace.steps[0].key is None


def test_replay_from_step_3_reexecutes_only_steps_3_to_n():
    net = h.mlp()
    trace = six_steps().run(net)
    h.CALLS.clear()
    new = trace.replay(from_step=3, stages=[h.round_const(name="w2", decimals=1), h.scale_const(name="w0", factor=0.5),
                                            h.identity(tag="end")])
    assert h.CALLS == ["round_const:w2", "scale_const:w0:0.5", "identity"]
    assert new.steps[:3] == trace.steps[:3]
    assert new.steps[3].params["decimals"] == 1 and new.steps[3].index == 3
    assert new.program_at(3) is trace.program_at(3)
    expected = Pipeline(list(six_steps().stages[:3]) + [h.round_const(name="w2", decimals=1)]
                        + list(six_steps().stages[4:])).run(net).result
    assert new.result.digest == expected.digest


def test_replay_with_a_mapping_replaces_single_steps():
    trace = six_steps().run(h.mlp())
    h.CALLS.clear()
    new = trace.replay(stages={4: h.scale_const(name="w0", factor=8.0)})
    assert h.CALLS == ["scale_const:w0:8.0", "identity"]
    assert new.pipeline.stages[4].params["factor"] == 8.0 and len(new.steps) == 6
    # the trace says the same: steps 0..3 were taken over, 4 and 5 ran
    assert new.executed == (4, 5) and all(s.reused for s in new.steps[:4])


def test_replay_uses_the_cache_for_unchanged_later_steps():
    cache = MemoryCache()
    trace = six_steps().run(h.mlp(), cache=cache)
    h.CALLS.clear()
    again = trace.replay(from_step=2)
    assert h.CALLS == [] and all(s.cached for s in again.steps[2:])


def test_diff_reports_constant_changes_and_text():
    trace = six_steps().run(h.mlp())
    d = trace.diff(0, 1)
    assert [c.name for c in d.constants_changed] == ["w0"]
    w0 = h.mlp().main.ops[0].attrs["val"]
    assert d.constants_changed[0].max_abs_diff == pytest.approx(float(np.abs(w0).max()))
    assert d.constants_changed[0].changed_fraction == 1.0
    assert not d.added and not d.removed and not d.rewired
    assert "-" in d.text and "+" in d.text and "w0" in d.text
    assert trace.diff(1, 2).empty
    # w0 is doubled then halved: back to its exact bits, so only w1 and w2 differ end to end
    assert {c.name for c in trace.diff(0, 6).constants_changed} == {"w1", "w2"}


def test_diff_reports_added_removed_and_rewired_ops():
    from ir.builder import TensorSpec, program

    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def a(b, x):
        return b.relu(x=b.add(x=x, y=np.ones(2, np.float32), name="add"), name="r")

    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def b_(b, x):
        return b.relu(x=b.mul(x=x, y=np.ones(2, np.float32), name="mul"), name="r")

    from pipeline.diff import diff_programs

    d = diff_programs(a, b_)
    assert ("main", "mul", "mul") in d.added and ("main", "add", "add") in d.removed
    assert [(r.op, r.input, r.old, r.new) for r in d.rewired] == [("r", "x", "add", "mul")]


def test_fixed_point_combinator_stops_when_nothing_changes():
    from ir.construct import const_op
    from ir.rewrite import map_functions
    @h.stage("test_clip_once", version="1")
    def shrink(prog, *, context=None):
        h.CALLS.append("shrink")
        def one(f):  # halves w0 until its max is below 1: changes a few times, then returns f itself
            ops = list(f.block.ops)
            w = ops[0].attrs["val"]
            if np.abs(w).max() < 1:
                return f
            from ir.rewrite import replace_all_uses
            ops[0] = const_op("w0", (w * np.float32(0.5)).astype(np.float32))
            return replace_all_uses(f.replace(block=f.block.replace(ops=ops)), {"w0": ops[0].outputs[0]})
        return map_functions(prog, one)

    net = h.mlp()
    st = repeat_until_fixed_point(shrink, max_rounds=20)
    trace = Pipeline([st]).run(net)
    w = [op for op in trace.result.main.ops if op.name == "w0"][0].attrs["val"]
    assert np.abs(w).max() < 1 and np.abs(w).max() >= 0.5
    assert trace.steps[0].stats["converged"] is True
    assert trace.steps[0].stats["rounds"] == h.CALLS.count("shrink")
    with pytest.warns(RuntimeWarning, match="no fixed point"):
        Pipeline([repeat_until_fixed_point(shrink, max_rounds=1)]).run(net)
    assert st.key() is not None and st.key() != repeat_until_fixed_point(shrink, max_rounds=3).key()


def test_instruments_timing_print_ir_and_crash_reproducer(tmp_path):
    timing, out = Timing(), io.StringIO()
    six_steps().run(h.mlp(), instruments=[timing, PrintIRAfterChange(out)])
    assert len(timing.records) == 6 and set(timing.summary()) >= {"test_identity", 'test_scale_const{name="w0"}'}
    assert out.getvalue().count("// ----- after step") == 4  # four steps changed the program

    repro = CrashReproducer(tmp_path / "crash")
    net = h.mlp()
    h.CALLS.clear()
    with pytest.raises(StageFailed) as e:
        Pipeline([h.scale_const, h.boom, h.identity]).run(net, instruments=[repro])
    assert h.CALLS == ["scale_const:w0:2.0", "boom"]  # the run stopped at the failing step
    assert e.value.step == 1 and "test_boom" in str(e.value) and "boom went the stage" in str(e.value)
    assert isinstance(e.value, ValueError) and e.value.reproducer == repro.last
    info = json.loads(open(repro.last).read())
    assert info["pipeline"] == "test_scale_const,test_boom,test_identity" and info["step"] == 1
    from ir.serialize import load

    saved = load(info["program_file"])
    assert saved.digest == info["input_digest"] == h.scale_const(net).digest


def test_executors_threads_processes_callable_and_dask_like():
    net = h.mlp()
    expected = Pipeline([h.halve_all]).run(net).result.digest
    for executor in ["threads", "processes", lambda fn, items: [fn(i) for i in items]]:
        assert Pipeline([h.halve_all]).run(net, executor=executor).result.digest == expected

    class FakeDask:  # the Dask Client surface: map -> futures, gather(futures) -> results
        def __init__(self):
            self.used = 0

        def map(self, fn, items):
            self.used += 1
            return [("future", fn(i)) for i in items]

        def gather(self, futures):
            return [r for _tag, r in futures]

    client = FakeDask()
    assert Pipeline([h.halve_all]).run(net, executor=client).result.digest == expected and client.used == 1


def test_progress_bars(capsys):
    seen = []

    def fake_track(items, desc="", total=None):
        seen.append(desc)
        return items

    from stages.base import StageContext

    Pipeline([h.halve_all]).run(h.mlp(), executor=StageContext(progress=fake_track))
    assert seen == ["halve"]
    trace = six_steps().run(h.mlp(), progress=True)
    err = capsys.readouterr().err
    assert "pipeline" in err and "6/6" in err and len(trace.steps) == 6


def test_progress_true_shows_the_stages_per_weight_bar(capsys):
    Pipeline([h.halve_all]).run(h.mlp(n_layers=3), progress=True)
    err = capsys.readouterr().err
    assert "halve" in err and "/3" in err  # the per-weight bar the stage asked for, over 3 weights


def test_pipeline_is_plain_composition_too():
    net = h.mlp()
    p = six_steps()
    out = p(net)
    x = np.ones((1, 8), np.float32)
    assert out.digest == p.run(net).result.digest
    assert evaluate(out, {"x": x}).keys() == evaluate(net, {"x": x}).keys()


def test_pool_executors_really_run_items_elsewhere():
    import os
    import threading

    net = h.mlp(n_layers=1)
    serial = Pipeline([h.where]).run(net).steps[0].stats
    assert serial["pids"] == (os.getpid(),) and serial["threads"] == (threading.get_ident(),)
    threads = Pipeline([h.where]).run(net, executor="threads").steps[0].stats
    assert threads["items"] == (0, 1, 2, 3)  # results come back in item order
    assert threads["pids"] == (os.getpid(),) and threading.get_ident() not in threads["threads"]
    procs = Pipeline([h.where]).run(net, executor="processes").steps[0].stats
    assert procs["items"] == (0, 1, 2, 3) and os.getpid() not in procs["pids"]
    if (os.cpu_count() or 1) >= 2:
        assert len(procs["pids"]) >= 2 and len(threads["threads"]) >= 2  # both cores in use


def test_compression_stage_in_a_process_pool_matches_serial():
    """The real per-weight map of the compression stages, end to end through worker processes."""
    from ir.builder import TensorSpec, program

    rng = np.random.default_rng(7)
    ws = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(3)]

    @program(inputs={"x": TensorSpec((1, 64), "fp32")})
    def net(b, x):
        for i, w in enumerate(ws):
            x = b.linear(x=x, weight=b.const(w, name=f"w{i}"), name=f"lin{i}")
        return x

    pipe = Pipeline.from_spec('palettize_weights{mode="kmeans",nbits=2},affine_quantize_weights{dtype="int8"}')
    serial = pipe.run(net)
    pooled = pipe.run(net, executor="processes")
    assert serial.result.digest == pooled.result.digest != net.digest
    assert serial.steps[0].stats["compressed"] == pooled.steps[0].stats["compressed"] == 3
