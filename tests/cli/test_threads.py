"""compress runs the per-weight work on a thread pool when the machine has several cores, with
BLAS held to one thread meanwhile, and writes what a serial run writes."""
from __future__ import annotations

import contextlib

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from pipeline import Pipeline, cli, executors
from pipeline.models import load_model, save_model


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]


def test_one_core_runs_serially(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 1)
    with contextlib.ExitStack() as stack:
        assert cli._threads(stack) is None


def test_several_cores_get_threads_and_one_blas_thread_until_the_command_ends(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 4)
    with threadpool_limits(limits=2, user_api="blas"):  # whatever OPENBLAS_NUM_THREADS said
        before = _blas_threads()
        if not before or max(before) < 2:
            pytest.skip(f"numpy's BLAS here cannot run 2 threads ({before})")
        with contextlib.ExitStack() as stack:
            assert cli._threads(stack) == "threads"
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == before


def test_usable_cores_follow_the_affinity():
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert executors.usable_cores() == len(os.sched_getaffinity(0))


def test_threads_write_the_serial_bytes(demo_model, tmp_path):
    import stages

    program = load_model(demo_model)
    pipe = [stages.get("sparsify_weights")(target_sparsity=0.25), stages.get("palettize_weights")(nbits=4), stages.get("mixed_precision")(target_bpw=5.0)]
    files = []
    for executor in (None, "threads"):
        out = tmp_path / f"{executor}.onnx"
        save_model(Pipeline(pipe).run(program, executor=executor).result, out)
        files.append(out.read_bytes())
    assert files[0] == files[1]


def test_without_a_cluster_the_cli_asks_for_threads(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_threads", lambda stack: seen.append(stack) or "threads")
    args = cli.build_parser().parse_args(["compress", "m.onnx", "-o", "o.onnx"])
    with contextlib.ExitStack() as stack:
        assert cli._executor(args, stack) == "threads"
        assert seen == [stack]
