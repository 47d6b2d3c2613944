import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline import CacheCorruptionWarning, DiskCache, MemoryCache, Pipeline, Trace, load_trace
from tests.pipeline import pipeline_helpers as h

ROOT = Path(__file__).resolve().parents[2]

SIX_STEPS = ('test_scale_const{name="w0"},test_identity,test_scale_const{factor=3.0,name="w1"},'
             'test_round_const{name="w2"},test_scale_const{factor=0.5,name="w0"},test_identity{tag="end"}')

RUN_SCRIPT = textwrap.dedent("""
    import sys
    from pipeline import DiskCache, Pipeline
    from tests.pipeline import pipeline_helpers as h
    h.register()
    trace = Pipeline.from_spec(sys.argv[2]).run(h.mlp(), cache=DiskCache(sys.argv[1]))
    print(trace.result_digest, "".join("C" if s.cached else "R" for s in trace.steps))
""")


def run_fresh_process(cache_dir, calls_file, spec=SIX_STEPS):
    env = {**os.environ, h.CALLS_FILE_ENV: str(calls_file), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(cache_dir), spec], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def calls(path) -> list:
    return Path(path).read_text().split() if Path(path).exists() else []


def test_second_run_in_a_fresh_process_executes_nothing(tmp_path):
    calls_file = tmp_path / "calls.txt"
    digest1, pattern1 = run_fresh_process(tmp_path / "cache", calls_file)
    assert pattern1 == "RRRRRR" and len(calls(calls_file)) == 6
    digest2, pattern2 = run_fresh_process(tmp_path / "cache", calls_file)
    assert pattern2 == "CCCCCC"
    assert len(calls(calls_file)) == 6  # no stage ran in the second process
    assert digest2 == digest1 == Pipeline.from_spec(SIX_STEPS)(h.mlp()).digest


def test_disk_cache_round_trips_programs_and_hits(tmp_path):
    cache = DiskCache(tmp_path)
    net = h.mlp()
    trace = Pipeline.from_spec(SIX_STEPS).run(net, cache=cache)
    fresh = DiskCache(tmp_path)
    again = Pipeline.from_spec(SIX_STEPS).run(net, cache=fresh)
    assert all(s.cached for s in again.steps)
    assert again.result.digest == trace.result.digest
    assert fresh.get_program(trace.result.digest).digest == trace.result.digest
    assert again.steps[0].stats == trace.steps[0].stats
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic writes leave no temporaries


