"""Streaming the packed forms out, and spill files: MatMulNBits' B made slab by slab as the
data file is written (byte for byte the in-memory export), computed tensors, spills written
around the page cache with their digest known, and spill directories that do not outlive
their process (normal exit, SIGTERM; SIGKILL's are removed by the next run)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ir import lazy
from ir.builder import TensorSpec, program
from ir.digest import tensor_digest
from ir.formats.onnx import export_onnx
from ir.formats.onnx import nbits
from ir.packing import pack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(7)


def _nbits_program(k=512, n=256, block=32, dt="int4", rows_first=False, offset=False):
    """One matmul (weight [K, N]) or linear (weight [N, K]) over int4 / uint4 blocks of K."""
    lo, hi = (-8, 8) if dt == "int4" else (0, 16)
    codes = RNG.integers(lo, hi, (n, k) if rows_first else (k, n)).astype(np.int8 if dt == "int4" else np.uint8)
    sshape = (n, k // block) if rows_first else (k // block, n)
    scale = ((RNG.random(sshape) + 0.5) * 0.01).astype(np.float32)
    off = RNG.integers(lo, hi, sshape) if offset else None

    @program(inputs={"x": TensorSpec((2, k))})
    def net(b, x):
        w = b.constexpr_blockwise_shift_scale(data=b.const(codes, dtype=dt), scale=scale,
                                              offset=None if off is None else b.const(off, dtype=dt))
        if rows_first:
            return b.linear(x=x, weight=w, name="y")
        return b.matmul(x=x, y=w, name="y")
    return net, codes, scale


def _initializers(path):
    m = onnx.load(str(path))  # external data read back in
    return m, {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


@pytest.mark.parametrize("rows_first", [False, True])
@pytest.mark.parametrize("dt", ["int4", "uint4"])
def test_matmul_nbits_streamed_equals_in_memory_byte_for_byte(tmp_path, rows_first, dt):
    k, n = 1024, 512  # B 256 KB and the scales 64 KB: both made slab by slab when streamed
    prog, codes, scale = _nbits_program(k=k, n=n, rows_first=rows_first, dt=dt)
    fused = {op.name: op.attrs["val"] for op in nbits.rewrite(prog).main.ops if op.op_type == "const"}
    computed = sorted(name.rsplit("_", 1)[-1] for name, v in fused.items() if lazy.producer_of(v) is not None)
    assert computed == (["B"] if rows_first else ["B", "scales"])  # [N, K] scales need no transposing
    streamed, inline = tmp_path / "s", tmp_path / "i"
    streamed.mkdir()
    inline.mkdir()
    export_onnx(prog, streamed / "m.onnx", matmul_nbits=True, external_data=True)  # through the DataSink
    export_onnx(prog, inline / "m.onnx", matmul_nbits=True, external_data=False)  # one proto, no sink
    m_s, init_s = _initializers(streamed / "m.onnx")
    m_i, init_i = _initializers(inline / "m.onnx")
    assert sorted(init_s) == sorted(init_i)
    for name in init_s:
        assert init_s[name].dtype == init_i[name].dtype and init_s[name].tobytes() == init_i[name].tobytes()
    # B by hand: the weight as [N, K], shifted to unsigned codes, packed low nibble first per row
    (node,) = [nd for nd in m_s.graph.node if nd.op_type == "MatMulNBits"]
    rows = codes if rows_first else codes.T
    shift = 8 if dt == "int4" else 0
    want = np.frombuffer(pack(rows.astype(np.int16) + shift, "uint4"), np.uint8).reshape(n, k // 32, 16)
    np.testing.assert_array_equal(init_s[node.input[1]], want)
    np.testing.assert_array_equal(init_s[node.input[2]], scale if rows_first else scale.T)
    # the streamed model refers to its data file; the in-memory one holds every byte itself
    assert (streamed / "m.onnx.data").exists() and not (inline / "m.onnx.data").exists()


def test_the_rewrite_builds_no_packed_weight_until_it_is_written():
    prog, codes, _ = _nbits_program()
    fused = nbits.rewrite(prog)
    b_vals = [op.attrs["val"] for op in fused.main.ops if op.op_type == "const" and op.name.endswith("_B")]
    (b,) = b_vals
    assert lazy.producer_of(b) is not None  # a stand-in: no memory of its own
    assert b.strides == (0, 0, 0) and not b.flags.writeable
    made = lazy.materialize(b)
    assert made.shape == b.shape and not made.flags.writeable
    want = np.frombuffer(pack(codes.T.astype(np.int16) + 8, "uint4"), np.uint8).reshape(b.shape)
    np.testing.assert_array_equal(made, want)
    assert tensor_digest(b) == tensor_digest(made)  # a stand-in digests as its bytes


def test_a_computed_tensor_is_made_from_its_slabs_each_time():
    calls = []

    def produce():
        calls.append(1)
        yield np.arange(6, dtype=np.int32).reshape(2, 3)
        yield np.arange(6, 9, dtype=np.int32).reshape(1, 3)

    arr = lazy.computed((3, 3), np.int32, produce)
    np.testing.assert_array_equal(lazy.materialize(arr), np.arange(9).reshape(3, 3))
    assert b"".join(bytes(c) for c in lazy.produced_bytes(arr)) == np.arange(9, dtype=np.int32).tobytes()
    assert len(calls) == 2
    plain = np.zeros(3)
    assert lazy.materialize(plain) is plain and lazy.producer_of(plain) is None

    def short():
        yield np.zeros((1, 3), np.int32)

    with pytest.raises(ValueError, match="produced 3 of its 9"):
        lazy.materialize(lazy.computed((3, 3), np.int32, short))


@pytest.mark.parametrize("direct", [True, False])  # False: a system without O_DIRECT writes normally
@pytest.mark.parametrize("nbytes", [(1 << 20) + 13, (lazy.CHUNK * 2) + 4096 + 5])
def test_a_spilled_array_has_the_bytes_and_the_digest_without_reading_its_file(tmp_path, monkeypatch, nbytes,
                                                                               direct):
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    arr = RNG.integers(-128, 128, nbytes, dtype=np.int8)
    arr.flags.writeable = False
    spill = lazy.Spill(str(tmp_path))
    digest = tensor_digest(arr)
    out = spill.put(arr, digest)  # the digest the caller computed while the bytes were in memory
    r = lazy.region_of(out)
    assert r is not None and os.path.getsize(r.path) == nbytes  # the padded last block cut back
    before = lazy.READS["digest_bytes"]
    assert tensor_digest(out) == digest
    assert lazy.READS["digest_bytes"] == before  # known from the bytes it was made from
    unknown = spill.put(arr.copy())  # without one: hashed from its file when first asked
    assert tensor_digest(unknown) == digest and lazy.READS["digest_bytes"] == before + nbytes
    np.testing.assert_array_equal(out, arr)
    lazy.release(out)  # its cached pages dropped: the bytes are still there, read from the file
    np.testing.assert_array_equal(out[-5:], arr[-5:])


def _spill_child(tmp_path, tail: str) -> subprocess.Popen:
    """A process that spills one array under tmp_path, prints its spill directory, then `tail`."""
    code = textwrap.dedent(f"""
        import sys, time, numpy as np
        from ir import lazy
        s = lazy.Spill({str(tmp_path)!r})
        kept = s.put(np.ones(1 << 20, np.int8))
        print(s.directory, flush=True)
        {tail}
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def test_spill_directory_goes_on_normal_exit_and_on_sigterm(tmp_path):
    done = _spill_child(tmp_path, "")
    first = done.stdout.readline().strip()
    assert done.wait(60) == 0 and first and not os.path.exists(first)
    child = _spill_child(tmp_path, "time.sleep(60)")
    where = child.stdout.readline().strip()
    assert os.path.isdir(where) and os.listdir(where)
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) == 128 + signal.SIGTERM
    assert not os.path.exists(where)


