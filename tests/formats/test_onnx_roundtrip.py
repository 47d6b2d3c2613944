"""ONNX -> IR -> ONNX on models built with onnx.helper: onnxruntime on the
original, the interpreter on the import, and onnxruntime on the export agree."""
import os
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h

from ir.formats.onnx import OnnxFormatError, export_onnx, import_onnx
from ir.interpret import evaluate
from onnx_models import N, cnn, model, rand, transformer_block, transformer_feeds

ort = pytest.importorskip("onnxruntime")


def ir_feeds(prog, feeds):
    names = {orig: ir for ir, orig in prog.attrs["onnx_io_names"]}
    return {names[k]: v for k, v in feeds.items()}


def check_round_trip(m, feeds, tmp_path, rtol=1e-4, atol=1e-5, **export_kw):
    """Returns the imported program after checking all three runs agree."""
    want = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    prog = import_onnx(m)
    mine = list(evaluate(prog, ir_feeds(prog, feeds)).values())
    path = export_onnx(prog, tmp_path / "out.onnx", **export_kw)
    back = ort.InferenceSession(str(path)).run(None, feeds)
    for w, a, b in zip(want, mine, back):
        np.testing.assert_allclose(a, w, rtol=rtol, atol=atol)
        np.testing.assert_allclose(b, w, rtol=rtol, atol=atol)
    return prog


def op_counts(prog):
    return Counter(op.op_type for _, op in prog.walk())


def test_transformer_encoder_block(tmp_path):
    prog = check_round_trip(transformer_block(), transformer_feeds(), tmp_path)
    ops = op_counts(prog)
    for core in ("matmul", "linear", "layer_norm", "softmax", "erf", "gather", "transpose", "tanh", "real_div",
                 "select"):
        assert ops[core] >= 1, core
    for foreign in ("GatherElements", "GatherND", "Expand", "IsNaN", "And", "Shape", "ConstantOfShape", "Slice"):
        assert ops[f"onnx.{foreign}"] >= 1, foreign
    # symbolic dims survive: the input keeps its dim_params
    ids = prog.main.inputs[0]
    assert ids.shape == ("batch", "sequence")


def test_transformer_other_batch_and_length(tmp_path):
    check_round_trip(transformer_block(), transformer_feeds(batch=2, seq=11), tmp_path)


def test_cnn(tmp_path):
    prog = check_round_trip(cnn(), {"input.1": rand(2, 3, 16, 16, scale=1.0)}, tmp_path)
    ops = op_counts(prog)
    for core in ("conv", "conv_transpose", "batch_norm", "max_pool", "avg_pool", "concat", "reshape", "linear",
                 "reduce_mean", "relu", "sigmoid", "softmax"):
        assert ops[core] >= 1, core
    assert prog.main.inputs[0].name == "input_1"  # sanitised; the export restores "input.1"


def _single(op_type, ins, outs, inits=None, opset=17, **attrs):
    return model([N(op_type, [i[0] for i in ins] + list(inits or {}), [o[0] for o in outs], **attrs)],
                 ins, outs, inits, opset=opset)


X = ("x", T.FLOAT, [2, 3, 4])
Y = ("y", T.FLOAT, [2, 3, 4])


