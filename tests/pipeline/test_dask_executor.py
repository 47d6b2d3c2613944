"""Pipeline.run on a real Dask cluster: LocalCluster(processes=True), 2 workers of 1 thread.

One cluster serves the module (starting one takes seconds). Every run is compared with
the serial run of the same pipeline by program digest (structural, over every tensor's
bytes): equal digests are equal results. Workers are killed for real (os._exit in the
worker process, the nanny starts a new one) through hooks armed in the worker processes
with Client.run; each hook fires once, claimed by creating a marker file.
"""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from ir import lazy  # noqa: E402
from ir.builder import TensorSpec, program  # noqa: E402
from ir.formats.onnx import import_onnx  # noqa: E402
from pipeline import DiskCache, Pipeline, StageFailed  # noqa: E402
from pipeline import distributed as wd  # noqa: E402
from pipeline.errors import CacheCorruptionWarning  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.cli import main  # noqa: E402
from tests.pipeline import dask_hooks  # noqa: E402

DIM = 512  # 1 MB per fp32 weight: each task's few KB of bookkeeping are well under 1% of it


@pytest.fixture(scope="module")
def client():
    """LocalCluster(n_workers=2, threads_per_worker=1, processes=True): what --workers 2 starts."""
    with wd.cluster(workers=2) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        assert all(w["nthreads"] == 1 for w in c.scheduler_info()["workers"].values())
        assert len(set(c.run(os.getpid).values()) | {os.getpid()}) == 3  # processes of their own
        yield c


@pytest.fixture()
def two_workers(client):
    """The cluster with both workers up (a killed one is restarted by its nanny)."""
    client.wait_for_workers(2, timeout=120)
    return client


@pytest.fixture()
def armed(two_workers):
    """arm(hook, marker): a dask_hooks hook armed in every worker, disarmed afterwards."""
    yield lambda hook, marker: two_workers.run(hook, marker)
    two_workers.run(dask_hooks.disarm)
    two_workers.wait_for_workers(2, timeout=120)