def test_a_killed_runs_spill_directory_is_removed_by_the_next_spill(tmp_path):
    child = _spill_child(tmp_path, "time.sleep(60)")
    where = child.stdout.readline().strip()
    child.kill()  # SIGKILL: nothing runs in the child
    child.wait(60)
    assert os.path.isdir(where)
    alive = tmp_path / f"{lazy.SPILL_PREFIX}{lazy._host()}-{os.getppid()}-keep"  # a running process's
    alive.mkdir()
    other = tmp_path / "weightpress-spill-elsewhere"  # not this host's pattern: left alone
    other.mkdir()
    lazy.Spill(str(tmp_path)).put(np.ones(1 << 20, np.int8))
    assert not os.path.exists(where)
    assert alive.is_dir() and other.is_dir()


# ---- .wpz: big members mapped from the file ---------------------------------------------------

def test_wpz_maps_its_big_members_and_checks_their_digest_streamed(tmp_path):
    from ir.interpret import evaluate
    from ir.serialize import LAZY_MIN_BYTES, SerializationError, load, save

    w = RNG.standard_normal((1024, 512)).astype(np.float32)  # 2 MB: mapped
    bias = RNG.standard_normal(1024).astype(np.float32)  # 4 KB: read

    @program(inputs={"x": TensorSpec((1, 512))})
    def net(b, x):
        return b.linear(x=x, weight=w, bias=bias)

    save(net, tmp_path / "m.wpz")
    before = lazy.READS["digest_bytes"]
    back = load(tmp_path / "m.wpz")
    vals = {op.outputs[0].shape: op.attrs["val"] for op in back.main.ops if op.op_type == "const"}
    big, small = vals[(1024, 512)], vals[(1024,)]
    r = lazy.region_of(big)
    assert r is not None and r.offset % 64 == 0 and w.nbytes >= LAZY_MIN_BYTES
    assert lazy.region_of(small) is None
    assert lazy.READS["digest_bytes"] - before == w.nbytes  # hashed from the file once, in chunks
    assert back.digest == net.digest
    x = RNG.standard_normal((1, 512)).astype(np.float32)
    (got,), (want,) = evaluate(back, {"x": x}).values(), evaluate(net, {"x": x}).values()
    np.testing.assert_array_equal(got, want)
    save(back, tmp_path / "again.wpz")  # a mapped member streams back out
    assert load(tmp_path / "again.wpz").digest == net.digest
    # a byte changed inside the mapped member: refused by its digest, naming the member
    data = bytearray((tmp_path / "m.wpz").read_bytes())
    data[r.offset + 100] ^= 0xFF
    (tmp_path / "bad.wpz").write_bytes(bytes(data))
    with pytest.raises(SerializationError, match="does not match its digest"):
        load(tmp_path / "bad.wpz")


