"""What a real ONNX model carries survives import -> export: control flow as nested
blocks (weights inside branches found and compressed), every kind of type, metadata,
opsets, Constant nodes, original names, overridable initializers."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper

from ir.formats.onnx import import_onnx
from ir.formats.onnx.exporter import to_onnx_model
from ir.interpret import evaluate
from ir.types import OptionalType, SequenceType, TensorType
from stages.compression import affine_quantize_weights, palettize_weights

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 4)).astype(np.float32)
K = np.arange(4, dtype=np.float32).reshape(1, 4)


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def branchy_model(opset=17):
    """y = If(c, x @ W  [W read only in the then branch],  x + K  [K a Constant inside else]);
    z, zs = Loop(3 times: acc += y; scan out acc)."""
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["t_out"])], "then", [],
                               [_vi("t_out", T.FLOAT, [1, 4])])
    k = helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", T.FLOAT, [1, 4], K.ravel()))
    else_g = helper.make_graph([k, helper.make_node("Add", ["x", "k"], ["e_out"])], "else", [],
                               [_vi("e_out", T.FLOAT, [1, 4])])
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "y"], ["acc2"]), helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["acc2"], ["scan"])], "body",
        [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc", T.FLOAT, [1, 4])],
        [_vi("cond_out", T.BOOL, []), _vi("acc2", T.FLOAT, [1, 4]), _vi("scan", T.FLOAT, [1, 4])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Loop", ["n", "", "y"], ["z", "zs"], body=body)]
    inits = [helper.make_tensor("W", T.FLOAT, [4, 4], W.ravel()), helper.make_tensor("n", T.INT64, [], [3])]
    g = helper.make_graph(nodes, "g", [_vi("x", T.FLOAT, ["batch", 4]), _vi("c", T.BOOL, [])],
                          [_vi("z", T.FLOAT, ["batch", 4]), _vi("zs", T.FLOAT, [3, "batch", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 3)],
                          producer_name="tests", producer_version="9.9", doc_string="a doc", model_version=7)
    m.metadata_props.add(key="character_dict", value="a\nb\nc")
    onnx.checker.check_model(m)
    return m


def _run(model_or_bytes, feeds):
    blob = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
    return ort.InferenceSession(blob).run(None, feeds)


FEEDS = [{"x": np.ones((1, 4), np.float32), "c": np.array(c)} for c in (True, False)]


def test_control_flow_imports_as_nested_blocks_and_runs_like_onnxruntime():
    m = branchy_model()
    prog = import_onnx(m)
    ops = {op.op_type: op for _, op in prog.walk()}
    assert len(ops["onnx.If"].blocks) == 2 and len(ops["onnx.Loop"].blocks) == 1
    # the Constant inside the else branch is a const op of that branch
    names = dict(zip(ops["onnx.If"].attrs["_blocks"], ops["onnx.If"].blocks))
    assert any(op.op_type == "const" for op in names["else_branch"].ops)
    for feeds in FEEDS:
        ours = evaluate(prog, feeds)
        for a, b in zip(_run(m, feeds), ours.values()):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_round_trip_keeps_control_flow_metadata_and_the_interface():
    m = branchy_model()
    back = to_onnx_model(import_onnx(m))
    onnx.checker.check_model(back, full_check=True)
    assert {(p.key, p.value) for p in back.metadata_props} >= {("character_dict", "a\nb\nc")}
    assert (back.producer_name, back.producer_version, back.doc_string, back.model_version) == \
        ("tests", "9.9", "a doc", 7)
    assert {o.domain for o in back.opset_import} >= {"", "ai.onnx.ml"}
    assert [i.name for i in back.graph.input] == ["x", "c"]
    assert back.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert back.graph.output[1].type.tensor_type.shape.dim[1].dim_param == "batch"
    assert {t.name for t in back.graph.initializer} >= {"W", "n"}
    if_node = next(n for n in back.graph.node if n.op_type == "If")
    else_g = next(a.g for a in if_node.attribute if a.name == "else_branch")
    assert [n.op_type for n in else_g.node][0] == "Constant"  # kept as a Constant node
    for feeds in FEEDS:
        for a, b in zip(_run(m, feeds), _run(back, feeds)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stage", [affine_quantize_weights(dtype="int8", op_selector=lambda w: True),
                                   palettize_weights(nbits=2, op_selector=lambda w: True)])
def test_weights_inside_branches_are_compressed_and_export_runs(stage):
    prog = import_onnx(branchy_model())
    small = stage(prog)
    constexpr = [op for _, op in small.walk() if op.op_type.startswith("constexpr_")]
    # W (read only inside the then branch) and K (a Constant inside the else branch)
    assert len(constexpr) == 2
    assert prog is not small and sum(1 for _, op in prog.walk() if op.op_type.startswith("constexpr_")) == 0
    model = to_onnx_model(small)
    onnx.checker.check_model(model, full_check=True)
    for feeds in FEEDS:
        ours = evaluate(small, feeds)
        for a, b in zip(_run(model, feeds), ours.values()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    again = import_onnx(model)  # the export reads back (subgraph decode nodes import as ops)
    for feeds in FEEDS:
        for a, b in zip(evaluate(again, feeds).values(), evaluate(small, feeds).values()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _identity_model(vi_in, vi_out, opset=18):
    g = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "g", [vi_in], [vi_out])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_sequence_and_optional_types_round_trip():
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(T.FLOAT, None))
    opt = helper.make_optional_type_proto(seq)
    for tp, expected in ((seq, SequenceType(TensorType("fp32", None))),
                         (opt, OptionalType(SequenceType(TensorType("fp32", None))))):
        m = _identity_model(helper.make_value_info("a", tp), helper.make_value_info("b", tp))
        prog = import_onnx(m)
        assert prog.main.inputs[0].type == expected and prog.main.outputs[0].type == expected
        back = to_onnx_model(prog)
        assert back.graph.input[0].type == tp and back.graph.output[0].type == tp


def test_unknown_rank_and_negative_dims_are_not_guessed():
    # Softmax over a value whose rank nothing says (an If whose branches return different
    # ranks): once "integer modulo by zero" on import
    then_g = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [], [_vi("t", T.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Unsqueeze", ["a", "ax"], ["e"])], "else", [],
                               [_vi("e", T.FLOAT, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
                           helper.make_node("Softmax", ["y"], ["s"]),
                           helper.make_node("ReduceMax", ["s"], ["b"], keepdims=0)], "g",
                          [_vi("a", T.FLOAT, [2, 3]), _vi("c", T.BOOL, [])], [_vi("b", T.FLOAT, [])],
                          [helper.make_tensor("ax", T.INT64, [1], [0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    prog = import_onnx(m)
    soft = next(op for _, op in prog.walk() if "oftmax" in op.op_type)
    assert soft.outputs[0].type.rank is None
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    for c in (True, False):
        feeds = {"a": x, "c": np.array(c)}
        np.testing.assert_allclose(evaluate(prog, feeds)["b"], _run(m, feeds)[0], rtol=1e-6)
    # -1 written as a dim value means "unknown", as some exporters use it
    m2 = _identity_model(helper.make_tensor_value_info("a", T.FLOAT, [-1, 3]),
                         helper.make_tensor_value_info("b", T.FLOAT, [-1, 3]))
    prog2 = import_onnx(m2)
    assert prog2.main.inputs[0].type.shape == ("?", 3)
    assert evaluate(prog2, {"a": np.ones((5, 3), np.float32)})["b"].shape == (5, 3)


def test_old_opset_model_keeps_its_opset_and_old_ops_are_upgraded_when_needed():
    # opset 11: Unsqueeze with an axes attribute, converted to a core op and back
    g = helper.make_graph([helper.make_node("Unsqueeze", ["a"], ["u"], axes=[0]),
                           helper.make_node("Relu", ["u"], ["b"])], "g",
                          [_vi("a", T.FLOAT, [3])], [_vi("b", T.FLOAT, [1, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    back = to_onnx_model(import_onnx(m))
    assert back.opset_import[0].version == 11
    onnx.checker.check_model(back)
    x = np.array([-1, 0, 2], np.float32)
    np.testing.assert_array_equal(_run(back, {"a": x})[0], _run(m, {"a": x})[0])
    # Upsample (removed at opset 10) exported at a newer opset goes through the version converter
    up = helper.make_graph([helper.make_node("Upsample", ["a", "s"], ["b"], mode="nearest")], "g",
                           [_vi("a", T.FLOAT, [1, 1, 2, 2])], [_vi("b", T.FLOAT, [1, 1, 4, 4])],
                           [helper.make_tensor("s", T.FLOAT, [4], [1, 1, 2, 2])])
    m9 = helper.make_model(up, opset_imports=[helper.make_opsetid("", 9)])
    m9.ir_version = 4
    model = to_onnx_model(import_onnx(m9), opset=13)
    assert "Upsample" not in {n.op_type for n in model.graph.node}
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(_run(model, {"a": x})[0], np.kron(x, np.ones((2, 2), np.float32)))


def test_initializers_listed_as_inputs_stay_overridable():
    g = helper.make_graph([helper.make_node("Add", ["a", "bias"], ["b"])], "g",
                          [_vi("a", T.FLOAT, [2]), _vi("bias", T.FLOAT, [2])], [_vi("b", T.FLOAT, [2])],
                          [helper.make_tensor("bias", T.FLOAT, [2], [1, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    prog = import_onnx(m)
    assert [v.name for v in prog.main.inputs] == ["a"]  # a constant for the IR ...
    back = to_onnx_model(prog)
    assert [i.name for i in back.graph.input] == ["a", "bias"]  # ... and still an input of the file
    x = np.zeros(2, np.float32)
    np.testing.assert_array_equal(_run(back, {"a": x})[0], [1, 2])
    np.testing.assert_array_equal(_run(back, {"a": x, "bias": np.full(2, 5, np.float32)})[0], [5, 5])


def test_original_value_names_come_back():
    g = helper.make_graph([helper.make_node("MatMul", ["in.0", "layer.0/weight"], ["/out:0"])], "g",
                          [_vi("in.0", T.FLOAT, [1, 4])], [_vi("/out:0", T.FLOAT, [1, 4])],
                          [helper.make_tensor("layer.0/weight", T.FLOAT, [4, 4], W.ravel())])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    back = to_onnx_model(import_onnx(m))
    assert [t.name for t in back.graph.initializer] == ["layer.0/weight"]
    assert back.graph.output[0].name == "/out:0"


def lstm_in_branch_model(hidden=16, inputs=8):
    """An LSTM whose W / R / B are main-graph initializers read only inside an If branch."""
    w = RNG.standard_normal((1, 4 * hidden, inputs)).astype(np.float32) * 0.3
    r = RNG.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.3
    b = RNG.standard_normal((1, 8 * hidden)).astype(np.float32) * 0.1
    lstm = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden)
    then_g = helper.make_graph([lstm], "then", [], [_vi("y", T.FLOAT, None), _vi("y_h", T.FLOAT, None)])
    zeros = helper.make_node("Constant", [], ["z"], value=helper.make_tensor("zv", T.FLOAT, [1, 1, 1, 1], [0.0]))
    zh = helper.make_node("Constant", [], ["zh"], value=helper.make_tensor("zhv", T.FLOAT, [1, 1, 1], [0.0]))
    else_g = helper.make_graph([zeros, zh, helper.make_node("Identity", ["z"], ["z_out"]),
                                helper.make_node("Identity", ["zh"], ["z_h"])], "else", [],
                               [_vi("z_out", T.FLOAT, None), _vi("z_h", T.FLOAT, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["out", "h"], then_branch=then_g, else_branch=else_g)],
                          "g", [_vi("x", T.FLOAT, [5, 1, inputs]), _vi("c", T.BOOL, [])],
                          [_vi("out", T.FLOAT, ["s", "d", "b", "h"]), _vi("h", T.FLOAT, ["d", "b", "h"])],
                          [helper.make_tensor("W", T.FLOAT, w.shape, w.ravel()),
                           helper.make_tensor("R", T.FLOAT, r.shape, r.ravel()),
                           helper.make_tensor("B", T.FLOAT, b.shape, b.ravel())])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def test_rnn_weights_in_branches_are_quantized_per_gate_row():
    m = lstm_in_branch_model()
    prog = import_onnx(m)
    feeds = {"x": RNG.standard_normal((5, 1, 8)).astype(np.float32), "c": np.array(True)}
    for a, b in zip(_run(m, feeds), evaluate(prog, feeds).values()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    small = affine_quantize_weights(dtype="int8", granularity="per_channel",
                                    op_selector=lambda w: w.name in ("W", "R"))(prog)
    scales = {op.name: op.inputs["scale"].val for _, op in small.walk()
              if op.op_type == "constexpr_blockwise_shift_scale"}
    assert {k: v.shape for k, v in scales.items()} == {"W": (1, 64, 1), "R": (1, 64, 1)}
    model = to_onnx_model(small)
    got, want = _run(model, feeds)[0], _run(m, feeds)[0]
    cos = float(got.ravel() @ want.ravel() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.999


def test_control_flow_whose_subgraph_returns_the_wrong_count_is_refused():
    empty = helper.make_graph([], "b", [], [])
    g = helper.make_graph([helper.make_node("If", ["c"], ["z"], then_branch=empty, else_branch=empty)], "g",
                          [_vi("c", T.BOOL, [])], [_vi("z", T.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    from ir.formats.onnx import OnnxFormatError

    with pytest.raises(OnnxFormatError, match="If node .* returns 0 values, the node needs 1"):
        import_onnx(m)


def test_unread_initializers_and_node_annotations_survive():
    relu = helper.make_node("Relu", ["a"], ["b"], doc_string="from layer 3")
    entry = relu.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.stack_trace", "model.py:12"
    g = helper.make_graph([relu], "g", [_vi("a", T.FLOAT, [2])], [_vi("b", T.FLOAT, [2])],
                          [helper.make_tensor("spare", T.FLOAT, [3], [1, 2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    back = to_onnx_model(import_onnx(m))
    assert [t.name for t in back.graph.initializer] == ["spare"]
    node = next(n for n in back.graph.node if n.output[0] == "b")
    assert node.doc_string == "from layer 3"
    assert [(p.key, p.value) for p in node.metadata_props] == [("pkg.torch.onnx.stack_trace", "model.py:12")]


@pytest.mark.parametrize("preset", ["int8", "int4-block32", "palettize-4bit", "palettize-4bit-grouped",
                                    "sparse-50", "sparse+palettize"])
def test_compressed_opset_11_model_stays_at_opset_11_and_runs(preset):
    from pipeline import Pipeline

    w1 = RNG.standard_normal((64, 64)).astype(np.float32)
    w2 = RNG.standard_normal((48, 64)).astype(np.float32)
    cw = RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1),
         helper.make_node("Conv", ["img", "cw"], ["c"], pads=[1, 1, 1, 1])], "g",
        [_vi("x", T.FLOAT, [2, 64]), _vi("img", T.FLOAT, [1, 8, 6, 6])],
        [_vi("y", T.FLOAT, [2, 48]), _vi("c", T.FLOAT, [1, 16, 6, 6])],
        [helper.make_tensor(n, T.FLOAT, a.shape, a.ravel()) for n, a in (("w1", w1), ("w2", w2), ("cw", cw))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 6
    small = Pipeline.preset(preset).run(import_onnx(m)).result
    assert any(op.op_type.startswith("constexpr_") for _, op in small.walk())
    model = to_onnx_model(small)
    assert model.opset_import[0].version == 11
    onnx.checker.check_model(model, full_check=True)
    feeds = {"x": RNG.standard_normal((2, 64)).astype(np.float32),
             "img": RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)}
    for a, b in zip(_run(model, feeds), evaluate(small, feeds).values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
