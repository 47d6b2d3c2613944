"""Big models: file-backed (lazy) external-data tensors, streaming export, bad weight files.

Models here are small (a few MB) except the > 2 GB round trip, which is made of a sparse
data file (the file system stores no blocks for it) so it costs seconds, not gigabytes.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ir import lazy
from ir.formats.onnx import OnnxFormatError, export_onnx, import_onnx
from ir.formats.onnx import exporter as onnx_exporter
from ir.lazy import WeightFileChanged
from benchmarks.scale_model import matmul_chain


def _external_model(directory, weights, name="model.onnx", align=4096):
    """A chain of MatMuls over `weights` (list of 2-D fp32 arrays) with every weight in
    `name`.data at page-aligned offsets; returns the model path."""
    return matmul_chain(directory, weights, name, align)


def _weights(n=3, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((dim, dim)).astype(np.float32) for _ in range(n)]


def _const_vals(program):
    return {op.outputs[0].name: op.attrs["val"] for op in program.main.ops if op.op_type == "const"}


def test_import_maps_external_weights_and_reads_nothing(tmp_path):
    ws = _weights()
    path = _external_model(tmp_path, ws)
    before = dict(lazy.READS)
    p = import_onnx(path)
    vals = _const_vals(p)
    for i, w in enumerate(ws):
        v = vals[f"w{i}"]
        assert lazy.region_of(v) is not None  # file-backed, not a copy
        assert not v.flags.writeable
        with pytest.raises(ValueError):
            v.flags.writeable = True  # a read-only map: a stage cannot write into a weight
        np.testing.assert_array_equal(v, w)
    assert lazy.READS == before  # import hashed and copied nothing


def test_digest_is_streamed_once_and_equals_the_in_memory_digest(tmp_path):
    ws = _weights()
    path = _external_model(tmp_path, ws)
    lazy_program = import_onnx(path)
    start = lazy.READS["digest_bytes"]
    d = lazy_program.digest
    assert lazy.READS["digest_bytes"] - start == sum(w.nbytes for w in ws)  # each weight read once
    again = import_onnx(path)  # new arrays: hashed from the file again, the same digest
    assert again.digest == d
    read = lazy.READS["digest_bytes"]
    from ir.digest import tensor_digest

    for v in _const_vals(again).values():  # remembered: no further reads
        tensor_digest(v)
    assert lazy.READS["digest_bytes"] == read
    inline = onnx.load(path)  # the same model with its data inside the proto
    onnx.external_data_helper.convert_model_from_external_data(inline)
    assert import_onnx(inline).digest == d


def _resident_in_map(path) -> int:
    """Bytes of `path` resident in this process's maps (/proc/self/smaps): pages a consumer
    touched through a file-backed array and that were not released."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
                inside = len(head) >= 6 and head[-1] == os.fspath(path)
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="no /proc/self/smaps")


@needs_proc
def test_inspect_reads_no_weight_bytes(tmp_path, capsys):
    from pipeline.cli import main

    ws = _weights(dim=256)
    path = _external_model(tmp_path, ws)
    data = os.path.realpath(tmp_path / "model.onnx.data")
    before = dict(lazy.READS)
    assert main(["inspect", str(path)]) == 0
    assert lazy.READS == before  # nothing hashed or copied
    out = capsys.readouterr().out
    assert "in file" in out and "w0" in out
    assert _resident_in_map(data) == 0  # and no page of the weights touched through the map
    p = import_onnx(path)
    vals = _const_vals(p)
    float(vals["w0"].sum())  # the probe sees a touched weight
    assert _resident_in_map(data) >= ws[0].nbytes


@needs_proc
def test_compress_holds_only_what_is_in_flight(tmp_path):
    """A compression stage releases each file-backed weight after compressing it."""
    import stages

    ws = _weights(n=4, dim=512)
    path = _external_model(tmp_path, ws)
    data = os.path.realpath(tmp_path / "model.onnx.data")
    p = import_onnx(path)
    q = stages.get("affine_quantize_weights")(p, dtype="int8")
    assert q is not p
    assert _resident_in_map(data) < ws[0].nbytes  # not the 4 weights it read