def _file_model(directory, layers=4, dim=DIM, seed=0, widths=None):
    """A chain of MatMuls whose fp32 weights live in external data (page-aligned); weight i
    is [widths[i], widths[i + 1]] (default: all dim x dim)."""
    widths = widths or [dim] * (layers + 1)
    layers = len(widths) - 1
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    with open(os.path.join(directory, "model.onnx.data"), "wb") as f:
        for i in range(layers):
            w = (rng.standard_normal((widths[i], widths[i + 1])) * 0.02).astype(np.float32)
            f.write(b"\0" * ((-f.tell()) % 4096))
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=list(w.shape))
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", "model.onnx.data"), ("offset", str(f.tell())), ("length", str(w.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            f.write(w.tobytes())
            inits.append(t)
            nodes.append(helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"],
                                          ["y" if i == layers - 1 else f"h{i}"], name=f"mm{i}"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, widths[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, widths[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = os.path.join(directory, "model.onnx")
    onnx.save_model(model, path)
    return path


def _weight_bytes(prog) -> int:
    return sum(op.attrs["val"].nbytes for _, op in prog.walk() if op.op_type == "const")


def _in_memory_model(layers=3, dim=DIM):
    rng = np.random.default_rng(1)
    ws = [(rng.standard_normal((dim, dim)) * 0.05).astype(np.float32) for _ in range(layers)]

    @program(inputs={"x": TensorSpec((1, dim), "fp32")})
    def net(b, x):
        for i, w in enumerate(ws):
            x = b.relu(x=b.linear(x=x, weight=b.const(w, name=f"w{i}")))
        return x

    return net, ws


# ---- the tests --------------------------------------------------------------------------------

def test_file_backed_model_matches_serial_and_the_scheduler_moves_no_weights(two_workers, tmp_path):
    client = two_workers
    prog = import_onnx(_file_model(tmp_path))
    assert all(lazy.region_of(op.attrs["val"]) is not None for _, op in prog.walk() if op.op_type == "const")
    weight_bytes = _weight_bytes(prog)
    for preset in ("int8", "int4-block32"):
        pipe = Pipeline.preset(preset)
        serial = pipe.run(prog)
        before = wd.traffic(client)
        on_dask = pipe.run(prog, executor=client)
        after = wd.traffic(client)
        assert on_dask.result.digest == serial.result.digest != prog.digest, preset
        assert on_dask.steps[0].stats["compressed"] == 4
        moved = wd.moved(before, after)
        # the counters count: every task went out and came back through them ...
        assert after["client_to_scheduler"] > before["client_to_scheduler"]
        assert after["scheduler_to_workers"] > before["scheduler_to_workers"]
        # ... and carried references: under 1% of the 4 MB of weights (one weight alone is 1 MB)
        assert 0 < moved < 0.01 * weight_bytes, (preset, moved, after)


def test_in_memory_weights_are_put_in_the_shared_store_first(two_workers, tmp_path):
    client = two_workers
    net, ws = _in_memory_model()
    serial = Pipeline.preset("int8").run(net)
    cache = DiskCache(tmp_path / "cache")
    before = wd.traffic(client)
    on_dask = Pipeline.preset("int8").run(net, executor=client, cache=cache)
    moved = wd.moved(before, wd.traffic(client))
    assert on_dask.result.digest == serial.result.digest
    assert moved < 0.01 * sum(w.nbytes for w in ws), moved
    for w in ws:  # each input weight went to the store the workers read
        assert cache.get_program(wd.weightrefs.holder_program(w).digest) is not None
    # the results came back through the same store: the cached output program needs no new tensor
    stored = cache.get_program(on_dask.result.digest)
    assert stored is not None and stored.digest == serial.result.digest


def _with_a_worker_killed(hook, executor, armed, tmp_path):
    """(serial trace, Dask trace) of int8 on a file-backed model, a worker killed once by `hook`."""
    prog = import_onnx(_file_model(tmp_path))
    serial = Pipeline.preset("int8").run(prog)
    marker = str(tmp_path / "killed")
    armed(hook, marker)
    on_dask = Pipeline.preset("int8").run(prog, executor=executor)
    assert os.path.exists(marker)  # a worker did die
    return serial, on_dask


def test_a_worker_killed_mid_job_is_replaced_and_the_result_is_unchanged(two_workers, armed, tmp_path):
    serial, on_dask = _with_a_worker_killed(dask_hooks.kill_in_job, two_workers, armed, tmp_path)
    assert on_dask.result.digest == serial.result.digest
    assert on_dask.steps[0].stats["compressed"] == 4


def test_a_worker_killed_while_writing_a_result_leaves_no_corrupt_file(two_workers, armed, tmp_path):
    store = tmp_path / "store"
    serial, on_dask = _with_a_worker_killed(dask_hooks.kill_while_writing, wd.DaskExecutor(two_workers, store=store),
                                            armed, tmp_path)
    assert on_dask.result.digest == serial.result.digest
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name.startswith(".tmp-") for p in files)  # the dead writer's half-written temporary
    graphs = [p.stem for p in (store / "graphs").glob("*.json")]
    assert len(graphs) >= 4  # at least one quantized weight per job
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)  # a corrupt file would warn
        fresh = DiskCache(store)
        assert all(fresh.get_program(g) is not None for g in graphs)


def test_a_weight_file_changed_during_the_run_fails_the_step(two_workers, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"  # where the run's temporary store goes
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # w0 (changed) fails at once; w1, 16x bigger, is still being compressed when the run fails
    prog = import_onnx(_file_model(tmp_path, widths=[DIM, DIM, 16 * DIM]))
    prog.digest  # the run's input is hashed from the file as it is now (what Pipeline.run does first)
    data = tmp_path / "model.onnx.data"
    st = os.stat(data)
    with open(data, "r+b") as f:  # same size, same file, mtime put back: only a digest can tell
        f.seek(DIM * 4 * 7)
        f.write(np.float32(123.0).tobytes())
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(StageFailed, match="changed on disk") as info:
        Pipeline.preset("int8").run(prog, executor=two_workers)
    assert isinstance(info.value.__cause__, lazy.WeightFileChanged)
    assert str(data) in str(info.value)
    # the job on the unchanged weight may still run after the failure ended the run: once the
    # workers are idle, nothing is left of the run's store (a late job writes nothing)
    deadline = time.monotonic() + 60
    while any(two_workers.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert list(scratch.iterdir()) == []


def test_a_scheduler_that_does_not_answer_is_one_clear_error():
    started = time.perf_counter()
    with pytest.raises(wd.ClusterUnreachable, match="tcp://127.0.0.1:9") as info:
        with wd.cluster(scheduler="tcp://127.0.0.1:9", timeout=1):
            pass
    assert isinstance(info.value, ValueError) and "does not answer" in str(info.value)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - started < 30
    with pytest.raises(wd.ClusterUnreachable, match="not a Dask scheduler address"):
        with wd.cluster(scheduler="no port here", timeout=1):
            pass


def test_an_address_where_something_else_answers_is_one_clear_error():
    """A web server (or anything not speaking Dask's protocol) at the address."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    server.settimeout(0.2)
    done = threading.Event()

    def answer_like_http():
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:  # nobody yet (timeout), or closed
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
                time.sleep(0.2)

    thread = threading.Thread(target=answer_like_http, daemon=True)
    thread.start()
    try:
        with pytest.raises(wd.ClusterUnreachable, match=f"'tcp://127.0.0.1:{port}'.*not as a Dask scheduler"):
            with wd.cluster(scheduler=f"tcp://127.0.0.1:{port}", timeout=3):
                pass
    finally:
        done.set()
        thread.join(5)
        server.close()


def _serial_digest(model, preset: str) -> str:
    return Pipeline.preset(preset).run(load_model(model)).result.digest


def test_cli_scheduler_gives_the_serial_output(client, tmp_path):
    model = _file_model(tmp_path)
    out = tmp_path / "dask.wpz"
    assert main(["compress", model, "-o", str(out), "--preset", "int8", "-q",
                 "--scheduler", client.scheduler.address]) == 0
    assert load_model(out).digest == _serial_digest(model, "int8")


def test_cli_bad_scheduler_is_one_line_and_writes_nothing(tmp_path, capsys):
    model = _file_model(tmp_path, layers=1)
    out = tmp_path / "out.wpz"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["compress", model, "-o", str(out), "--preset", "int8", "--scheduler", "tcp://127.0.0.1:9"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("weightpress: error: ") and "'tcp://127.0.0.1:9' does not answer" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]  # nothing written
    with pytest.raises(SystemExit) as info:  # one or the other
        main(["compress", model, "-o", str(out), "--preset", "int8", "--workers", "2", "--scheduler", "x:1"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_cli_workers_runs_a_local_cluster(tmp_path):
    model = _file_model(tmp_path, layers=2)
    out = tmp_path / "local.wpz"
    assert main(["compress", model, "-o", str(out), "--preset", "int4-block32", "-q", "--workers", "1"]) == 0
    assert load_model(out).digest == _serial_digest(model, "int4-block32")
