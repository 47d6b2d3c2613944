"""ir.oracle: the naive reference of the quantization / decoder ops, and its evaluator."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ir.ops.registry as op_registry
from ir import oracle
from ir.builder import TensorSpec, program

F32, F16 = np.float32, np.float16


def test_round_half_even_by_hand():
    y = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001, 3.0, np.inf, -np.inf])
    np.testing.assert_array_equal(oracle.round_half_even(y), [0, 2, 2, 0, -2, -2, 2, 3, 3, np.inf, -np.inf])


def test_quantize_by_hand():
    x = np.array([0.25, 0.75, -1.0, 100.0, -100.0], F32)
    # x / 0.5 = 0.5, 1.5, -2, 200, -200 -> half-even 0, 2, -2 -> + 3 -> 3, 5, 1, clip 127, clip -128
    np.testing.assert_array_equal(oracle.quantize(x, F32(0.5), np.int8(3), None, "int8"), [3, 5, 1, 127, -128])
    np.testing.assert_array_equal(oracle.quantize(x, F32(0.5), np.uint8(3), None, "uint8"), [3, 5, 1, 203, 0])
    per_axis = oracle.quantize(np.ones((2, 2), F32), np.array([0.5, 0.25], F32), np.array([0, 1], np.int8), 1, "int8")
    np.testing.assert_array_equal(per_axis, [[2, 5], [2, 5]])


def test_dequantize_and_shift_scale_by_hand():
    q = np.array([[1, 2], [3, 4]], np.int8)
    got = oracle.dequantize(q, np.array([2.0, 0.5], F32), np.array([1, -1], np.int8), 0)
    np.testing.assert_array_equal(got, [[0.0, 2.0], [2.0, 2.5]])
    assert got.dtype == F32
    data = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int8)
    # blocks of two columns: scale [[1, 10]], offset [[0, 1]]; rows share them
    got = oracle.shift_scale(data, np.array([[1.0, 10.0]], F16), np.array([[0, 1]], np.int8))
    np.testing.assert_array_equal(got, [[1, 2, 20, 30], [5, 6, 60, 70]])
    assert got.dtype == F16


def test_lut_lookup_by_hand_blocks_and_vectors():
    idx = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], np.uint8)
    lut = np.array([[[[10.0], [11.0]]], [[[20.0], [21.0]]]], F32)  # 2 row blocks, 1 column block, 2 entries
    np.testing.assert_array_equal(oracle.lut_lookup(idx, lut), [[10, 11], [11, 10], [21, 21], [20, 20]])
    vec = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], F32)  # one LUT of 2 entries, vectors of 2
    np.testing.assert_array_equal(oracle.lut_lookup(np.array([[0, 1]], np.uint8), vec, 1), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(oracle.lut_lookup(np.array([[0], [1]], np.uint8), vec, 0), [[1], [2], [3], [4]])


def test_scatter_and_sparse_ops_by_hand():
    mask = np.array([[1, 0, 1], [0, 0, 1]], np.uint8)
    np.testing.assert_array_equal(oracle.scatter(np.array([5, 6, 7], F32), mask), [[5, 0, 6], [0, 0, 7]])
    out = oracle.KERNELS["constexpr_lut_to_sparse"](
        {"indices_mask": np.array([[1, 0]], np.uint8), "indices_nonzero_data": np.array([1], np.uint8),
         "lut": np.array([[[[1.0, 2.0], [3.0, 4.0]]]], F32), "vector_axis": np.int32(1)}, None)
    np.testing.assert_array_equal(out[0], [[1, 1, 0, 0]])  # the mask widened along the vector axis
    np.testing.assert_array_equal(out[1], [3, 4])


def _quant_program(dtype="int8", per_axis=False):
    scale = np.array([0.05, 0.1, 0.02], F32) if per_axis else F32(0.05)
    zp_t = np.int8 if dtype == "int8" else np.uint8
    zp = (np.array([1, -2, 0], np.int8) if dtype == "int8" else np.array([128, 120, 3], np.uint8)) if per_axis \
        else zp_t(3)
    kw = {"axis": 1} if per_axis else {}

    @program(inputs={"x": TensorSpec((4, 3), "fp32")})
    def net(b, x):
        q = b.quantize(input=x, scale=scale, zero_point=zp, output_dtype=dtype, name="q", **kw)
        return q, b.dequantize(input=q, scale=scale, zero_point=zp, name="dq", **kw)
    return net, scale, zp


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("per_axis", [False, True])
def test_oracle_matches_onnxruntime_quantize_and_dequantize_linear(dtype, per_axis):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    net, scale, zp = _quant_program(dtype, per_axis)
    axis = [helper.make_attribute("axis", 1)] if per_axis else []
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
    for n in nodes:
        n.attribute.extend(axis)
    qtype = TensorProto.INT8 if dtype == "int8" else TensorProto.UINT8
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
                              [helper.make_tensor_value_info("q", qtype, [4, 3]),
                               helper.make_tensor_value_info("dq", TensorProto.FLOAT, [4, 3])],
                              [numpy_helper.from_array(np.asarray(scale), "s"), numpy_helper.from_array(np.asarray(zp), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for x in [rng.standard_normal((4, 3)).astype(F32) * 8,
              (np.arange(12, dtype=F32).reshape(4, 3) - 6) * F32(0.025),  # exact .5 ties on the 0.05 grid
              np.full((4, 3), 1e4, F32)]:
        q_ort, dq_ort = sess.run(None, {"x": x})
        run = oracle.evaluate(net, {"x": x})
        np.testing.assert_array_equal(run.outputs["q"], q_ort)
        np.testing.assert_array_equal(run.outputs["dq"], dq_ort)
        assert run.disagreements == []


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31), st.sampled_from(["int8", "uint8"]), st.booleans())
def test_oracle_and_production_kernels_agree(seed, dtype, per_axis):
    net, _, _ = _quant_program(dtype, per_axis)
    x = np.random.default_rng(seed).standard_normal((4, 3)).astype(F32) * 10
    run = oracle.evaluate(net, {"x": x})
    assert run.disagreements == []


def test_a_kernel_bug_is_reported_naming_the_op(monkeypatch):
    good = op_registry.REGISTRY["quantize"]

    def minus_zero_point(v, ctx):
        q = np.round(v["input"] / v["scale"]) - np.asarray(v["zero_point"], F32)
        dt = ctx.out_types[0].dt
        return [np.clip(q, dt.min, dt.max).astype(dt.storage)]

    monkeypatch.setitem(op_registry.REGISTRY, "quantize", dataclasses.replace(good, compute=minus_zero_point))
    net, _, _ = _quant_program()
    run = oracle.evaluate(net, {"x": np.ones((4, 3), F32)})
    assert [(d.op_type, d.op_name, d.output) for d in run.disagreements] == [("quantize", "q", "q")]
    assert "disagrees with the oracle" in str(run.disagreements[0])
    # the oracle's value is what flows on: 1 / 0.05 = 20, + 3
    assert np.all(run.outputs["q"] == 23)


def test_pin_holds_a_value_and_consts_are_computed_once():
    net, _, _ = _quant_program()
    run = oracle.evaluate(net, {"x": np.ones((4, 3), F32)}, pin={"q": np.zeros((4, 3), np.int8)})
    np.testing.assert_array_equal(run.outputs["dq"], np.full((4, 3), -0.15, F32))
    consts = oracle.const_values(net)
    # only what consts alone determine: the parameters, not q (it needs the input)
    assert set(consts.values) == {op.outputs[0].name for op in net.main.ops if op.op_type == "const"}


def test_a_pin_reaches_the_ops_derived_from_a_weight_after_an_unpinned_run_filled_the_cache():
    # the lossy contract decodes every weight first (const_values) and then evaluates the
    # program with the decoded weights pinned, sharing one cache: an op computed from the
    # weight alone (a transpose, as LSTM / conv weights get inside control flow) must see
    # the pinned value, not the result cached from the original
    w = np.arange(6, dtype=F32).reshape(2, 3)

    @program(inputs={"x": TensorSpec((1, 3), "fp32")})
    def net(b, x):
        t = b.transpose(x=b.const(w, name="w"), perm=[1, 0], name="wt")
        return b.matmul(x=x, y=t, name="y")

    cache: dict = {}
    oracle.const_values(net, cache=cache)
    x = np.array([[1.0, 2.0, 3.0]], F32)
    plain = oracle.evaluate(net, {"x": x}, cache=cache)
    np.testing.assert_array_equal(plain.outputs["y"], x @ w.T)  # [[8, 26]]
    pinned = oracle.evaluate(net, {"x": x}, pin={"w": -w}, cache=cache)
    np.testing.assert_array_equal(pinned.outputs["y"], x @ -w.T)
    # and the pinned run left nothing behind: the unpinned one still sees the original
    np.testing.assert_array_equal(oracle.evaluate(net, {"x": x}, cache=cache).outputs["y"], x @ w.T)