def test_validation_reads_no_spilled_code_back(tmp_path, monkeypatch):
    """A run on a file-backed model spills its int4 codes; checking they fit int4 between
    steps uses the range the spill remembered, so no code is read back from its file."""
    import ir.validate as validate_module
    from ir.validate import validate

    spill = lazy.Spill(str(tmp_path))
    codes = RNG.integers(-8, 8, (1024, 1024)).astype(np.int8)
    codes.flags.writeable = False
    spilled = spill.put(codes)
    assert lazy.known_range(spilled) == (int(codes.min()), int(codes.max()))
    scale = np.full((32, 1024), 0.01, np.float32)

    @program(inputs={"x": TensorSpec((2, 1024))})
    def net(b, x):
        w = b.constexpr_blockwise_shift_scale(data=b.const(spilled, dtype="int4"), scale=scale)
        return b.matmul(x=x, y=w, name="y")

    def no_reading(values, dt):
        raise AssertionError("the spilled codes were read to check their range")

    monkeypatch.setattr(validate_module, "fits", no_reading)
    assert validate(net) is net
    assert lazy.known_range(codes) is None  # only spills remember a range


def test_disk_cache_streams_a_tensor_in_and_reads_it_mapped(tmp_path):
    """The cache file of a tensor is encode_tensor's bytes (written chunk by chunk, also for
    a file-backed tensor); read back it is mapped, checked against its digest, and its pages
    given back: the values are still all there."""
    from ir.serialize import encode_tensor
    from pipeline import DiskCache

    w = RNG.standard_normal((1024, 512)).astype(np.float32)
    spilled = lazy.Spill(str(tmp_path / "spill")).put(w)  # a file-backed weight goes in from its file

    @program(inputs={"x": TensorSpec((1, 512))})
    def net(b, x):
        return b.linear(x=x, weight=spilled)

    cache = DiskCache(tmp_path / "cache")
    cache.put_program(net)
    (path,) = (tmp_path / "cache" / "tensors").rglob("*.bin")
    assert path.read_bytes() == encode_tensor(w, "fp32")
    back = DiskCache(tmp_path / "cache").get_program(net.digest)
    assert back is not None and back.digest == net.digest
    (val,) = [op.attrs["val"] for op in back.main.ops if op.op_type == "const" and op.attrs["val"].size > 1000]
    assert not val.flags.writeable
    np.testing.assert_array_equal(val, w)


def test_coreml_weight_file_values_are_file_backed(tmp_path):
    """A package's big raw weights stay in weight.bin (mapped, read on demand); sub-byte and
    small ones are read; exporting the imported program copies the mapped ones back out."""
    from ir.formats.coreml import export_coreml, import_coreml

    w = RNG.standard_normal((1024, 512)).astype(np.float32)
    codes = RNG.integers(-8, 8, (256, 1024)).astype(np.int8)

    @program(inputs={"x": TensorSpec((1, 512))})
    def net(b, x):
        q = b.constexpr_blockwise_shift_scale(data=b.const(codes, dtype="int4"),
                                              scale=np.full((256, 32), 0.01, np.float32))
        return b.linear(x=b.linear(x=x, weight=w), weight=q)

    export_coreml(net, tmp_path / "m.mlpackage", target="iOS18")
    back = import_coreml(tmp_path / "m.mlpackage")
    vals = {v.shape: v for v in (op.attrs["val"] for op in back.main.ops if op.op_type == "const")}
    assert lazy.region_of(vals[(1024, 512)]) is not None
    assert lazy.region_of(vals[(256, 1024)]) is None  # int4: unpacked into memory
    np.testing.assert_array_equal(vals[(1024, 512)], w)
    np.testing.assert_array_equal(vals[(256, 1024)], codes)
    assert back.digest == import_coreml(tmp_path / "m.mlpackage").digest
    export_coreml(back, tmp_path / "again.mlpackage", target="iOS18")
    again = import_coreml(tmp_path / "again.mlpackage")
    assert again.digest == back.digest
