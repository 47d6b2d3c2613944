"""Weight references (pipeline.weightrefs): what a Dask task carries instead of weights.

None of these needs Dask: the references, the shared store and the digest checks are
plain Python, and the core must work (and say what is missing) where Dask is absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ir import lazy
from ir.digest import tensor_digest
from pipeline import DiskCache, weightrefs
from pipeline.errors import CacheCorruptionWarning
from pipeline.weightrefs import FileRegion, Inline, Stored

REPO = Path(__file__).resolve().parents[2]


def _file_backed(tmp_path, arr, offset=4096, name="w.bin"):
    """`arr` written at `offset` of a file, and the read-only map of it ir.lazy makes."""
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(b"\xab" * offset)
        f.write(np.ascontiguousarray(arr).tobytes())
        f.write(b"\xcd" * 100)
    return path, lazy.file_array(path, offset, arr.dtype, arr.shape)


def test_a_file_backed_weight_travels_as_its_region(tmp_path):
    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    path, arr = _file_backed(tmp_path, w)
    store = DiskCache(tmp_path / "store")
    payload = weightrefs.dumps({"weight": arr, "again": arr}, store)
    refs = weightrefs.references(payload)
    expected = FileRegion(str(path), 4096, w.nbytes, "<f4", (64, 64), tensor_digest(w))
    assert refs == [expected, expected]
    assert len(payload) < 1000 < w.nbytes  # the pickle holds the reference, not the 16 KB
    assert not any((tmp_path / "store" / "tensors").rglob("*.bin"))  # nothing copied to the store
    got = weightrefs.loads(payload, store)
    assert got["weight"] is got["again"]  # one array per reference, as before pickling
    np.testing.assert_array_equal(got["weight"], w)
    assert not got["weight"].flags.writeable
    assert lazy.region_of(got["weight"]).offset == 4096  # the worker maps the file itself


def test_an_in_memory_weight_is_stored_once_and_read_back_checked(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    w.flags.writeable = False
    store = DiskCache(tmp_path / "store")
    memo: dict = {}
    first = weightrefs.dumps(("job", w), store, memo)
    second = weightrefs.dumps(("another job", w), store, memo)
    (ref,) = weightrefs.references(first)
    assert weightrefs.references(second) == [ref]
    assert isinstance(ref, Stored) and ref.digest == tensor_digest(w) and ref.shape == (32, 64)
    assert len(list((tmp_path / "store" / "tensors").rglob("*.bin"))) == 1  # stored once
    # a worker opens the same directory with a store of its own
    _, got = weightrefs.loads(second, DiskCache(tmp_path / "store"))
    np.testing.assert_array_equal(got, w)
    assert got.dtype == w.dtype and not got.flags.writeable


def test_small_arrays_travel_inline_and_come_back_read_only(tmp_path):
    store = DiskCache(tmp_path / "store")
    small = np.array([[1, -2, 3]], dtype=np.int8)
    payload = weightrefs.dumps([small, 7, "x"], store)
    assert weightrefs.references(payload) == [Inline("|i1", (1, 3), small.tobytes())]
    got, seven, x = weightrefs.loads(payload, store)
    np.testing.assert_array_equal(got, small)
    assert not got.flags.writeable and (seven, x) == (7, "x")
    assert not any((tmp_path / "store" / "tensors").rglob("*.bin"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(["<f4", "<f2", "|i1", "|u1", "<i4", "|b1", "<f8"]),
       shape=st.lists(st.integers(0, 40), min_size=0, max_size=3),
       transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_any_numeric_array_round_trips_exactly(dtype, shape, transposed, seed):
    """Whatever its kind of reference (inline, stored), an array comes back with the same
    dtype, shape, values and digest, read-only; a transposed view too."""
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 50).astype(dtype)
    if transposed:
        arr = arr.T
    with tempfile.TemporaryDirectory() as tmp:
        store = DiskCache(tmp)
        got = weightrefs.loads(weightrefs.dumps(arr, store), store)
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    assert tensor_digest(got) == tensor_digest(arr)
    assert not got.flags.writeable


def test_a_weight_file_changed_after_hashing_is_weight_file_changed(tmp_path):
    """Same size, same inode, mtime put back: only the digest can tell, and it does."""
    w = np.ones((64, 64), np.float32)
    path, arr = _file_backed(tmp_path, w)
    payload = weightrefs.dumps(arr, None)
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(4096 + 100)
        f.write(b"\x00\x00\x80\x7f")  # one element becomes +inf
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(lazy.WeightFileChanged, match=str(path)) as info:
        weightrefs.loads(payload, None)
    assert isinstance(info.value, ValueError) and "changed on disk" in str(info.value)


def test_a_stored_tensor_missing_or_corrupt_is_never_read_as_something_else(tmp_path):
    w = np.linspace(0, 1, 4096, dtype=np.float32)
    store = DiskCache(tmp_path / "store")
    payload = weightrefs.dumps(w, store)
    with pytest.raises(weightrefs.StoreMiss, match="not in the shared store"):
        weightrefs.loads(payload, DiskCache(tmp_path / "elsewhere"))  # a store the worker does not share
    (tensor,) = (tmp_path / "store" / "tensors").rglob("*.bin")
    data = bytearray(tensor.read_bytes())
    data[10] ^= 0xFF
    tensor.write_bytes(bytes(data))
    with pytest.warns(CacheCorruptionWarning), pytest.raises(weightrefs.StoreMiss):
        weightrefs.loads(payload, DiskCache(tmp_path / "store"))
    assert not tensor.exists()  # the store dropped it; a retry would write it again


def test_the_core_imports_and_runs_without_dask(tmp_path):
    """dask blocked from importing: the pipeline runs, `cluster()` and `--workers` say what
    to install, in one line and before anything is written."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["dask"] = sys.modules["distributed"] = None  # as if not installed
        from pipeline import Pipeline
        from pipeline import distributed
        from pipeline.demo import build_program
        from pipeline.models import save_model
        from pipeline.cli import main
        p = build_program()
        assert Pipeline.preset("int8").run(p, executor="serial").result.digest != p.digest
        try:
            with distributed.cluster(workers=2):
                pass
        except distributed.DistributedUnavailable as e:
            assert isinstance(e, ValueError) and "weightpress[distributed]" in str(e), e
        else:
            raise AssertionError("cluster() without dask")
        save_model(p, {str(tmp_path / 'm.wpz')!r})
        code = main(["compress", {str(tmp_path / 'm.wpz')!r}, "-o", {str(tmp_path / 'out.wpz')!r},
                     "--preset", "int8", "--workers", "2"])
        assert code == 1, code
        assert "dask" not in sys.modules or sys.modules["dask"] is None
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightpress: error: ") and "distributed" in lines[0], lines
    assert not (tmp_path / "out.wpz").exists()