CASES = {
    # name: (model, core op expected after import)
    "Add": (_single("Add", [X, Y], [("z", T.FLOAT, [2, 3, 4])]), "add"),
    "Sub": (_single("Sub", [X, Y], [("z", T.FLOAT, [2, 3, 4])]), "sub"),
    "Mul": (_single("Mul", [X, Y], [("z", T.FLOAT, [2, 3, 4])]), "mul"),
    "Div": (_single("Div", [X, Y], [("z", T.FLOAT, [2, 3, 4])]), "real_div"),
    "Relu": (_single("Relu", [X], [("z", T.FLOAT, [2, 3, 4])]), "relu"),
    "Sigmoid": (_single("Sigmoid", [X], [("z", T.FLOAT, [2, 3, 4])]), "sigmoid"),
    "Tanh": (_single("Tanh", [X], [("z", T.FLOAT, [2, 3, 4])]), "tanh"),
    "Erf": (_single("Erf", [X], [("z", T.FLOAT, [2, 3, 4])]), "erf"),
    "Gelu": (_single("Gelu", [X], [("z", T.FLOAT, [2, 3, 4])], opset=20), "gelu"),
    "GeluTanh": (_single("Gelu", [X], [("z", T.FLOAT, [2, 3, 4])], opset=20, approximate="tanh"), "gelu"),
    "Softmax": (_single("Softmax", [X], [("z", T.FLOAT, [2, 3, 4])], axis=1), "softmax"),
    "Transpose": (_single("Transpose", [X], [("z", T.FLOAT, [4, 2, 3])], perm=[2, 0, 1]), "transpose"),
    "Reshape": (_single("Reshape", [X], [("z", T.FLOAT, [6, 4])], {"s": np.array([-1, 4], np.int64)}), "reshape"),
    "Unsqueeze": (_single("Unsqueeze", [X], [("z", T.FLOAT, [2, 1, 3, 4])], {"a": np.array([1], np.int64)}),
                  "expand_dims"),
    "Squeeze": (_single("Squeeze", [("x", T.FLOAT, [2, 1, 4])], [("z", T.FLOAT, [2, 4])],
                        {"a": np.array([1], np.int64)}), "squeeze"),
    "Cast": (_single("Cast", [X], [("z", T.INT32, [2, 3, 4])], to=T.INT32), "cast"),
    "MatMul": (_single("MatMul", [X], [("z", T.FLOAT, [2, 3, 5])], {"w": rand(4, 5)}), "matmul"),
    "GemmAlphaBetaTransA": (_single("Gemm", [("x", T.FLOAT, [4, 3])], [("z", T.FLOAT, [3, 5])],
                                    {"w": rand(4, 5), "c": rand(3, 5)}, transA=1, alpha=0.5, beta=2.0), "matmul"),
    "GemmNoBias": (_single("Gemm", [("x", T.FLOAT, [3, 4])], [("z", T.FLOAT, [3, 5])], {"w": rand(5, 4)},
                           transB=1), "linear"),
    "Concat": (_single("Concat", [X, Y], [("z", T.FLOAT, [2, 6, 4])], axis=1), "concat"),
    "Gather": (_single("Gather", [X], [("z", T.FLOAT, [2, 2, 4])], {"i": np.array([2, -1], np.int64)}, axis=1),
               "gather"),
    "ReduceMean13": (_single("ReduceMean", [X], [("z", T.FLOAT, [2, 1, 4])], opset=13, axes=[1]), "reduce_mean"),
    "ReduceMean18": (_single("ReduceMean", [X], [("z", T.FLOAT, [2, 4])], {"a": np.array([1], np.int64)},
                             opset=18, keepdims=0), "reduce_mean"),
    "Flatten": (_single("Flatten", [X], [("z", T.FLOAT, [6, 4])], axis=2), "reshape"),
    "LayerNorm2Axes": (_single("LayerNormalization", [X], [("z", T.FLOAT, [2, 3, 4])],
                               {"g": 1 + rand(3, 4), "b": rand(3, 4)}, axis=1, epsilon=1e-3), "layer_norm"),
    "Clip": (_single("Clip", [X], [("z", T.FLOAT, [2, 3, 4])], {"lo": np.float32(-0.1), "hi": np.float32(0.2)}),
             "clip"),
    "QDQPerTensor": (model([N("QuantizeLinear", ["x", "s", "zp"], ["q"]), N("DequantizeLinear", ["q", "s", "zp"], ["z"])],
                           [X], [("z", T.FLOAT, [2, 3, 4])],
                           {"s": np.float32(0.01), "zp": np.uint8(128)}), "quantize"),
    "QDQPerAxis": (model([N("QuantizeLinear", ["x", "s", "zp"], ["q"], axis=1),
                          N("DequantizeLinear", ["q", "s", "zp"], ["z"], axis=1)],
                         [X], [("z", T.FLOAT, [2, 3, 4])],
                         {"s": np.array([0.01, 0.02, 0.03], np.float32), "zp": np.array([0, 3, -5], np.int8)}),
                   "dequantize"),
    "ConvTransposePads": (_single("ConvTranspose", [("x", T.FLOAT, [1, 4, 5, 5])], [("z", T.FLOAT, [1, 6, 9, 9])],
                                  {"w": rand(4, 3, 3, 3)}, strides=[2, 2], pads=[1, 1, 1, 1], group=2),
                          "conv_transpose"),
    "AvgPoolIncludePad": (_single("AveragePool", [("x", T.FLOAT, [1, 2, 5, 5])], [("z", T.FLOAT, [1, 2, 3, 3])],
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
                          "avg_pool"),
    "LeakyRelu": (_single("LeakyRelu", [X], [("z", T.FLOAT, [2, 3, 4])], alpha=0.2), "leaky_relu"),
    "Where": (model([N("Greater", ["x", "y"], ["c"]), N("Where", ["c", "x", "y"], ["z"])], [X, Y],
                    [("z", T.FLOAT, [2, 3, 4])]), "select"),
    "Tile": (_single("Tile", [X], [("z", T.FLOAT, [4, 3, 8])], {"r": np.array([2, 1, 2], np.int64)}), "tile"),
    "Slice": (_single("Slice", [X], [("z", T.FLOAT, [2, 2, 2])],
                      {"s": np.array([1, 0], np.int64), "e": np.array([2 ** 62, 4], np.int64),
                       "a": np.array([1, -1], np.int64), "st": np.array([1, 2], np.int64)}), "onnx.Slice"),
    "Sin": (_single("Sin", [X], [("z", T.FLOAT, [2, 3, 4])]), "sin"),
    "ReduceProd": (_single("ReduceProd", [X], [("z", T.FLOAT, [2, 1, 4])], {"a": np.array([1], np.int64)}, opset=18),
                   "reduce_prod"),
    "Conv1dSameLower": (_single("Conv", [("x", T.FLOAT, [1, 2, 9])], [("z", T.FLOAT, [1, 4, 5])],
                                {"w": rand(4, 2, 4)}, strides=[2], auto_pad="SAME_LOWER"), "conv"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_round_trip(tmp_path, name):
    m, core = CASES[name]
    rng = np.random.default_rng(3)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in m.graph.input}
    prog = check_round_trip(m, feeds, tmp_path)
    assert op_counts(prog)[core] >= 1


def test_blocked_int4_dequantize_linear_opset21(tmp_path):
    q = np.random.default_rng(0).integers(-8, 8, (6, 8))
    inits = [h.make_tensor("w_q", T.INT4, [6, 8], q.reshape(-1).tolist()),
             onnx.numpy_helper.from_array((np.arange(12, dtype=np.float32).reshape(6, 2) + 1) * 0.01, "w_s"),
             h.make_tensor("w_z", T.INT4, [6, 2], [1, -1] * 6)]
    nodes = [N("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=1, block_size=4),
             N("Gemm", ["x", "w"], ["z"], transB=1)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [3, 8])],
                     [h.make_tensor_value_info("z", T.FLOAT, [3, 6])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    prog = check_round_trip(m, {"x": rand(3, 8, scale=1)}, tmp_path)
    assert op_counts(prog)["constexpr_blockwise_shift_scale"] == 1
    dq = [n for n in onnx.load(tmp_path / "out.onnx").graph.node if n.op_type == "DequantizeLinear"]
    assert [a.i for a in dq[0].attribute if a.name == "block_size"] == [4]


def test_unknown_ops_stay_foreign_with_their_attributes(tmp_path):
    m = model([N("HardSigmoid", ["x"], ["a"], alpha=0.3), N("CumSum", ["a", "ax"], ["z"], reverse=1)],
              [X], [("z", T.FLOAT, [2, 3, 4])], {"ax": np.array(1, np.int64)})
    prog = check_round_trip(m, {"x": rand(2, 3, 4, scale=1)}, tmp_path)
    hard = next(op for _, op in prog.walk() if op.op_type == "onnx.HardSigmoid")
    assert hard.attrs["alpha"] == pytest.approx(0.3)
    cumsum = next(op for _, op in prog.walk() if op.op_type == "onnx.CumSum")
    assert cumsum.attrs["reverse"] == 1


def test_external_data_in_and_out(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    m = transformer_block(d=32, ff=64)
    original = m.SerializeToString()  # save_model moves the tensors out of m
    onnx.save_model(m, src / "encoder.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="encoder.onnx.data", size_threshold=256)
    assert os.path.getsize(src / "encoder.onnx.data") > os.path.getsize(src / "encoder.onnx")
    feeds = transformer_feeds()
    prog = import_onnx(src / "encoder.onnx")
    weights = next(op for _, op in prog.walk() if op.name == "onnx__MatMul_ff1")
    assert weights.attrs["val"].shape == (32, 64) and not weights.attrs["val"].flags.writeable
    out = tmp_path / "dst" / "encoder.onnx"
    out.parent.mkdir()
    export_onnx(prog, out, external_data=True)
    assert (out.parent / "encoder.onnx.data").exists()
    assert sorted(os.listdir(out.parent)) == ["encoder.onnx", "encoder.onnx.data"]  # no temp files left
    want = ort.InferenceSession(original).run(None, feeds)
    got = ort.InferenceSession(str(out)).run(None, feeds)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # a ModelProto whose tensors live outside it loads with base_dir
    proto = onnx.load(src / "encoder.onnx", load_external_data=False)
    again = import_onnx(proto, base_dir=src)
    assert again.digest == prog.digest


def test_import_and_export_do_not_mutate(tmp_path):
    m = cnn()
    before = m.SerializeToString()
    prog = import_onnx(m)
    assert m.SerializeToString() == before
    digest = prog.digest
    export_onnx(prog, tmp_path / "a.onnx")
    assert prog.digest == digest
    const = next(op for _, op in prog.walk() if op.op_type == "const")
    with pytest.raises(ValueError):
        const.attrs["val"][...] = 0


def test_reexport_is_stable(tmp_path):
    """import(export(import(m))) computes the same as import(m), op for op."""
    prog = import_onnx(cnn())
    export_onnx(prog, tmp_path / "a.onnx")
    again = import_onnx(tmp_path / "a.onnx")
    non_const = lambda p: op_counts(p) - Counter({"const": op_counts(p)["const"]})  # noqa: E731
    assert non_const(again) == non_const(prog)


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage\xff" * 10, b"not an onnx model at all\n"])
def test_damaged_files_raise_a_value_error_naming_the_file(tmp_path, content):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(content)
    with pytest.raises(OnnxFormatError) as e:
        import_onnx(bad)
    assert isinstance(e.value, ValueError)
    assert "broken.onnx" in str(e.value)


def test_truncated_file(tmp_path):
    good = tmp_path / "good.onnx"
    onnx.save_model(cnn(), good)
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(OnnxFormatError, match="cut.onnx"):
        import_onnx(bad)


def test_missing_file_and_missing_external_data(tmp_path):
    with pytest.raises(OnnxFormatError, match="no such file"):
        import_onnx(tmp_path / "nope.onnx")
    onnx.save_model(cnn(), tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    os.remove(tmp_path / "m.data")
    with pytest.raises(OnnxFormatError, match="m.onnx"):
        import_onnx(tmp_path / "m.onnx")


def test_invalid_graph_is_reported():
    m = model([N("Add", ["x", "undefined"], ["z"])], [X], [("z", T.FLOAT, [2, 3, 4])])
    with pytest.raises(OnnxFormatError, match="undefined"):
        import_onnx(m)
