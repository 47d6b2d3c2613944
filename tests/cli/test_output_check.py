"""`compress` loads and runs an ONNX output once in onnxruntime before putting it in place:
a model onnxruntime refuses is one line on stderr, a non-zero exit and no output file."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from ir.builder import TensorSpec, program  # noqa: E402
from pipeline import cli  # noqa: E402
from pipeline.outputcheck import OutputCheckError, check_onnx, generated_inputs  # noqa: E402
from tests.cli.conftest import leftovers  # noqa: E402


@pytest.fixture()
def broken_exporter(monkeypatch):
    """export_onnx that drops the graph's first node: a value then has no producer."""
    import ir.formats.onnx as onnx_format

    real = onnx_format.export_onnx

    def export_and_break(prog, path, *args, **kwargs):
        result = real(prog, path, *args, **kwargs)
        model = onnx.load(path)
        del model.graph.node[0]
        onnx.save(model, path)
        return result

    monkeypatch.setattr(onnx_format, "export_onnx", export_and_break)


def _compress(capsys, *args):
    code = cli.main(["compress", *map(str, args), "-q", "--no-progress"])
    return code, capsys.readouterr().err


def test_refused_output_fails_in_one_line_and_leaves_nothing(model, tmp_path, capsys, broken_exporter):
    out = tmp_path / "broken.onnx"
    code, err = _compress(capsys, model, "-o", out, "--preset", "int8")
    assert code == cli.EXIT_FAIL
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"weightpress: error: {out}: onnxruntime refuses the written model: "), lines[0]
    assert ".weightpress-" not in lines[0]  # the output's name, not the scratch copy's
    assert not out.exists() and leftovers(tmp_path) == []


def test_no_check_writes_it_anyway(model, tmp_path, capsys, broken_exporter):
    out = tmp_path / "broken.onnx"
    code, err = _compress(capsys, model, "-o", out, "--preset", "int8", "--no-check")
    assert code == cli.EXIT_OK, err
    assert out.exists()
    with pytest.raises(Exception):  # it really is broken
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_good_output_is_checked_silently(model, tmp_path, capsys):
    out = tmp_path / "ok.onnx"
    code, err = _compress(capsys, model, "-o", out, "--preset", "palettize-4bit")
    assert code == cli.EXIT_OK, err
    assert err.strip().splitlines() == [f"wrote {out}"]
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def _save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_a_model_that_fails_when_run(tmp_path):
    # loads (N is symbolic), but N = 1 cannot be reshaped to [3]
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [3])
    path = _save(tmp_path, [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [shape])
    with pytest.raises(OutputCheckError, match=r"shown\.onnx: onnxruntime cannot run the written model: "):
        check_onnx(path, tmp_path / "shown.onnx")


def _reshape_to_3(tmp_path, name="m.onnx"):
    """x [N, 64] @ W, reshaped to [3, 64]: runs for N = 3 only, so not on generated dims of 1."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], np.linspace(-1, 1, 4096, dtype=np.float32))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, 64])
    return _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["h"]),
                            helper.make_node("Reshape", ["h", "shape"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 64])], [w, shape], name)


def test_a_run_the_input_model_fails_too_is_a_note(tmp_path, capsys):
    model = _reshape_to_3(tmp_path)
    out = tmp_path / "int8.onnx"
    code, err = _compress(capsys, model, "-o", out, "--preset", "int8")
    assert code == cli.EXIT_OK, err
    note, wrote = err.strip().splitlines()
    assert note.startswith(f"weightpress: note: {out}: loaded in onnxruntime; its run on generated inputs fails "
                           "as the input model's does (") and "Reshape" in note
    assert wrote == f"wrote {out}" and out.exists()


def test_a_run_the_input_model_passes_is_an_error(tmp_path):
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [-1])
    fine = _save(tmp_path, [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M"])], [shape], "fine.onnx")
    with pytest.raises(OutputCheckError, match="cannot run the written model"):
        check_onnx(_reshape_to_3(tmp_path, "bad.onnx"), reference=fine)


def test_integer_inputs_index_in_range(tmp_path):
    # a one-row table: any index but 0 would be out of range
    table = helper.make_tensor("table", TensorProto.FLOAT, [1, 4], [1.0, 2.0, 3.0, 4.0])
    path = _save(tmp_path, [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
                 [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])], [table])
    assert check_onnx(path) is None


def test_sequence_input_is_loaded_not_run(tmp_path):
    path = _save(tmp_path, [helper.make_node("SequenceLength", ["s"], ["n"])],
                 [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)],
                 [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    note = check_onnx(path, tmp_path / "out.onnx")
    assert note == f"{tmp_path / 'out.onnx'}: loaded in onnxruntime but not run: input 's' is seq(tensor(float))"


def test_generated_inputs_respect_dtypes_and_dims():
    args = [SimpleNamespace(name="x", type="tensor(float16)", shape=["N", 3]),
            SimpleNamespace(name="ids", type="tensor(int64)", shape=[2, None]),
            SimpleNamespace(name="flag", type="tensor(bool)", shape=[]),
            SimpleNamespace(name="text", type="tensor(string)", shape=[2])]
    feeds, why = generated_inputs(args)
    assert why is None
    assert feeds["x"].dtype == np.float16 and feeds["x"].shape == (1, 3) and np.all(np.abs(feeds["x"]) <= 1)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (2, 1) and not feeds["ids"].any()
    assert feeds["flag"].dtype == np.bool_ and feeds["flag"].shape == () and not feeds["flag"]
    assert feeds["text"].tolist() == ["", ""]
    feeds, why = generated_inputs([SimpleNamespace(name="b", type="tensor(bfloat16)", shape=[2])])
    assert feeds is None and why == "input 'b' is tensor(bfloat16)"


def test_shape_of_nothing_is_a_scalar_only_when_the_program_says_so():
    @program(inputs={"s": TensorSpec((), "fp32"), "v": TensorSpec((2, 2), "fp32")})
    def net(b, s, v):
        return b.mul(x=v, y=s)

    arg = lambda name: SimpleNamespace(name=name, type="tensor(float)", shape=[])  # noqa: E731
    feeds, _ = generated_inputs([arg("s")], net)
    assert feeds["s"].shape == ()
    feeds, why = generated_inputs([arg("v")], net)  # onnxruntime shows [] for an unknown rank
    assert feeds is None and why == "input 'v' has an unknown rank"
