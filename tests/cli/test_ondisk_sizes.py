"""The compress table's bytes are the file's: on a generated ONNX model at opset 17, for
every preset, the saving the table reports equals the change in file size up to the
graph's own overhead (decode nodes and the import record of each compressed weight),
onnxruntime runs the output, and the int4 file is smaller than the int8 file."""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pipeline import Pipeline, presets  # noqa: E402
from pipeline import report as rep  # noqa: E402
from pipeline.filesizes import measure_file  # noqa: E402
from pipeline.models import load_model, save_model  # noqa: E402

# per compressed weight: its decode nodes (<= 2.1 KB measured, sparse + palettized) and
# its import record in the metadata (<= 1.2 KB measured); plus the model's own framing
OVERHEAD_PER_WEIGHT = 4096
OVERHEAD_FIXED = 1024
PRESETS = [p for p in presets.names() if p != "canonicalize_quantization"]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """MatMul / Gemm MLP with 278k fp32 weights at opset 17; its Shape op (changed at
    opsets 19 and 21) keeps the export at 17, where int4 has no ONNX type."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((256, 512)) * 0.05, "b1": rng.standard_normal(512),
             "w2": rng.standard_normal((512, 256)) * 0.05, "b2": rng.standard_normal(256),
             "w3": rng.standard_normal((64, 256)) * 0.05, "b3": rng.standard_normal(64)}
    nodes = [h.make_node("MatMul", ["x", "w1"], ["h1"]), h.make_node("Add", ["h1", "b1"], ["a1"]),
             h.make_node("Relu", ["a1"], ["r1"]), h.make_node("MatMul", ["r1", "w2"], ["h2"]),
             h.make_node("Add", ["h2", "b2"], ["a2"]), h.make_node("Relu", ["a2"], ["r2"]),
             h.make_node("Gemm", ["r2", "w3", "b3"], ["y"], transB=1), h.make_node("Shape", ["y"], ["y_shape"])]
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 256])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["batch", 64]),
                      h.make_tensor_value_info("y_shape", T.INT64, [2])],
                     [nh.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("ondisk") / "mlp.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def outputs(mlp):
    """preset -> (output path, the table's changes) as `weightpress compress` makes them."""
    program = load_model(mlp)
    done = {}
    for name in PRESETS:
        result = Pipeline.preset(name).run(program).result
        out = save_model(result, mlp.with_name(f"{name}.onnx"))
        before, after = rep.weights_of(program), rep.weights_of(result)
        sizes_in = measure_file(mlp, program, [w.name for w in before])
        sizes_out = measure_file(out, result, [w.name for w in after])
        done[name] = out, rep.compare(before, after, before_sizes=sizes_in.weights, after_sizes=sizes_out.weights)
    return done


@pytest.mark.parametrize("preset", PRESETS)
def test_reported_saving_is_the_file_saving(mlp, outputs, preset):
    out, changes = outputs[preset]
    assert onnx.load(out).opset_import[0].version == 17  # the model's opset kept
    assert all(c.before_file is not None and c.after_file is not None for c in changes)  # every weight measured
    reported = sum(c.before_bytes - c.after_bytes for c in changes)
    on_disk = os.path.getsize(mlp) - os.path.getsize(out)
    compressed = sum(1 for c in changes if c.after.compression != "plain")
    assert compressed == 3
    assert abs(on_disk - reported) <= OVERHEAD_FIXED + OVERHEAD_PER_WEIGHT * compressed, (on_disk, reported)
    assert on_disk >= 0.9 * reported
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    assert y.shape == (2, 64) and np.all(np.isfinite(y))


def test_int4_file_is_smaller_than_int8_file(outputs):
    int8, int4 = (os.path.getsize(outputs[p][0]) for p in ("int8", "int4-block32"))
    # 278k weights: int8 ~ 1 byte each, int4 ~ half a byte plus a scale per 32
    assert int4 < 0.7 * int8, (int4, int8)


def test_table_total_is_the_measured_sum(outputs):
    _, changes = outputs["int8"]
    headers, rows = rep.summary_rows(changes)
    assert headers[2:4] == ("before (file)", "after (file)")
    assert rows[-1][3] == rep.human_bytes(sum(c.after_file for c in changes))


def test_estimates_are_labelled_when_the_file_is_not_measured(outputs):
    _, changes = outputs["int8"]
    import dataclasses

    mixed = [changes[0]] + [dataclasses.replace(c, after_file=None) for c in changes[1:]]
    headers, rows = rep.summary_rows(mixed)
    assert headers[3] == "after (file, ~est.)"
    assert not rows[0][3].startswith("~") and rows[1][3].startswith("~")
    headers, _ = rep.summary_rows([dataclasses.replace(c, before_file=None, after_file=None) for c in changes])
    assert headers[2:4] == ("before (est.)", "after (est.)")


def test_names_of_a_foreign_model_are_matched_through_the_import_renaming(tmp_path):
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    w = np.ones((4, 8), np.float32)
    g = h.make_graph([h.make_node("MatMul", ["x", "onnx::MatMul.7"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [2, 4])], [h.make_tensor_value_info("y", T.FLOAT, [2, 8])],
                     [nh.from_array(w, "onnx::MatMul.7")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    program = load_model(path)
    (weight,) = rep.weights_of(program)
    assert weight.name != "onnx::MatMul.7"  # renamed on import
    from ir.formats.onnx.sizes import tensor_bytes

    (t,) = onnx.load(path).graph.initializer
    assert measure_file(path, program, [weight.name]).weights == {weight.name: tensor_bytes(t)}


def test_wpz_weights_are_their_zip_members(tmp_path):
    import zipfile

    from ir.builder import TensorSpec, program

    w = np.arange(64, dtype=np.float32).reshape(8, 8)

    @program(inputs={"x": TensorSpec((1, 8))})
    def net(b, x):
        same = b.const(w, name="w")
        return b.linear(x=b.linear(x=x, weight=same, name="h"), weight=b.const(w.copy(), name="w_again"), name="y")
    path = save_model(net, tmp_path / "m.wpz")
    with zipfile.ZipFile(path) as zf:
        (member,) = [i for i in zf.infolist() if i.filename.startswith("tensors/")]  # one digest, stored once
    entry = member.compress_size + 30 + 46 + 2 * len(member.filename)  # data, local header, directory entry
    sizes = measure_file(path, net, ["w", "w_again"])
    assert sizes.weights == {"w": entry, "w_again": 0}  # the second reads the same stored tensor
    assert member.compress_size == 64 * 4 and sizes.file_bytes == path.stat().st_size