def test_a_stored_result_is_the_store_s_own_file_format(tmp_path):
    """What the store keeps is a program of one const (ir.serialize encoding, no pickle):
    any DiskCache reader gets it back, checked."""
    w = np.arange(2048, dtype=np.int16)
    store = DiskCache(tmp_path / "store")
    ref = weightrefs.put(store, w)
    program = DiskCache(tmp_path / "store").get_program(ref.holder)
    (const,) = program.main.ops
    np.testing.assert_array_equal(const.attrs["val"], w)
    for f in (tmp_path / "store").rglob("*"):
        if f.is_file():
            assert not f.read_bytes().startswith(b"\x80")  # no pickle protocol header anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(weightrefs.get(store, ref), w)


def test_only_a_dask_client_is_taken_for_one():
    """Duck-typed executors keep their old paths; DaskExecutor wants a real Client."""
    from contextlib import ExitStack

    from pipeline import distributed
    from pipeline.errors import PipelineError
    from pipeline.executors import make_context

    class Client:  # a look-alike from another package: .map + .gather, not dask's
        def map(self, fn, items):
            return [fn(x) for x in items]

        def gather(self, futures):
            return futures

    assert not distributed.is_dask_client(Client())
    with ExitStack() as stack:
        context = make_context(Client(), stack)
        assert list(context.map(lambda x: x * 2, [1, 2, 3])) == [2, 4, 6]
    with pytest.raises(PipelineError, match="expected a dask.distributed Client"):
        distributed.DaskExecutor(Client())
    with pytest.raises(PipelineError, match="either workers=N or scheduler=ADDRESS"):
        with distributed.cluster():
            pass
    with pytest.raises(PipelineError, match="positive number"):
        with distributed.cluster(workers=0):
            pass


def test_a_payload_naming_anything_outside_the_project_is_refused(tmp_path):
    import pickle

    from pipeline.diskcache import DiskCache

    store = DiskCache(tmp_path / "store")
    forged = pickle.dumps(os.system)  # what a forged task would carry to run a command
    with pytest.raises(weightrefs.ForbiddenGlobal, match="names posix.system"):
        weightrefs.loads(forged, store)
    with pytest.raises(weightrefs.ForbiddenGlobal, match="builtins.eval"):
        weightrefs.loads(pickle.dumps(eval), store)
    # what jobs do carry still loads: project objects, numpy arrays, plain containers
    arr = np.arange(4, dtype=np.float32)
    back = weightrefs.loads(weightrefs.dumps({"a": (arr, [1, 2.5])}, store), store)
    np.testing.assert_array_equal(back["a"][0], arr)
    assert back["a"][1] == [1, 2.5]