def _tensor_files(cache: DiskCache) -> list:
    return sorted((cache.root / "tensors").rglob("*.bin"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage_graph", "garbage_entry"])
def test_corrupt_entry_is_reported_and_recomputed(tmp_path, damage):
    net = h.mlp()
    pipe = Pipeline([h.scale_const(name="w0", factor=7.0)])
    cache = DiskCache(tmp_path)
    first = pipe.run(net, cache=cache)
    new_w0 = [op for op in first.result.main.ops if op.name == "w0"][0].attrs["val"]
    from ir.digest import tensor_digest

    target = {
        "truncate": cache._tensor_path(tensor_digest(new_w0)),
        "flip": cache._tensor_path(tensor_digest(new_w0)),
        "garbage_graph": cache._graph_path(first.result.digest),
        "garbage_entry": next((cache.root / "entries").rglob("*.json")),
    }[damage]
    data = target.read_bytes()
    target.write_bytes({"truncate": data[: len(data) // 2],
                        "flip": data[:10] + bytes([data[10] ^ 0xFF]) + data[11:],
                        "garbage_graph": b"{not json",
                        "garbage_entry": b"\x00\x01"}[damage])
    h.CALLS.clear()
    with pytest.warns(CacheCorruptionWarning, match="corrupt"):
        trace = pipe.run(net, cache=DiskCache(tmp_path))
        result = trace.result
    assert h.CALLS == ["scale_const:w0:7.0"]  # recomputed once
    assert result.digest == first.result.digest
    h.CALLS.clear()
    third = pipe.run(net, cache=DiskCache(tmp_path))  # and repaired on disk
    assert third.result.digest == first.result.digest and h.CALLS == [] and third.steps[0].cached


def test_half_written_files_from_a_killed_run_are_ignored(tmp_path):
    cache = DiskCache(tmp_path)
    net = h.mlp()
    pipe = Pipeline([h.scale_const(name="w1")])
    first = pipe.run(net, cache=cache)
    # a killed writer leaves only temporaries; the entry is written last, so without it: a miss
    for p in (cache.root / "entries").rglob("*.json"):
        p.rename(p.with_name(".tmp-killed"))
    h.CALLS.clear()
    again = pipe.run(net, cache=DiskCache(tmp_path))
    assert h.CALLS == ["scale_const:w1:2.0"] and again.result.digest == first.result.digest


def test_cache_grows_by_the_changed_weights_not_the_model(tmp_path):
    width, layers = 128, 8  # 64 KiB per weight, 512 KiB of weights
    net = h.mlp(n_layers=layers, width=width)
    weight_bytes = width * width * 4
    model_bytes = layers * weight_bytes
    cache = DiskCache(tmp_path)
    Pipeline([h.scale_const(name="w0")]).run(net, cache=cache)
    after_first = cache.disk_bytes()
    assert after_first < model_bytes * 1.1  # one copy of the model (plus small graph files)
    five_more = Pipeline([h.scale_const(name="w0")] + [h.scale_const(name=f"w{i}") for i in range(1, 6)])
    five_more.run(net, cache=cache)
    growth = cache.disk_bytes() - after_first
    assert 5 * weight_bytes <= growth < 5 * weight_bytes + 5 * 16 * 1024  # the weights plus small graphs
    assert growth < model_bytes


def test_size_bound_evicts_least_recently_used(tmp_path):
    net = h.mlp(n_layers=4, width=64)  # 16 KiB per weight
    cache = DiskCache(tmp_path, max_bytes=120 * 1024)
    for i in range(12):
        Pipeline([h.scale_const(name="w0", factor=float(i + 2))]).run(net, cache=cache)
    assert cache.disk_bytes() <= 120 * 1024
    h.CALLS.clear()
    latest = Pipeline([h.scale_const(name="w0", factor=13.0)]).run(net, cache=cache)
    assert latest.steps[0].cached and h.CALLS == []  # the most recent survives
    oldest = Pipeline([h.scale_const(name="w0", factor=2.0)]).run(net, cache=cache)
    assert not oldest.steps[0].cached and h.CALLS == ["scale_const:w0:2.0"]


def test_trace_save_and_load(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    net = h.mlp()
    trace = Pipeline.from_spec(SIX_STEPS).run(net, cache=cache)
    trace.save(tmp_path / "trace.json")
    doc = json.loads((tmp_path / "trace.json").read_text())
    assert doc["pipeline"] == SIX_STEPS and len(doc["steps"]) == 6
    loaded = load_trace(tmp_path / "trace.json", DiskCache(tmp_path / "cache"))
    assert [s.output_digest for s in loaded.steps] == [s.output_digest for s in trace.steps]
    assert loaded.program_at(0).digest == net.digest
    assert loaded.result.digest == trace.result.digest
    assert loaded.steps[2].params["factor"] == 3.0 and loaded.steps[2].stage == trace.steps[2].stage
    h.CALLS.clear()
    replayed = loaded.replay(from_step=5, stages=[h.scale_const(name="w3")])
    assert h.CALLS == ["scale_const:w3:2.0"] and len(replayed.steps) == 6


def test_memory_cache_counts():
    cache = MemoryCache()
    Pipeline([h.identity]).run(h.mlp(), cache=cache)
    Pipeline([h.identity]).run(h.mlp(), cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_missing_program_is_recomputed_from_the_step_before(tmp_path):
    cache = DiskCache(tmp_path)
    net = h.mlp()
    pipe = Pipeline([h.scale_const(name="w0"), h.scale_const(name="w1")])
    first = pipe.run(net, cache=cache)
    for p in (cache.root / "graphs").glob("*.json"):
        p.unlink()  # everything evicted but the entries
    h.CALLS.clear()
    again = pipe.run(net, cache=DiskCache(tmp_path))
    assert again.result.digest == first.result.digest and len(h.CALLS) == 2


def test_a_removed_cache_directory_is_not_made_again_by_a_late_writer(tmp_path):
    # a run's temporary store (pipeline.distributed) is removed when the run ends; a job
    # still running must not bring it back
    root = tmp_path / "store"
    cache = DiskCache(root)
    prog = h.mlp(1, width=64)
    cache.put_program(prog)  # the directories below the root are made as needed
    assert cache.get_program(prog.digest).digest == prog.digest
    import shutil

    shutil.rmtree(root)
    with pytest.raises(FileNotFoundError):
        cache.put_program(h.mlp(1, width=64, seed=1))
    with pytest.raises(FileNotFoundError):  # nor by one opening it (a Dask worker's first job)
        DiskCache(root, create=False)
    assert not root.exists()
