"""Our ONNX kernels on hand-computed cases, the dispatch in foreign.compute, and the
sequence / optional kernels (called directly: the interpreter cannot carry
non-tensor values until the IR types for them exist)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ir.formats.onnx import foreign, import_onnx
from ir.formats.onnx.kernels import TABLE, Node, Unsupported, kernel_for
from ir.interpret import EvaluationError, evaluate


def run(op, ins, attrs=None, opset=21, n_out=1):
    return kernel_for(op)(list(ins), dict(attrs or {}), Node(op, opset, n_out))


def test_table_is_onnx_ops_without_control_flow():
    schemas = {(s.domain, s.name) for s in onnx.defs.get_all_schemas_with_history()}
    keys = {tuple(k.split(":")) if ":" in k else ("", k) for k in TABLE}
    assert not {("", "If"), ("", "Loop"), ("", "Scan")} & keys
    assert keys <= schemas, sorted(keys - schemas)


# ---- indexing --------------------------------------------------------------------

def test_gather_elements_negative_indices():
    data = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    idx = np.array([[-1, 0], [-3, -2]])
    (y,) = run("GatherElements", [data, idx], {"axis": 1})
    np.testing.assert_array_equal(y, [[3, 1], [4, 5]])


def test_gather_elements_indices_narrower_than_data():
    # PyTorch's position_ids pattern: data [1, 8], indices [1, 3] along axis 1; the
    # reference evaluator fails here ("cannot reshape array of size 1 into shape (1,32)")
    data = np.arange(10, 18, dtype=np.int64).reshape(1, 8)
    (y,) = run("GatherElements", [data, np.array([[2, 0, 7]])], {"axis": 1})
    np.testing.assert_array_equal(y, [[12, 10, 17]])
    # and along axis 0 with fewer columns than data
    (y,) = run("GatherElements", [np.arange(12).reshape(3, 4), np.array([[2, -1], [0, 1]])], {"axis": 0})
    np.testing.assert_array_equal(y, [[8, 9], [0, 5]])


def test_gather_elements_out_of_range_names_the_problem():
    with pytest.raises(ValueError, match="out of range"):
        run("GatherElements", [np.zeros((2, 3)), np.array([[3]])], {"axis": 1})


@pytest.mark.parametrize("start,end,step,expected", [
    (-1, -100, -1, [5, 4, 3, 2, 1, 0]),  # end below -n clamps to 'before the first element'
    (100, 2, -2, [5, 3]),                # start past the end clamps to n - 1
    (4, -7, -3, [4, 1]),
    (2 ** 63 - 1, 2 ** 63 - 1, -1, [5, 4, 3, 2, 1, 0]),  # INT64_MAX end: through the start
    (0, 2 ** 63 - 1, -1, [0]),
    (3, 3, -1, []),
    (-100, 100, 2, [0, 2, 4]),
])
def test_slice_negative_steps_clamp(start, end, step, expected):
    x = np.arange(6, dtype=np.float32)
    (y,) = run("Slice", [x, np.array([start]), np.array([end]), np.array([0]), np.array([step])], opset=13)
    np.testing.assert_array_equal(y, np.array(expected, np.float32))


def test_scatter_elements_reductions_apply_duplicates():
    data = np.ones((2, 3), np.float32)
    idx = np.array([[0, 0, -1]])
    upd = np.array([[2, 3, 4]], np.float32)
    (add,) = run("ScatterElements", [data, idx, upd], {"axis": 1, "reduction": "add"})
    np.testing.assert_array_equal(add, [[6, 1, 5], [1, 1, 1]])
    (mul,) = run("ScatterElements", [data, idx, upd], {"axis": 1, "reduction": "mul"})
    np.testing.assert_array_equal(mul, [[6, 1, 4], [1, 1, 1]])
    assert np.all(data == 1), "the input was written to"


def test_pad_negative_pads_crop_and_modes():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    (y,) = run("Pad", [x, np.array([0, -1, 1, 1]), np.array(9, np.float32)], {"mode": "constant"})
    np.testing.assert_array_equal(y, [[2, 3, 9], [5, 6, 9], [9, 9, 9]])
    (y,) = run("Pad", [x, np.array([0, 2, 0, 1])], {"mode": "reflect"})
    np.testing.assert_array_equal(y, [[3, 2, 1, 2, 3, 2], [6, 5, 4, 5, 6, 5]])
    (y,) = run("Pad", [x, np.array([0, 1, 0, 2])], {"mode": "wrap"})
    np.testing.assert_array_equal(y, [[3, 1, 2, 3, 1, 2], [6, 4, 5, 6, 4, 5]])


def test_split_uneven_num_outputs():
    parts = run("Split", [np.arange(7)], {"num_outputs": 3}, opset=18, n_out=3)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]


def test_topk_ties_take_the_lower_index():
    vals, idx = run("TopK", [np.array([1, 3, 2, 3, 3], np.float32), np.array([2])], {"axis": 0}, n_out=2)
    assert vals.tolist() == [3, 3] and idx.tolist() == [1, 3]


def test_range_and_constant_of_shape():
    (r,) = run("Range", [np.array(10), np.array(1), np.array(-4)])
    assert r.tolist() == [10, 6, 2] and r.dtype == np.int64
    (c,) = run("ConstantOfShape", [np.array([2, 1])], {"value": np.array([3], np.int32)})
    assert c.tolist() == [[3], [3]] and c.dtype == np.int32


# ---- math ----------------------------------------------------------------------

def test_integer_div_truncates_and_mod_follows_the_divisor():
    a, b = np.array([-7, 7, -7, 7], np.int32), np.array([2, -2, -2, 2], np.int32)
    assert run("Div", [a, b])[0].tolist() == [-3, -3, 3, 3]
    assert run("Mod", [a, b])[0].tolist() == [1, -1, -1, 1]
    assert run("Mod", [a, b], {"fmod": 1})[0].tolist() == [-1, 1, -1, 1]


def test_bitshift_right_by_the_width_keeps_the_sign():
    (y,) = run("BitShift", [np.array([-8, 4], np.int8), np.array([8, 9], np.int8)], {"direction": "RIGHT"})
    assert y.tolist() == [-1, 0]


def test_reductions_with_noop_and_empty_sets():
    x = np.array([[1, -2], [3, -4]], np.float32)
    (y,) = run("ReduceL1", [x, np.array([1])], {"keepdims": 0}, opset=18)
    assert y.tolist() == [3, 7]
    (y,) = run("ReduceSumSquare", [x, np.zeros(0, np.int64)], {"noop_with_empty_axes": 1}, opset=18)
    np.testing.assert_array_equal(y, x * x)
    (y,) = run("ReduceMax", [np.zeros((0, 2), np.float32), np.array([0])], opset=18)
    assert y.tolist() == [[-math.inf, -math.inf]]
    (y,) = run("ArgMax", [np.array([[1, 5, 5]], np.float32)], {"axis": 1, "select_last_index": 1})
    assert y.tolist() == [[2]]


# ---- activations ----------------------------------------------------------------

def test_softmax_before_13_normalizes_the_flattened_tail():
    x = np.log(np.array([[[1, 2], [3, 4]]], np.float32))  # [1, 2, 2]
    (old,) = run("Softmax", [x], {"axis": 1}, opset=11)
    np.testing.assert_allclose(old, [[[0.1, 0.2], [0.3, 0.4]]], rtol=1e-6)
    (new,) = run("Softmax", [x], {"axis": 1}, opset=13)
    np.testing.assert_allclose(new, [[[0.25, 1 / 3], [0.75, 2 / 3]]], rtol=1e-6)
    (hard,) = run("Hardmax", [x], {"axis": 1}, opset=11)
    assert hard.tolist() == [[[0, 0], [0, 1]]]


def test_gelu_and_erf_values():
    x = np.array([-1.0, 0.0, 1.0], np.float32)
    (y,) = run("Gelu", [x], opset=20)
    expected = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)
    (e,) = run("Erf", [np.array([0.5, 2.0], np.float32)])
    np.testing.assert_allclose(e, [math.erf(0.5), math.erf(2.0)], rtol=1e-6)


# ---- normalization --------------------------------------------------------------

def test_layer_norm_returns_mean_and_inverse_std():
    x = np.array([[1, 2, 3, 6]], np.float32)
    y, mean, inv = run("LayerNormalization", [x, np.ones(4, np.float32), np.zeros(4, np.float32)],
                       {"epsilon": 0.0}, opset=17, n_out=3)
    std = math.sqrt(np.mean((x - 3) ** 2))  # mean 3, variance 3.5
    np.testing.assert_allclose(mean, [[3]])
    np.testing.assert_allclose(inv, [[1 / std]], rtol=1e-6)
    np.testing.assert_allclose(y, (x - 3) / std, rtol=1e-6)


# ---- resize -----------------------------------------------------------------------

def _resize(x, mode, ctm, scales=None, sizes=None, **extra):
    ins = [np.asarray(x, np.float32), None, None if scales is None else np.array(scales, np.float32),
           None if sizes is None else np.array(sizes, np.int64)]
    return run("Resize", ins, {"mode": mode, "coordinate_transformation_mode": ctm, **extra}, opset=19)[0]


def test_resize_linear_modes():
    x = [[0, 10]]
    # half_pixel: output 0..3 map to -0.25, 0.25, 0.75, 1.25 (clamped at the edges)
    np.testing.assert_allclose(_resize(x, "linear", "half_pixel", [1, 2]), [[0, 2.5, 7.5, 10]])
    np.testing.assert_allclose(_resize(x, "linear", "align_corners", sizes=[1, 3]), [[0, 5, 10]])
    np.testing.assert_allclose(_resize(x, "linear", "asymmetric", [1, 2]), [[0, 5, 10, 10]])
    # pytorch_half_pixel maps a length-1 output to coordinate 0
    np.testing.assert_allclose(_resize(x, "linear", "pytorch_half_pixel", sizes=[1, 1]), [[0]])


def test_resize_nearest_modes():
    x = [[1, 2, 3, 4]]
    # downscale by 2, half_pixel: coordinates 0.5 and 2.5
    assert _resize(x, "nearest", "half_pixel", [1, 0.5], nearest_mode="round_prefer_floor").tolist() == [[1, 3]]
    assert _resize(x, "nearest", "half_pixel", [1, 0.5], nearest_mode="round_prefer_ceil").tolist() == [[2, 4]]
    assert _resize(x, "nearest", "asymmetric", [1, 1.5], nearest_mode="floor").tolist() == [[1, 1, 2, 3, 3, 4]]
    assert _resize(x, "nearest", "align_corners", sizes=[1, 2], nearest_mode="ceil").tolist() == [[1, 4]]


def test_resize_tf_crop_and_resize_extrapolates():
    x = [[0, 10, 20]]
    y = _resize(x, "linear", "tf_crop_and_resize", sizes=[1, 3], extrapolation_value=-1.0)
    np.testing.assert_allclose(y, [[0, 10, 20]])
    ins = [np.array(x, np.float32), np.array([0, 0.5, 1, 1.5], np.float32), None, np.array([1, 3])]
    (y,) = run("Resize", ins, {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                               "extrapolation_value": -1.0}, opset=19)
    np.testing.assert_allclose(y, [[10, 20, -1]])  # roi 0.5..1.5 of [0, 2]: 1, 2, 3 (outside)


# ---- recurrent ------------------------------------------------------------------

def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_lstm_one_step_matches_the_equations():
    rng = np.random.default_rng(3)
    hs, inp, batch = 2, 3, 2
    x = rng.standard_normal((1, batch, inp)).astype(np.float32)
    w = rng.standard_normal((1, 4 * hs, inp)).astype(np.float32)
    r = rng.standard_normal((1, 4 * hs, hs)).astype(np.float32)
    b = rng.standard_normal((1, 8 * hs)).astype(np.float32)
    h0 = rng.standard_normal((1, batch, hs)).astype(np.float32)
    c0 = rng.standard_normal((1, batch, hs)).astype(np.float32)
    p = rng.standard_normal((1, 3 * hs)).astype(np.float32)
    y, yh, yc = run("LSTM", [x, w, r, b, None, h0, c0, p], {"hidden_size": hs}, opset=14, n_out=3)
    # hand-rolled step, gates in ONNX's i, o, f, c order; peepholes i, o, f
    g = x[0] @ w[0].T + h0[0] @ r[0].T + b[0, :4 * hs] + b[0, 4 * hs:]
    gi, go, gf, gc = (g[:, k * hs:(k + 1) * hs] for k in range(4))
    pi, po, pf = (p[0, k * hs:(k + 1) * hs] for k in range(3))
    i = _sigmoid(gi + pi * c0[0])
    f = _sigmoid(gf + pf * c0[0])
    c = f * c0[0] + i * np.tanh(gc)
    o = _sigmoid(go + po * c)
    h = o * np.tanh(c)
    np.testing.assert_allclose(yc[0], c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(yh[0], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[0, 0], h, rtol=1e-5, atol=1e-6)


def test_gru_sequence_lens_hold_the_state_and_zero_the_output():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 2)).astype(np.float32)
    w = rng.standard_normal((1, 6, 2)).astype(np.float32)
    r = rng.standard_normal((1, 6, 2)).astype(np.float32)
    y, yh = run("GRU", [x, w, r, None, np.array([1, 3], np.int32)], {"hidden_size": 2}, opset=14, n_out=2)
    assert np.all(y[1:, 0, 0] == 0), "steps past a sequence's length must be zero"
    np.testing.assert_allclose(yh[0, 0], y[0, 0, 0])  # batch 0 stopped after one step
    np.testing.assert_allclose(yh[0, 1], y[2, 0, 1])


def test_rnn_layout_1_is_layout_0_transposed():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)  # seq, batch, input
    w, r = rng.standard_normal((2, 3, 2)).astype(np.float32), rng.standard_normal((2, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 3)).astype(np.float32)
    attrs = {"hidden_size": 3, "direction": "bidirectional"}
    y0, h_0 = run("RNN", [x, w, r, None, None, h0], attrs, opset=14, n_out=2)
    y1, h_1 = run("RNN", [x.transpose(1, 0, 2), w, r, None, None, h0.transpose(1, 0, 2)],
                  {**attrs, "layout": 1}, opset=14, n_out=2)
    np.testing.assert_allclose(y1, y0.transpose(2, 0, 1, 3), rtol=1e-6)
    np.testing.assert_allclose(h_1, h_0.transpose(1, 0, 2), rtol=1e-6)


# ---- quantization ----------------------------------------------------------------

def test_quantize_int4_rounds_half_to_even_and_saturates():
    import ml_dtypes

    zp = np.zeros(1, ml_dtypes.int4).reshape(())
    (q,) = run("QuantizeLinear", [np.array([0.5, 1.5, -2.5, 20, -20], np.float32), np.array(1.0, np.float32), zp])
    assert q.dtype == np.dtype(ml_dtypes.int4)
    assert q.astype(np.int8).tolist() == [0, 2, -2, 7, -8]


def test_dequantize_blocked_repeats_scales_along_the_axis():
    x = np.array([[1, 2, 3, 4]], np.int8)
    (y,) = run("DequantizeLinear", [x, np.array([[0.5, 2.0]], np.float32), np.array([[1, 0]], np.int8)],
               {"axis": 1, "block_size": 2})
    np.testing.assert_allclose(y, [[0, 0.5, 6, 8]])


def test_dynamic_quantize_linear():
    y, scale, zp = run("DynamicQuantizeLinear", [np.array([-1.0, 0.0, 2.0], np.float32)], opset=11, n_out=3)
    assert scale == np.float32(3 / 255) and zp == 85
    assert y.tolist() == [0, 85, 255]


# ---- casts ---------------------------------------------------------------------------

def test_cast_strings_both_ways():
    (f,) = run("Cast", [np.array(["1.5", "-INF", "nan", "1e3"], object)], {"to": TensorProto.FLOAT})
    assert f[0] == 1.5 and f[1] == -np.inf and np.isnan(f[2]) and f[3] == 1000
    (s,) = run("Cast", [np.array([0.1, np.inf], np.float32)], {"to": TensorProto.STRING})
    assert s.tolist() == ["0.1", "INF"]


# ---- sequences and optionals (the interpreter's representation: lists and None) ----

def test_sequence_kernels():
    a, b = np.zeros(2, np.float32), np.ones(3, np.float32)
    (seq,) = run("SequenceConstruct", [a, b])
    assert isinstance(seq, list) and len(seq) == 2
    (ins,) = run("SequenceInsert", [seq, np.full(1, 7, np.float32), np.array(-1)])
    assert [len(t) for t in ins] == [2, 1, 3] and len(seq) == 2, "SequenceInsert changed its input"
    (appended,) = run("SequenceInsert", [seq, np.full(1, 7, np.float32)])
    assert [len(t) for t in appended] == [2, 3, 1]
    (erased,) = run("SequenceErase", [ins, np.array(0)])
    assert [len(t) for t in erased] == [1, 3]
    (last_gone,) = run("SequenceErase", [ins])
    assert [len(t) for t in last_gone] == [2, 1]
    assert run("SequenceAt", [ins, np.array(-1)])[0] is b
    assert run("SequenceLength", [ins])[0] == 3
    assert run("SequenceEmpty", [], {"dtype": TensorProto.FLOAT})[0] == []
    with pytest.raises(ValueError, match="out of range"):
        run("SequenceAt", [seq, np.array(2)])


def test_split_to_sequence_and_concat_from_sequence():
    x = np.arange(10).reshape(5, 2)
    (parts,) = run("SplitToSequence", [x, np.array(2)])
    assert [p.shape for p in parts] == [(2, 2), (2, 2), (1, 2)]
    (ones,) = run("SplitToSequence", [x], {"axis": 1, "keepdims": 0})
    assert [p.tolist() for p in ones] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    (back,) = run("ConcatFromSequence", [parts], {"axis": 0})
    np.testing.assert_array_equal(back, x)
    (stacked,) = run("ConcatFromSequence", [ones], {"axis": -1, "new_axis": 1})
    np.testing.assert_array_equal(stacked, x)


def test_optional_kernels():
    v = np.array([1.0])
    assert run("Optional", [v])[0] is v
    assert run("Optional", [])[0] is None
    assert run("OptionalHasElement", [None])[0].item() is False
    assert run("OptionalHasElement", [[v]])[0].item() is True  # an optional sequence
    assert run("OptionalGetElement", [v])[0] is v
    with pytest.raises(ValueError, match="empty"):
        run("OptionalGetElement", [None])


# ---- dispatch through the interpreter ---------------------------------------------------

def _model(nodes, inputs, outputs, opset=17, inits=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def test_interpreter_runs_foreign_ops_with_kernels_not_the_reference_evaluator():
    # the position_ids pattern of PyTorch exports: GatherElements over a [1, 16] buffer
    pos = helper.make_tensor("pos", TensorProto.INT64, [1, 16], list(range(100, 116)))
    m = _model([helper.make_node("GatherElements", ["pos", "idx"], ["y"], axis=1)],
               [helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 4])],
               [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])], inits=[pos])
    prog = import_onnx(m)
    assert any(op.op_type == "onnx.GatherElements" for op in prog.functions["main"].ops)
    foreign._BUILT.clear()
    out = evaluate(prog, {"idx": np.array([[3, -1, 0, 15]])})
    assert list(out.values())[0].tolist() == [[103, 115, 100, 115]]
    assert not foreign._BUILT, "a reference evaluator was built for an op that has a kernel"


def test_kernel_errors_name_the_op():
    m = _model([helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=0)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
                helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(EvaluationError, match=r"onnx\.GatherElements.*out of range"):
        evaluate(import_onnx(m), {"x": np.zeros((2, 2), np.float32), "idx": np.array([[0, 5]])})


def test_unsupported_cases_fall_back_to_the_reference_evaluator():
    # (at opset 13: at 11 the reference evaluator ignores Hardmax's flatten-to-2-D rule,
    # which onnxruntime and our kernel apply)
    m = _model([helper.make_node("Hardmax", ["x"], ["y"], axis=1)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2])], opset=13)
    op = next(o for o in import_onnx(m).functions["main"].ops if o.op_type == "onnx.Hardmax")
    x = np.array([[[1, 5], [3, 2]]], np.float32)
    out_types = [v.type for v in op.outputs]

    def declines(ins, attrs, node):
        raise Unsupported("for the test")

    via_reference = foreign.compute_with(op, {"in0": x}, out_types, lambda t, d: declines)
    via_kernel = foreign.compute(op, {"in0": x}, out_types)
    np.testing.assert_array_equal(via_reference[0], [[[0, 1], [1, 0]]])
    np.testing.assert_array_equal(via_kernel[0], via_reference[0])