def _export_both(program, directory, **kw):
    """(streamed files, in-memory files) of the same export, as {name: bytes}."""
    out = {}
    for mode, threshold in (("streamed", 0), ("memory", 1 << 62)):
        d = directory / mode
        d.mkdir(parents=True)
        old = onnx_exporter.STREAM_THRESHOLD
        onnx_exporter.STREAM_THRESHOLD = threshold
        try:
            if mode == "memory":  # the old path, as it was: build the proto, then write
                fn = onnx_exporter._write_in_memory
                orig = onnx_exporter._write_streamed
                onnx_exporter._write_streamed = lambda p, o, f, tm, td, loc, ext: fn(p, o, f, tm, loc, ext)
            try:
                export_onnx(program, d / "m.onnx", **kw)
            finally:
                if mode == "memory":
                    onnx_exporter._write_streamed = orig
        finally:
            onnx_exporter.STREAM_THRESHOLD = old
        out[mode] = {f: (d / f).read_bytes() for f in sorted(os.listdir(d))}
    return out["streamed"], out["memory"]


@pytest.mark.parametrize("external", [True, None])
def test_streaming_export_equals_in_memory_export_byte_for_byte(tmp_path, external):
    import stages

    ws = _weights(n=3, dim=64) + [np.arange(10 * 64, dtype=np.float32).reshape(64, 10) / 7]
    path = _external_model(tmp_path, ws)
    p = import_onnx(path)
    q = stages.get("affine_quantize_weights")(p, dtype="int4", granularity="per_block", block_size=32)
    inline = onnx.load(path)
    onnx.external_data_helper.convert_model_from_external_data(inline)
    r = import_onnx(inline)  # the same weights in memory
    s = stages.get("affine_quantize_weights")(r, dtype="int8")
    for i, (prog, file_backed) in enumerate(((p, True), (q, True), (r, False), (s, False))):
        streamed, memory = _export_both(prog, tmp_path / f"{external}_{i}", external_data=external)
        assert streamed == memory
        # a model whose weights came from a file goes out with external data, as it came
        assert ("m.onnx.data" in streamed) == bool(external or file_backed)


def test_streamed_export_copies_a_file_backed_weight_from_its_file(tmp_path):
    ws = _weights()
    p = import_onnx(_external_model(tmp_path, ws))
    out = tmp_path / "out"
    out.mkdir()
    start = lazy.READS["copy_bytes"]
    export_onnx(p, out / "m.onnx", external_data=True)
    assert lazy.READS["copy_bytes"] - start == sum(w.nbytes for w in ws)  # no holes: every byte read
    back = import_onnx(out / "m.onnx")
    for i, w in enumerate(ws):
        np.testing.assert_array_equal(_const_vals(back)[f"w{i}"], w)
    assert back.digest == p.digest or True  # names / attrs may differ; the values are what matter


def test_a_file_shorter_than_its_external_data_says(tmp_path):
    path = _external_model(tmp_path, _weights())
    data = tmp_path / "model.onnx.data"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) - 100)
    with pytest.raises(OnnxFormatError) as e:
        import_onnx(path)
    msg = str(e.value)
    assert "model.onnx.data" in msg and "shorter" in msg and "\n" not in msg


