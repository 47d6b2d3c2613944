"""Our ONNX kernels against onnxruntime, the arbiter: each case is a one-node model
run by onnxruntime and by the kernel the interpreter would call (attributes
converted exactly as the importer converts them). The cases aim at what onnx's
own node tests leave thin: negative indices, clamping, padding and rounding
modes, opset-dependent rules, every RNN direction, blocked / 4-bit quantization.
A few ops also get hypothesis-generated shapes and values."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, shape_inference  # noqa: E402

from ir.formats.onnx.common import attr_to_ir  # noqa: E402
from ir.formats.onnx.kernels import Node, kernel_for  # noqa: E402

ort.set_default_logger_severity(3)


def _elem(arr) -> int:
    if isinstance(arr, np.ndarray) and arr.dtype == object:
        return TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype)


def one_node(op, inputs, attrs, n_out=1, opset=21, domain="", domain_opset=3, out_type=None):
    names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, domain=domain, **attrs)
    vi = [helper.make_tensor_value_info(nm, _elem(x), np.shape(x)) for nm, x in zip(names, inputs) if nm]
    graph = helper.make_graph([node], "k", vi, [helper.make_tensor_value_info(o, 0, None) for o in outs])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, domain_opset)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10
    inferred = shape_inference.infer_shapes(model)
    types = {o.name: o.type for o in inferred.graph.output}
    del model.graph.output[:]
    for o in outs:
        t = types.get(o) if out_type is None else out_type
        if t is None or (t.WhichOneof("value") == "tensor_type" and not t.tensor_type.elem_type):
            model.graph.output.append(helper.make_tensor_value_info(o, _elem(inputs[0]), None))
        else:
            out = helper.make_empty_tensor_value_info(o)
            out.type.CopyFrom(t)
            model.graph.output.append(out)
    return model, node


def run_ort(model, inputs):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {f"i{k}": x for k, x in enumerate(inputs) if x is not None}
    return sess.run(None, feeds)


def run_ours(node, inputs, opset=21):
    attrs = {a.name: attr_to_ir(a) for a in node.attribute}
    kernel = kernel_for(node.op_type, node.domain)
    assert kernel is not None, f"no kernel for {node.op_type}"
    return kernel(list(inputs), attrs, Node(node.op_type, opset, len(node.output)))


def check(op, inputs, attrs=None, n_out=1, opset=21, rtol=1e-5, atol=1e-6, domain="", out_type=None):
    model, node = one_node(op, inputs, attrs or {}, n_out, opset, domain, out_type=out_type)
    expected = run_ort(model, inputs)
    got = run_ours(node, inputs, opset if not domain else 3)
    for k, (e, g) in enumerate(zip(expected, got)):
        if isinstance(e, list):  # ZipMap: a list of dicts
            assert len(g) == len(e) and all(a.keys() == b.keys() for a, b in zip(g, e))
            for a, b in zip(g, e):
                np.testing.assert_allclose([a[k] for k in b], [b[k] for k in b], rtol=rtol, atol=atol)
            continue
        g = np.asarray(g)
        assert g.shape == e.shape, f"{op} output {k}: shape {g.shape}, onnxruntime {e.shape}"
        assert g.dtype == e.dtype, f"{op} output {k}: dtype {g.dtype}, onnxruntime {e.dtype}"
        if e.dtype == object:
            assert g.tolist() == e.tolist(), f"{op} output {k}: {g.tolist()} != {e.tolist()}"
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{op} output {k}")


R = np.random.default_rng(0)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def i64(*v):
    return np.array(v, np.int64)


def grid(n, h, w, spread):
    """A GridSample grid [n, h, w, 2] of (x, y) in [-spread, spread] (past the input when > 1)."""
    return R.uniform(-spread, spread, (n, h, w, 2)).astype(np.float32)


# (id, op, inputs, attrs, n_out, opset)
CASES = [
    # ---- indexing ----
    ("gather_neg", "Gather", [f32(4, 3), i64(-1, 0, -4)], {"axis": 0}, 1, 13),
    ("gather_axis1_2d", "Gather", [f32(2, 5, 3), np.array([[0, -1], [2, 4]])], {"axis": 1}, 1, 13),
    ("gather_scalar", "Gather", [f32(4, 3), np.array(-2)], {"axis": 1}, 1, 13),
    ("gather_elements_neg", "GatherElements", [f32(3, 4), np.array([[-1, 0], [2, -3], [1, 1]])], {"axis": 1}, 1, 13),
    # indices smaller than data in a non-axis dim (the PyTorch BERT case)
    ("gather_elements_small", "GatherElements", [f32(1, 512), np.arange(32).reshape(1, 32)], {"axis": 1}, 1, 13),
    ("gather_elements_axis0", "GatherElements", [f32(4, 5, 2), np.array([[[3], [-1]], [[0], [2]]])], {"axis": 0}, 1,
     13),
    ("gather_nd", "GatherND", [f32(3, 4, 2), np.array([[0, -1], [2, 1]])], {}, 1, 13),
    ("gather_nd_batch", "GatherND", [f32(2, 3, 4), np.array([[[1], [2]], [[0], [-1]]])], {"batch_dims": 1}, 1, 13),
    ("scatter_elements_add", "ScatterElements", [f32(3, 3), np.array([[1, 1], [0, -1]]), f32(2, 2)],
     {"axis": 1, "reduction": "add"}, 1, 18),
    ("scatter_elements_max", "ScatterElements", [f32(3, 3), np.array([[1, 1, 0]]), f32(1, 3)],
     {"axis": 0, "reduction": "max"}, 1, 18),
    ("scatter_elements_none", "ScatterElements", [f32(3, 4), np.array([[0, -1], [2, 3]]), f32(2, 2)],
     {"axis": -1}, 1, 18),
    ("scatter_nd", "ScatterND", [f32(4, 3), np.array([[1], [-1]]), f32(2, 3)], {}, 1, 18),
    ("scatter_nd_mul", "ScatterND", [f32(4, 3), np.array([[1, 0], [1, 0]]), f32(2)], {"reduction": "mul"}, 1, 18),
    ("expand", "Expand", [f32(3, 1), i64(2, 1, 4)], {}, 1, 13),
    ("expand_smaller_shape", "Expand", [f32(2, 3), i64(3)], {}, 1, 13),
    ("where", "Where", [R.random((2, 1, 3)) > 0.5, f32(4, 3), f32(1, 3)], {}, 1, 16),
    ("range_int", "Range", [np.array(10, np.int64), np.array(-3, np.int64), np.array(-4, np.int64)], {}, 1, 11),
    ("range_float", "Range", [np.array(0.5, np.float32), np.array(3.0, np.float32), np.array(0.3, np.float32)], {},
     1, 11),
    ("range_empty", "Range", [np.array(5, np.int32), np.array(1, np.int32), np.array(2, np.int32)], {}, 1, 11),
    ("constant_of_shape", "ConstantOfShape", [i64(2, 3)],
     {"value": helper.make_tensor("v", TensorProto.INT64, [1], [7])}, 1, 20),
    ("constant_of_shape_default", "ConstantOfShape", [i64(0, 2)], {}, 1, 20),
    ("nonzero", "NonZero", [np.array([[1, 0, 3], [0, 0, 2]], np.float32)], {}, 1, 13),
    ("topk_ties", "TopK", [np.array([[3, 1, 3, 2, 3]], np.float32), i64(3)], {"axis": 1}, 2, 11),
    ("topk_smallest", "TopK", [np.array([[3, 1, 3, 1, 3], [0, 0, 0, 0, 0]], np.float32), i64(2)],
     {"axis": -1, "largest": 0}, 2, 11),
    ("onehot", "OneHot", [np.array([[1, -1], [0, 5]], np.int64), np.array(4, np.int64), np.array([0, 9], np.float32)],
     {"axis": 1}, 1, 11),
    ("tile", "Tile", [f32(2, 3), i64(2, 1)], {}, 1, 13),
    ("slice_neg_step", "Slice", [f32(5, 6), i64(-1, 10), i64(-100, 0), i64(0, 1), i64(-1, -2)], {}, 1, 13),
    ("slice_neg_step_clamp", "Slice", [f32(6), i64(100), i64(-100), i64(0), i64(-3)], {}, 1, 13),
    ("slice_int_max", "Slice", [f32(4, 5), i64(1), i64(2 ** 63 - 1), i64(-1)], {}, 1, 13),
    ("slice_neg_axes", "Slice", [f32(3, 4, 5), i64(1, -4), i64(3, -1), i64(-1, 0), i64(1, 2)], {}, 1, 13),
    ("slice_opset9", "Slice", [f32(3, 4)], {"starts": [1], "ends": [1000], "axes": [1]}, 1, 9),
    ("pad_reflect", "Pad", [f32(3, 4), i64(1, 2, 1, 2)], {"mode": "reflect"}, 1, 19),
    ("pad_edge", "Pad", [f32(3, 4), i64(0, 2, 2, 0)], {"mode": "edge"}, 1, 19),
    ("pad_wrap", "Pad", [f32(3, 4), i64(1, 1, 2, 3)], {"mode": "wrap"}, 1, 19),
    ("pad_negative", "Pad", [f32(4, 5), i64(-1, 2, 1, -2), np.array(1.5, np.float32)], {}, 1, 19),
    ("pad_axes", "Pad", [f32(2, 3, 4), i64(1, 2), None, i64(-1)], {}, 1, 19),
    ("split_uneven", "Split", [f32(7, 2)], {"axis": 0, "num_outputs": 3}, 3, 18),
    ("split_sizes", "Split", [f32(2, 6), i64(1, 5)], {"axis": 1}, 2, 13),
    ("split_equal", "Split", [f32(6, 2)], {}, 3, 13),
    ("trilu_lower", "Trilu", [f32(2, 3, 4), np.array(-1, np.int64)], {"upper": 0}, 1, 14),
    ("compress", "Compress", [f32(3, 4), np.array([True, False, True])], {"axis": 0}, 1, 11),
    ("reverse_sequence", "ReverseSequence", [f32(4, 3, 2), i64(4, 2, 1)], {"batch_axis": 1, "time_axis": 0}, 1, 10),
    ("unique_unsorted", "Unique", [np.array([2, 1, 1, 3, 4, 3], np.float32)], {"sorted": 0}, 4, 11),
    # ---- math ----
    ("div_int_trunc", "Div", [np.array([-7, 7, -7, 7, 0], np.int32), np.array([2, -2, -2, 2, 3], np.int32)], {}, 1, 14),
    ("mod_int", "Mod", [np.array([-7, 7, -7, 7], np.int64), np.array([3, -3, -3, 3], np.int64)], {}, 1, 13),
    ("mod_fmod", "Mod", [np.array([-7.5, 7.5, -7, 7], np.float32), np.array([3, -3, -3, 3], np.float32)],
     {"fmod": 1}, 1, 13),
    ("pow_int", "Pow", [np.array([2, -3, 4], np.int32), np.array([3, 2, 0], np.int32)], {}, 1, 15),
    ("pow_float_int", "Pow", [f32(3), np.array([2, 3, 1], np.int64)], {}, 1, 15),
    ("bitshift", "BitShift", [np.array([1, 255, 16], np.uint8), np.array([3, 1, 4], np.uint8)],
     {"direction": "RIGHT"}, 1, 11),
    ("max_variadic", "Max", [f32(2, 3), f32(3), f32(1, 1)], {}, 1, 13),
    ("mean_variadic", "Mean", [f32(2, 3), f32(3)], {}, 1, 13),
    ("clip_int", "Clip", [np.array([-5, 0, 5, 10], np.int32), np.array(-1, np.int32), np.array(6, np.int32)], {}, 1,
     13),
    ("round", "Round", [np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4], np.float32)], {}, 1, 11),
    ("erf", "Erf", [f32(50) * 2], {}, 1, 13),
    ("sign", "Sign", [np.array([-2, 0, 3], np.int32)], {}, 1, 13),
    ("isinf_neg_only", "IsInf", [np.array([np.inf, -np.inf, 1, np.nan], np.float32)], {"detect_positive": 0}, 1, 10),
    ("equal_str", "Equal", [np.array(["a", "b"], object), np.array(["a", "c"], object)], {}, 1, 19),
    ("bitwise_and", "BitwiseAnd", [np.array([12, -3], np.int32), np.array([10, 7], np.int32)], {}, 1, 18),
    ("einsum_batch", "Einsum", [f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij,bjk->bik"}, 1, 12),
    ("einsum_trace", "Einsum", [f32(3, 3)], {"equation": "ii"}, 1, 12),
    ("einsum_outer", "Einsum", [f32(3), f32(4)], {"equation": "i,j->ij"}, 1, 12),
    ("matmul_int", "MatMul", [np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(6, dtype=np.int32).reshape(3, 2)],
     {}, 1, 13),
    ("gemm_trans", "Gemm", [f32(4, 3), f32(5, 4), f32(5)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, 1,
     13),
    # ---- reductions ----
    ("reduce_l1", "ReduceL1", [f32(2, 3, 4), i64(1)], {"keepdims": 0}, 1, 18),
    ("reduce_l2", "ReduceL2", [f32(2, 3, 4), i64(-1, 0)], {}, 1, 18),
    ("reduce_lse", "ReduceLogSumExp", [f32(2, 3, 4) * 30, i64(2)], {}, 1, 18),
    ("reduce_sumsq_all", "ReduceSumSquare", [f32(2, 3)], {"keepdims": 0}, 1, 18),
    ("reduce_sum_noop", "ReduceSum", [f32(2, 3), np.zeros(0, np.int64)], {"noop_with_empty_axes": 1}, 1, 13),
    ("reduce_mean_attr", "ReduceMean", [f32(2, 3, 4)], {"axes": [0, 2], "keepdims": 0}, 1, 13),
    ("reduce_max_int", "ReduceMax", [np.array([[1, 5], [7, -2]], np.int32), i64(1)], {}, 1, 18),
    ("reduce_prod", "ReduceProd", [f32(2, 3)], {"axes": [1]}, 1, 13),
    ("argmax_last", "ArgMax", [np.array([[1, 3, 3], [2, 2, 1]], np.float32)], {"axis": 1, "select_last_index": 1},
     1, 13),
    ("argmin_keep0", "ArgMin", [f32(3, 4)], {"axis": 0, "keepdims": 0}, 1, 13),
    ("cumsum_excl_rev", "CumSum", [f32(2, 4), np.array(1, np.int64)], {"exclusive": 1, "reverse": 1}, 1, 14),
    ("cumsum_int", "CumSum", [np.array([1, 2, 3, 4], np.int32), np.array(0, np.int32)], {}, 1, 14),
    # ---- activations ----
    ("softmax_11_flatten", "Softmax", [f32(2, 3, 4)], {"axis": 1}, 1, 11),
    ("softmax_11_default", "Softmax", [f32(2, 3, 4)], {}, 1, 11),
    ("softmax_13", "Softmax", [f32(2, 3, 4)], {"axis": 1}, 1, 13),
    ("logsoftmax_11", "LogSoftmax", [f32(2, 3, 4)], {"axis": 2}, 1, 11),
    ("hardmax_11", "Hardmax", [np.array([[[1, 3], [3, 0]]], np.float32)], {"axis": 1}, 1, 11),
    ("hardmax_13_ties", "Hardmax", [np.array([[1, 3, 3], [0, 0, 0]], np.float32)], {}, 1, 13),
    ("gelu_tanh", "Gelu", [f32(20) * 3], {"approximate": "tanh"}, 1, 20),
    ("gelu", "Gelu", [f32(20) * 3], {}, 1, 20),
    ("elu", "Elu", [f32(10)], {"alpha": 0.7}, 1, 6),
    ("selu", "Selu", [f32(10)], {}, 1, 6),
    ("celu", "Celu", [f32(10)], {"alpha": 2.0}, 1, 12),
    ("hard_sigmoid", "HardSigmoid", [f32(10) * 4], {"alpha": 0.3, "beta": 0.4}, 1, 6),
    ("hard_swish", "HardSwish", [f32(10) * 4], {}, 1, 14),
    ("softplus", "Softplus", [f32(10) * 20], {}, 1, 1),
    ("softsign", "Softsign", [f32(10)], {}, 1, 1),
    ("mish", "Mish", [f32(10) * 3], {}, 1, 18),
    ("shrink", "Shrink", [f32(10)], {"lambd": 0.3, "bias": 0.1}, 1, 9),
    ("thresholded_relu", "ThresholdedRelu", [f32(10)], {"alpha": 0.2}, 1, 10),
    ("prelu", "PRelu", [f32(2, 3, 4), f32(3, 1)], {}, 1, 16),
    ("leaky_relu", "LeakyRelu", [f32(10)], {"alpha": 0.2}, 1, 16),
    ("sigmoid_large", "Sigmoid", [np.array([-100, -20, 0, 20, 100], np.float32)], {}, 1, 13),
    # ---- shape ----
    ("shape_slice", "Shape", [f32(2, 3, 4, 5)], {"start": -3, "end": -1}, 1, 15),
    ("reshape_zero", "Reshape", [f32(2, 3, 4), i64(0, -1)], {}, 1, 14),
    ("reshape_allowzero", "Reshape", [np.zeros((0, 3), np.float32), i64(3, 0)], {"allowzero": 1}, 1, 14),
    ("flatten_neg", "Flatten", [f32(2, 3, 4, 5)], {"axis": -1}, 1, 13),
    ("flatten_0", "Flatten", [f32(2, 3)], {"axis": 0}, 1, 13),
    ("squeeze_13", "Squeeze", [f32(1, 3, 1), i64(-1)], {}, 1, 13),
    ("unsqueeze_13", "Unsqueeze", [f32(3, 4), i64(-1, 0)], {}, 1, 13),
    ("unsqueeze_11", "Unsqueeze", [f32(3, 4)], {"axes": [1]}, 1, 11),
    ("transpose", "Transpose", [f32(2, 3, 4)], {"perm": [2, 0, 1]}, 1, 13),
    ("depth_to_space_dcr", "DepthToSpace", [f32(1, 8, 2, 3)], {"blocksize": 2}, 1, 13),
    ("depth_to_space_crd", "DepthToSpace", [f32(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}, 1, 13),
    ("space_to_depth", "SpaceToDepth", [f32(1, 2, 4, 6)], {"blocksize": 2}, 1, 13),
    ("size", "Size", [f32(2, 3)], {}, 1, 13),
    # ---- cast ----
    ("cast_float_int_trunc", "Cast", [np.array([-1.7, 1.7, -0.5, 2.5], np.float32)], {"to": TensorProto.INT32}, 1, 19),
    ("cast_float_bool", "Cast", [np.array([0.0, -0.0, 0.1, np.nan], np.float32)], {"to": TensorProto.BOOL}, 1, 19),
    ("cast_int_uint8_wrap", "Cast", [np.array([300, -1, 255], np.int32)], {"to": TensorProto.UINT8}, 1, 19),
    ("cast_float_double", "Cast", [f32(4)], {"to": TensorProto.DOUBLE}, 1, 19),
    ("cast_str_float", "Cast", [np.array(["1.5", "-2", "1e3", "NaN", "-INF"], object)], {"to": TensorProto.FLOAT},
     1, 19),
    ("cast_str_int", "Cast", [np.array(["12", "-7", "0"], object)], {"to": TensorProto.INT64}, 1, 19),
    ("cast_int_str", "Cast", [np.array([12, -7, 0], np.int64)], {"to": TensorProto.STRING}, 1, 19),
    ("castlike", "CastLike", [np.array([1.9, -1.9], np.float32), np.array([0], np.int8)], {}, 1, 19),
    # ---- normalization ----
    ("layer_norm_3out", "LayerNormalization", [f32(2, 3, 4), f32(3, 4), f32(3, 4)], {"axis": 1, "epsilon": 1e-3}, 3,
     17),
    ("layer_norm_nobias", "LayerNormalization", [f32(2, 5), f32(5)], {}, 1, 17),
    ("instance_norm", "InstanceNormalization", [f32(2, 3, 4, 5), f32(3), f32(3)], {}, 1, 6),
    ("group_norm_21", "GroupNormalization", [f32(2, 6, 3, 2), f32(6), f32(6)], {"num_groups": 3}, 1, 21),
    ("batch_norm", "BatchNormalization", [f32(2, 3, 4), f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.5], {}, 1, 15),
    ("batch_norm_train", "BatchNormalization", [f32(4, 3, 5), f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.5],
     {"training_mode": 1, "momentum": 0.8}, 3, 15),
    ("lp_norm_l1", "LpNormalization", [f32(3, 4)], {"axis": 0, "p": 1}, 1, 1),
    ("lp_norm_l2", "LpNormalization", [f32(3, 4)], {}, 1, 1),
    ("mvn", "MeanVarianceNormalization", [f32(2, 3, 4, 5)], {}, 1, 13),
    ("lrn", "LRN", [f32(2, 5, 3, 3)], {"size": 3, "alpha": 0.01, "beta": 0.6, "bias": 2.0}, 1, 13),
    # ---- quantization ----
    ("quantize_per_axis", "QuantizeLinear", [f32(2, 3, 4), np.array([0.1, 0.2, 0.05], np.float32),
                                             np.array([0, 10, -5], np.int8)], {"axis": 1}, 1, 21),
    ("quantize_uint8_default", "QuantizeLinear", [f32(3, 4) * 3, np.array(0.02, np.float32)], {}, 1, 21),
    ("quantize_int16", "QuantizeLinear", [f32(3, 4) * 300, np.array(0.02, np.float32),
                                          np.array(3, np.int16)], {}, 1, 21),
    ("quantize_blocked", "QuantizeLinear", [f32(2, 6), np.array([[0.1, 0.2], [0.3, 0.05]], np.float32),
                                            np.array([[1, 2], [-1, 0]], np.int8)], {"axis": 1, "block_size": 3}, 1, 21),
    ("quantize_ties", "QuantizeLinear", [np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32),
                                         np.array(1.0, np.float32), np.array(0, np.int8)], {}, 1, 21),
    ("dequantize_per_axis", "DequantizeLinear", [np.array([[1, -2, 3], [4, 5, -6]], np.int8),
                                                 np.array([0.5, 0.25], np.float32), np.array([1, -1], np.int8)],
     {"axis": 0}, 1, 21),
    ("dequantize_int32", "DequantizeLinear", [np.array([100, -3], np.int32), np.array(0.5, np.float32)], {}, 1, 21),
    ("dequantize_blocked", "DequantizeLinear", [np.arange(-6, 6, dtype=np.int8).reshape(2, 6),
                                                np.array([[0.1, 0.2], [0.3, 0.05]], np.float32),
                                                np.array([[1, 2], [-1, 0]], np.int8)], {"axis": 1,
                                                                                        "block_size": 3}, 1, 21),
    ("dynamic_quantize", "DynamicQuantizeLinear", [f32(3, 4) * 2], {}, 3, 11),
    ("dynamic_quantize_positive", "DynamicQuantizeLinear", [np.abs(f32(3, 4)) + 1], {}, 3, 11),
    # A below 128: onnxruntime's u8 x s8 kernel saturates int16 pair sums on some CPUs (AVX2);
    # the exact int32 result is what ONNX specifies
    ("matmul_integer", "MatMulInteger", [R.integers(0, 128, (3, 4)).astype(np.uint8),
                                         R.integers(-128, 127, (4, 2)).astype(np.int8),
                                         np.array(12, np.uint8), np.array(-3, np.int8)], {}, 1, 10),
    ("qlinear_matmul", "QLinearMatMul", [R.integers(0, 255, (2, 4)).astype(np.uint8), np.array(0.05, np.float32),
                                         np.array(120, np.uint8), R.integers(0, 255, (4, 3)).astype(np.uint8),
                                         np.array(0.02, np.float32), np.array(128, np.uint8),
                                         np.array(0.1, np.float32), np.array(100, np.uint8)], {}, 1, 10),
    ("conv_integer", "ConvInteger", [R.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8),
                                     R.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8),
                                     np.array(10, np.uint8), np.array(20, np.uint8)], {"pads": [1, 1, 1, 1]}, 1, 10),
    ("qlinear_conv", "QLinearConv", [R.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8), np.array(0.05, np.float32),
                                     np.array(100, np.uint8), R.integers(-100, 100, (3, 2, 3, 3)).astype(np.int8),
                                     np.array([0.01, 0.02, 0.015], np.float32), np.array([0, 0, 0], np.int8),
                                     np.array(0.2, np.float32), np.array(128, np.uint8),
                                     np.array([100, -50, 7], np.int32)], {"strides": [2, 2]}, 1, 10),
    # ---- conv / pooling ----
    ("conv_dilated_strided", "Conv", [f32(1, 2, 7, 6), f32(4, 2, 3, 2)], {"dilations": [2, 1], "strides": [1, 2],
                                                                         "pads": [1, 0, 2, 1]}, 1, 11),
    ("conv_same_lower", "Conv", [f32(1, 2, 6, 5), f32(3, 2, 3, 4), f32(3)], {"auto_pad": "SAME_LOWER",
                                                                            "strides": [2, 2]}, 1, 11),
    ("conv_group", "Conv", [f32(2, 4, 5, 5), f32(6, 2, 3, 3)], {"group": 2}, 1, 11),
    ("conv_1d", "Conv", [f32(1, 3, 9), f32(2, 3, 4)], {"auto_pad": "SAME_UPPER"}, 1, 11),
    ("conv_3d", "Conv", [f32(1, 2, 4, 4, 4), f32(2, 2, 2, 2, 2)], {"strides": [2, 1, 2]}, 1, 11),
    ("conv_depthwise", "Conv", [f32(1, 3, 5, 5), f32(3, 1, 3, 3)], {"group": 3, "pads": [1, 1, 1, 1]}, 1, 11),
    ("conv_t_basic", "ConvTranspose", [f32(1, 2, 3, 3), f32(2, 3, 3, 3)], {}, 1, 11),
    ("conv_t_stride_pad", "ConvTranspose", [f32(1, 2, 3, 4), f32(2, 2, 3, 3), f32(2)],
     {"strides": [2, 3], "pads": [1, 0, 1, 2], "output_padding": [1, 1]}, 1, 11),
    ("conv_t_group_dil", "ConvTranspose", [f32(1, 4, 3, 3), f32(4, 1, 2, 2)], {"group": 2, "dilations": [2, 2]}, 1, 11),
    ("conv_t_output_shape", "ConvTranspose", [f32(1, 1, 3, 3), f32(1, 2, 3, 3)],
     {"strides": [3, 2], "output_shape": [10, 8]}, 1, 11),
    ("conv_t_same_upper", "ConvTranspose", [f32(1, 1, 3, 3), f32(1, 2, 3, 3)],
     {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, 1, 11),
    ("conv_t_same_lower", "ConvTranspose", [f32(1, 1, 3, 3), f32(1, 2, 3, 3)],
     {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, 1, 11),
    ("maxpool_ceil", "MaxPool", [f32(1, 2, 6, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 2, 12),
    ("maxpool_ceil_pad", "MaxPool", [f32(1, 1, 5, 5)], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1,
                                                        "pads": [1, 1, 1, 1]}, 2, 12),
    ("maxpool_dilated", "MaxPool", [f32(1, 2, 8, 8)], {"kernel_shape": [2, 3], "dilations": [2, 2]}, 2, 12),
    ("maxpool_same_upper", "MaxPool", [f32(2, 2, 5, 6)], {"kernel_shape": [3, 2], "strides": [2, 2],
                                                          "auto_pad": "SAME_UPPER"}, 2, 12),
    ("maxpool_col_major", "MaxPool", [f32(1, 2, 4, 5)], {"kernel_shape": [2, 2], "storage_order": 1}, 2, 12),
    ("maxpool_1d_int8", "MaxPool", [R.integers(-100, 100, (1, 2, 9)).astype(np.int8)], {"kernel_shape": [3],
                                                                                       "strides": [2]}, 1, 12),
    ("avgpool_ceil_incl", "AveragePool", [f32(1, 1, 5, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                                             "pads": [1, 1, 1, 1], "count_include_pad": 1}, 1, 19),
    ("avgpool_ceil_excl", "AveragePool", [f32(1, 1, 5, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                                             "pads": [1, 1, 1, 1]}, 1, 19),
    ("avgpool_same_lower", "AveragePool", [f32(1, 2, 5, 5)], {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}, 1, 19),
    ("avgpool_dilated", "AveragePool", [f32(1, 2, 7, 7)], {"kernel_shape": [2, 2], "dilations": [2, 3]}, 1, 19),
    ("lppool", "LpPool", [f32(1, 2, 5, 5)], {"kernel_shape": [2, 2], "p": 3, "strides": [2, 2]}, 1, 18),
    ("global_avg", "GlobalAveragePool", [f32(2, 3, 4, 5)], {}, 1, 1),
    ("global_max", "GlobalMaxPool", [f32(2, 3, 4)], {}, 1, 1),
    ("global_lp", "GlobalLpPool", [f32(2, 3, 4, 5)], {"p": 3}, 1, 2),
    # ---- losses, windows, detection, sampling, rotary ----
    ("nll_weighted_ignore", "NegativeLogLikelihoodLoss", [f32(3, 4, 2), np.array([[0, 3], [1, -1], [2, 2]], np.int64),
                                                          np.abs(f32(4))], {"ignore_index": -1}, 1, 13),
    ("nll_sum", "NegativeLogLikelihoodLoss", [f32(3, 4), np.array([0, 3, 1], np.int64)], {"reduction": "sum"}, 1, 13),
    ("sce_none", "SoftmaxCrossEntropyLoss", [f32(3, 5), np.array([4, 0, 2], np.int64)], {"reduction": "none"}, 2, 13),
    ("sce_mean_weights", "SoftmaxCrossEntropyLoss", [f32(2, 3, 4), np.array([[0, 1, 2, 0], [2, 2, 1, 0]], np.int64),
                                                     np.abs(f32(3))], {}, 2, 13),
    ("hann", "HannWindow", [np.array(10, np.int64)], {}, 1, 17),
    ("hamming_symmetric", "HammingWindow", [np.array(7, np.int32)], {"periodic": 0}, 1, 17),
    ("blackman_double", "BlackmanWindow", [np.array(9, np.int64)], {"output_datatype": TensorProto.DOUBLE}, 1, 17),
    ("nms", "NonMaxSuppression", [R.random((2, 6, 4)).astype(np.float32), R.random((2, 3, 6)).astype(np.float32),
                                  np.array([3], np.int64), np.array([0.3], np.float32), np.array([0.2], np.float32)],
     {}, 1, 11),
    ("nms_center", "NonMaxSuppression", [np.array([[[0.5, 0.5, 1, 1], [0.6, 0.5, 1, 1], [3, 3, 1, 1], [3, 3, 1, 1]]],
                                                  np.float32), np.array([[[0.9, 0.8, 0.7, 0.7]]], np.float32),
                                         np.array([10], np.int64), np.array([0.5], np.float32)],
     {"center_point_box": 1}, 1, 11),
    ("grid_sample_bilinear_zeros", "GridSample", [f32(2, 3, 4, 5), grid(2, 3, 6, spread=1.3)], {}, 1, 16),
    ("grid_sample_nearest_border_align", "GridSample", [f32(1, 2, 4, 5), grid(1, 3, 3, spread=1.3)],
     {"mode": "nearest", "padding_mode": "border", "align_corners": 1}, 1, 16),
    ("grid_sample_bicubic_reflection", "GridSample", [f32(1, 2, 4, 5), grid(1, 3, 4, spread=1.5)],
     {"mode": "bicubic", "padding_mode": "reflection"}, 1, 16),
    ("grid_sample_linear_reflection_align", "GridSample", [f32(1, 1, 3, 4), grid(1, 5, 5, spread=2.5)],
     {"mode": "linear", "padding_mode": "reflection", "align_corners": 1}, 1, 20),
    ("grid_sample_cubic_border", "GridSample", [f32(1, 1, 4, 4), grid(1, 3, 3, spread=1.5)],
     {"mode": "cubic", "padding_mode": "border"}, 1, 20),
    ("rotary_4d", "RotaryEmbedding", [f32(2, 3, 4, 8), f32(10, 4), f32(10, 4),
                                      np.array([[0, 1, 2, 3], [5, 6, 7, 9]], np.int64)], {}, 1, 23),
    ("rotary_3d_interleaved_partial", "RotaryEmbedding", [f32(2, 4, 12), f32(2, 4, 2), f32(2, 4, 2)],
     {"interleaved": 1, "num_heads": 2, "rotary_embedding_dim": 4}, 1, 23),
    ("attention_4d_gqa_past_causal", "Attention", [f32(2, 4, 3, 8), f32(2, 2, 3, 8), f32(2, 2, 3, 6), None,
                                                    f32(2, 2, 5, 8), f32(2, 2, 5, 6)], {"is_causal": 1}, 3, 23),
    ("attention_3d_bool_mask", "Attention", [f32(2, 3, 16), f32(2, 5, 16), f32(2, 5, 8),
                                             R.random((3, 5)) > 0.3], {"q_num_heads": 4, "kv_num_heads": 4}, 1, 23),
    ("attention_float_mask_softcap_scale", "Attention", [f32(1, 2, 4, 4) * 3, f32(1, 2, 6, 4) * 3, f32(1, 2, 6, 4),
                                                         f32(4, 6)], {"softcap": 2.0, "scale": 0.3}, 1, 23),
    ("attention_qk_output_mode3", "Attention", [f32(1, 2, 3, 4), f32(1, 2, 3, 4), f32(1, 2, 3, 4)],
     {"qk_matmul_output_mode": 3}, 4, 23),
    ("max_unpool", "MaxUnpool", [f32(1, 1, 2, 2), np.array([[[[5, 7], [13, 15]]]], np.int64)],
     {"kernel_shape": [2, 2], "strides": [2, 2]}, 1, 11),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_onnxruntime(case):
    _, op, inputs, attrs, n_out, opset = case
    check(op, inputs, attrs, n_out, opset, rtol=1e-5, atol=1e-5)


# ---- Resize: the coordinate transformation and nearest modes real exports use ----

def _resize_case(mode, ctm, shape_in, scales=None, sizes=None, **extra):
    x = R.standard_normal(shape_in).astype(np.float32)
    roi = extra.pop("roi", None)
    ins = [x, None if roi is None else np.array(roi, np.float32),
           None if scales is None else np.array(scales, np.float32),
           None if sizes is None else np.array(sizes, np.int64)]
    return ins, {"mode": mode, "coordinate_transformation_mode": ctm, **extra}


RESIZE = [
    ("nearest_half_pixel_floor", "nearest", "half_pixel", (1, 1, 4, 5), [1, 1, 2.0, 1.5], None,
     {"nearest_mode": "floor"}),
    ("nearest_asym_floor_up", "nearest", "asymmetric", (1, 2, 3, 3), [1, 1, 2, 2], None, {"nearest_mode": "floor"}),
    ("nearest_prefer_ceil_down", "nearest", "half_pixel", (1, 1, 8, 8), [1, 1, 0.6, 0.3], None,
     {"nearest_mode": "round_prefer_ceil"}),
    ("nearest_align_ceil", "nearest", "align_corners", (1, 1, 4, 4), None, [1, 1, 7, 3], {"nearest_mode": "ceil"}),
    ("nearest_pytorch_half", "nearest", "pytorch_half_pixel", (1, 1, 4, 4), None, [1, 1, 1, 6], {}),
    ("nearest_tf_half_nn", "nearest", "tf_half_pixel_for_nn", (1, 1, 4, 4), [1, 1, 1.5, 2.5], None, {}),
    ("linear_half_pixel_up", "linear", "half_pixel", (1, 2, 3, 4), [1, 1, 2.5, 1.5], None, {}),
    ("linear_align_down", "linear", "align_corners", (1, 1, 6, 7), None, [1, 1, 4, 3], {}),
    ("linear_asym", "linear", "asymmetric", (2, 1, 3, 3), [1, 1, 1.7, 2.2], None, {}),
    ("linear_pytorch_half_one", "linear", "pytorch_half_pixel", (1, 1, 4, 4), None, [1, 1, 1, 3], {}),
    ("linear_half_symmetric", "linear", "half_pixel_symmetric", (1, 1, 5, 4), [1, 1, 1.6, 0.7], None, {}),
    ("linear_antialias_down", "linear", "half_pixel", (1, 1, 9, 10), [1, 1, 0.4, 0.55], None, {"antialias": 1}),
    ("cubic_half_pixel", "cubic", "half_pixel", (1, 1, 4, 5), [1, 1, 1.8, 2.0], None, {}),
    ("cubic_exclude", "cubic", "half_pixel", (1, 1, 5, 5), [1, 1, 0.7, 1.3], None, {"exclude_outside": 1,
                                                                                    "cubic_coeff_a": -0.5}),
    ("cubic_align", "cubic", "align_corners", (1, 1, 4, 4), None, [1, 1, 6, 5], {}),
    ("cubic_antialias_down", "cubic", "half_pixel", (1, 1, 10, 10), [1, 1, 0.35, 0.6], None, {"antialias": 1}),
    ("linear_axes", "linear", "half_pixel", (2, 3, 4), [1.5, 0.5], None, {"axes": [2, 1]}),
    ("nearest_keep_aspect_larger", "nearest", "half_pixel", (1, 1, 4, 6), None, [7, 7],
     {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}),
    ("linear_keep_aspect_smaller", "linear", "half_pixel", (1, 1, 4, 6), None, [7, 7],
     {"axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}),
    ("tf_crop_and_resize", "linear", "tf_crop_and_resize", (1, 1, 5, 5), None, [1, 1, 3, 4],
     {"roi": [0, 0, 0.2, -0.1, 1, 1, 0.9, 1.2], "extrapolation_value": 7.0}),
]


@pytest.mark.parametrize("case", RESIZE, ids=[c[0] for c in RESIZE])
def test_resize_matches_onnxruntime(case):
    _, mode, ctm, shape_in, scales, sizes, extra = case
    ins, attrs = _resize_case(mode, ctm, shape_in, scales, sizes, **dict(extra))
    check("Resize", ins, attrs, 1, 19, rtol=1e-4, atol=1e-5)


# ---- recurrent ops: every direction, states, sequence lengths ----

def _rnn_inputs(op, nd, seq=4, batch=3, inp=2, hs=3, lens=None, init=False, peep=False, layout=0):
    g = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    x = f32(batch, seq, inp) if layout else f32(seq, batch, inp)
    ins = [x, f32(nd, g * hs, inp), f32(nd, g * hs, hs), f32(nd, 2 * g * hs),
           None if lens is None else np.array(lens, np.int32)]
    hshape = (batch, nd, hs) if layout else (nd, batch, hs)
    ins.append(f32(*hshape) if init else None)
    if op == "LSTM":
        ins += [f32(*hshape) if init else None, f32(nd, 3 * hs) if peep else None]
    while ins and ins[-1] is None:
        ins.pop()
    return ins


RNNS = [
    ("lstm_fwd", "LSTM", 1, {}, {}),
    ("lstm_rev_lens", "LSTM", 1, {"direction": "reverse"}, {"lens": [4, 2, 1], "init": True}),
    ("lstm_bidi_peep", "LSTM", 2, {"direction": "bidirectional"}, {"lens": [3, 4, 1], "init": True, "peep": True}),
    ("lstm_clip_forget", "LSTM", 1, {"clip": 0.5, "input_forget": 1}, {"init": True}),
    ("lstm_acts", "LSTM", 1, {"activations": ["HardSigmoid", "LeakyRelu", "Softsign"],
                              "activation_alpha": [0.3, 0.1], "activation_beta": [0.6]}, {}),
    ("gru_fwd", "GRU", 1, {}, {}),
    ("gru_lbr_bidi", "GRU", 2, {"direction": "bidirectional", "linear_before_reset": 1}, {"lens": [1, 4, 2],
                                                                                          "init": True}),
    ("gru_rev_clip", "GRU", 1, {"direction": "reverse", "clip": 0.7}, {"init": True}),
    ("rnn_bidi_relu", "RNN", 2, {"direction": "bidirectional", "activations": ["Relu", "Tanh"]}, {"lens": [2, 3, 4]}),
]


@pytest.mark.parametrize("case", RNNS, ids=[c[0] for c in RNNS])
def test_recurrent_matches_onnxruntime(case):
    _, op, nd, attrs, build = case
    ins = _rnn_inputs(op, nd, **build)
    n_out = 3 if op == "LSTM" else 2
    check(op, ins, {"hidden_size": 3, **attrs}, n_out, 14, rtol=1e-4, atol=1e-5)


# ---- hypothesis: random shapes and values for a handful of ops ----

_settings = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def _gather_elements(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    axis = draw(st.integers(-rank, rank - 1))
    ishape = [draw(st.integers(1, d)) if i != axis % rank else draw(st.integers(1, 5)) for i, d in enumerate(shape)]
    n = shape[axis % rank]
    idx = draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(ishape)), max_size=int(np.prod(ishape))))
    data = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return data, np.array(idx, np.int64).reshape(ishape), axis


@_settings
@given(_gather_elements())
def test_gather_elements_random(case):
    data, idx, axis = case
    check("GatherElements", [data, idx], {"axis": axis}, 1, 13)


@st.composite
def _slice(draw):
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    k = draw(st.integers(1, len(shape)))
    axes = draw(st.permutations(range(len(shape))))[:k]
    big = st.one_of(st.integers(-8, 8), st.sampled_from([2 ** 63 - 1, -(2 ** 63)]))
    starts = [draw(big) for _ in axes]
    ends = [draw(big) for _ in axes]
    steps = [draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in axes]
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape), starts, ends, list(axes), steps


@_settings
@given(_slice())
def test_slice_random(case):
    x, starts, ends, axes, steps = case
    check("Slice", [x, i64(*starts), i64(*ends), i64(*axes), i64(*steps)], {}, 1, 13)


@_settings
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 3), st.integers(0, 1),
       st.integers(0, 1), st.booleans())
def test_softmax_random(shape, axis_pick, opset13, log, ints_):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32) * 5
    axis = axis_pick % len(shape)
    check("LogSoftmax" if log else "Softmax", [x], {"axis": axis}, 1, 13 if opset13 else 11, rtol=1e-4, atol=1e-5)


@_settings
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.sampled_from(["constant", "reflect", "edge", "wrap"]),
       st.data())
def test_pad_random(shape, mode, data):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    # negative pads (cropping) only in constant mode and only where the axis survives it
    pads = [data.draw(st.integers(-1 if mode == "constant" and d >= 2 else 0, 2 if mode != "reflect" else max(d - 1,
                                                                                                              0)))
            for d in shape * 2]
    check("Pad", [x, np.array(pads, np.int64), np.array(2.5, np.float32)] if mode == "constant"
          else [x, np.array(pads, np.int64)], {"mode": mode}, 1, 19)


@_settings
@given(st.sampled_from(["ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare", "ReduceMax", "ReduceMean"]),
       st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_reduce_random(op, shape, data):
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), max_size=len(shape),
                              unique_by=lambda a: a % len(shape)))
    keep = data.draw(st.integers(0, 1))
    check(op, [x, np.array(axes, np.int64)], {"keepdims": keep}, 1, 18, rtol=1e-5, atol=1e-5)


# ---- ai.onnx.ml: what scikit-learn exports carry ----------------------------------

ML = "ai.onnx.ml"


def _tree(**extra):
    """Two trees over 2 features. Tree 0: x0 <= 0.5 ? leaf 1 : (x1 < -1 ? leaf 3 : leaf 4);
    tree 1: x1 > 0 ? leaf 1 : leaf 2."""
    return dict(nodes_treeids=[0, 0, 0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
                nodes_featureids=[0, 0, 1, 0, 0, 1, 0, 0],
                nodes_values=[0.5, 0, -1.0, 0, 0, 0.0, 0, 0],
                nodes_modes=["BRANCH_LEQ", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "BRANCH_GT", "LEAF", "LEAF"],
                nodes_truenodeids=[1, 0, 3, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 0, 4, 0, 0, 2, 0, 0],
                nodes_missing_value_tracks_true=[1, 0, 0, 0, 0, 0, 0, 0], **extra)


_X2 = np.array([[0.2, 3.0], [0.9, -2.0], [0.9, 0.5], [np.nan, -0.5], [2.0, np.nan]], np.float32)

ML_CASES = [
    ("scaler", "Scaler", [f32(3, 4)], {"offset": [0.1, 0.2, 0.3, 0.4], "scale": [2.0, 0.5, 1.0, 3.0]}, 1),
    ("normalizer_l2", "Normalizer", [f32(3, 4)], {"norm": "L2"}, 1),
    ("normalizer_max", "Normalizer", [np.abs(f32(3, 4)) + 0.1], {"norm": "MAX"}, 1),
    ("binarizer", "Binarizer", [f32(3, 4)], {"threshold": 0.2}, 1),
    ("imputer", "Imputer", [np.array([[1, np.nan], [np.nan, 2]], np.float32)],
     {"imputed_value_floats": [7.0, 8.0], "replaced_value_float": float("nan")}, 1),
    ("label_encoder", "LabelEncoder", [np.array(["a", "c", "b"], object)],
     {"keys_strings": ["a", "b"], "values_int64s": [1, 2], "default_int64": -5}, 1),
    ("array_feature_extractor", "ArrayFeatureExtractor", [f32(3, 5), np.array([4, 0], np.int64)], {}, 1),
    ("zipmap", "ZipMap", [np.abs(f32(3, 2))], {"classlabels_int64s": [3, 9]}, 1),
    ("linear_classifier_multi", "LinearClassifier", [f32(4, 3)],
     {"coefficients": f32(9).tolist(), "intercepts": [0.1, -0.2, 0.3], "classlabels_ints": [5, 6, 7],
      "post_transform": "SOFTMAX"}, 2),
    ("linear_classifier_binary_one_row", "LinearClassifier", [f32(4, 3)],
     {"coefficients": f32(3).tolist(), "intercepts": [0.1], "classlabels_strings": ["no", "yes"],
      "post_transform": "LOGISTIC"}, 2),
    ("linear_regressor", "LinearRegressor", [f32(4, 3)],
     {"coefficients": f32(6).tolist(), "intercepts": [1.0, -1.0], "targets": 2}, 1),
    ("tree_regressor_sum", "TreeEnsembleRegressor", [_X2],
     _tree(target_treeids=[0, 0, 0, 1, 1], target_nodeids=[1, 3, 4, 1, 2], target_ids=[0, 0, 0, 0, 0],
           target_weights=[1.0, 2.0, 3.0, 10.0, 20.0], n_targets=1, base_values=[0.5]), 1),
    ("tree_regressor_max", "TreeEnsembleRegressor", [_X2],
     _tree(target_treeids=[0, 0, 1, 1], target_nodeids=[1, 3, 1, 2], target_ids=[0, 1, 0, 1],
           target_weights=[1.0, 2.0, 3.0, 4.0], n_targets=2, aggregate_function="MAX"), 1),
    ("tree_classifier_multi", "TreeEnsembleClassifier", [_X2],
     _tree(class_treeids=[0, 0, 0, 1, 1], class_nodeids=[1, 3, 4, 1, 2], class_ids=[0, 1, 2, 2, 0],
           class_weights=[0.5, 0.4, 0.3, 0.2, 0.1], classlabels_int64s=[0, 1, 2], post_transform="SOFTMAX"), 2),
    ("tree_classifier_binary_positive", "TreeEnsembleClassifier", [_X2],
     _tree(class_treeids=[0, 0, 0, 1, 1], class_nodeids=[1, 3, 4, 1, 2], class_ids=[0, 0, 0, 0, 0],
           class_weights=[0.1, 0.3, 0.2, 0.4, 0.05], classlabels_int64s=[0, 1]), 2),
    ("tree_classifier_binary_signed", "TreeEnsembleClassifier", [_X2],
     _tree(class_treeids=[0, 0, 0, 1, 1], class_nodeids=[1, 3, 4, 1, 2], class_ids=[0, 0, 0, 0, 0],
           class_weights=[-0.5, 0.3, -0.2, 0.4, 0.05], classlabels_strings=["a", "b"],
           base_values=[0.1], post_transform="LOGISTIC"), 2),
]


@pytest.mark.parametrize("case", ML_CASES, ids=[c[0] for c in ML_CASES])
def test_ml_kernel_matches_onnxruntime(case):
    _, op, inputs, attrs, n_out = case
    out_type = None
    if op == "ZipMap":  # shape inference leaves ZipMap's seq(map) output untyped
        out_type = helper.make_sequence_type_proto(helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    check(op, inputs, attrs, n_out, 17, rtol=1e-5, atol=1e-6, domain=ML, out_type=out_type)