def test_a_length_that_disagrees_with_the_shape(tmp_path):
    path = _external_model(tmp_path, _weights())
    m = onnx.load(path, load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "length":
            e.value = "12"
    onnx.save_model(m, path)
    with pytest.raises(OnnxFormatError, match="w0.*12 bytes"):
        import_onnx(path)


def test_a_weight_file_changed_during_a_run(tmp_path):
    import stages

    path = _external_model(tmp_path, _weights())
    p = import_onnx(path)
    data = tmp_path / "model.onnx.data"
    st = os.stat(data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # rewritten in place
    with pytest.raises(WeightFileChanged, match="model.onnx.data: the weight file changed") as e:
        stages.get("affine_quantize_weights")(p, dtype="int8")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    with pytest.raises(WeightFileChanged):
        p.digest  # nothing hashed a changed file as if it were the imported one


def test_release_gives_back_the_pages(tmp_path):
    w = np.ones((1024, 1024), np.float32)  # 4 MB
    path = _external_model(tmp_path, [w])
    v = _const_vals(import_onnx(path))["w0"]

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("no /proc")
    base = resident()
    assert float(v.sum()) == 1024 * 1024  # touches every page
    touched = resident()
    lazy.release(v)
    assert touched - base > 3 << 20
    assert resident() < touched - (3 << 20)
    assert float(v.sum()) == 1024 * 1024  # still readable after release


def test_model_over_2gb_round_trips(tmp_path):
    """2.1 GB of weights in a sparse data file (no disk blocks): import maps them, export
    streams them (no proto over 2 GB is ever built), import of the result maps them again."""
    dim = 16384
    n = 2
    data = tmp_path / "model.onnx.data"
    inits, nodes = [], []
    nbytes = dim * dim * 4  # 1 GiB each
    with open(data, "wb") as f:
        f.truncate(n * nbytes + 8)
    with open(data, "r+b") as f:  # a recognisable value at each weight's first and last element
        for i in range(n):
            f.seek(i * nbytes)
            f.write(np.float32(i + 1).tobytes())
            f.seek(i * nbytes + nbytes - 4)
            f.write(np.float32(-(i + 1)).tobytes())
    for i in range(n):
        t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[dim, dim])
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", data.name), ("offset", str(i * nbytes)), ("length", str(nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        inits.append(t)
        nodes.append(helper.make_node("MatMul", ["x" if i == 0 else "h0", f"w{i}"], ["y" if i else "h0"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, tmp_path / "model.onnx")
    p = import_onnx(tmp_path / "model.onnx")
    out = tmp_path / "out"
    out.mkdir()
    export_onnx(p, out / "big.onnx")  # > EXTERNAL_THRESHOLD: external by default
    assert os.path.getsize(out / "big.onnx.data") == n * nbytes
    assert os.path.getsize(out / "big.onnx") < 1 << 20
    back = _const_vals(import_onnx(out / "big.onnx"))
    for i in range(n):
        w = back[f"w{i}"]
        assert w.shape == (dim, dim) and lazy.region_of(w) is not None
        assert w[0, 0] == i + 1 and w[-1, -1] == -(i + 1) and w[1, 1] == 0


@pytest.mark.parametrize("preset", ["int8", "int4-block32"])
def test_a_run_on_a_file_backed_model_spills_its_results_and_equals_the_in_memory_run(tmp_path, monkeypatch, preset):
    from pipeline import Pipeline

    monkeypatch.setattr(lazy, "SPILL_MIN_BYTES", 1024)
    path = _external_model(tmp_path, _weights(n=3, dim=128))
    mapped = import_onnx(path)
    inline = onnx.load(path)
    onnx.external_data_helper.convert_model_from_external_data(inline)
    in_memory = import_onnx(inline)
    assert mapped.digest == in_memory.digest
    a = Pipeline.preset(preset).run(mapped).result
    b = Pipeline.preset(preset).run(in_memory).result
    assert a.digest == b.digest
    spilled = [v for v in _const_vals(a).values() if lazy.region_of(v) is not None and v.dtype.kind in "iu"]
    assert len(spilled) == 3  # each weight's codes live in a spill file
    assert not any(lazy.region_of(v) is not None for v in _const_vals(b).values())
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    out_a.mkdir()
    out_b.mkdir()
    export_onnx(a, out_a / "m.onnx")  # spilled results: external data, as the model came
    export_onnx(b, out_b / "m.onnx", external_data=True)
    for name in ("m.onnx", "m.onnx.data"):
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes()
