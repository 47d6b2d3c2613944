"""Compressed weights survive ONNX: export -> import gives the constexpr ops back (from the
exporter's record, or from DequantizeLinear of an initializer in any model), export again
writes the same graph, and the numbers never move."""
import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ir.builder import TensorSpec, program
from ir.formats.onnx import export_onnx, import_onnx
from ir.formats.onnx.exporter import to_onnx_model
from ir.interpret import evaluate

RNG = np.random.default_rng(5)
MASK = (RNG.random((8, 16)) < 0.5).astype(np.uint8)
NNZ = int(MASK.sum())
VMASK = MASK[:, :8]


def _affine(b):
    return b.constexpr_affine_dequantize(quantized_data=b.const(RNG.integers(-8, 8, (8, 16)), dtype="int4"),
                                         zero_point=b.const(np.int8(1), dtype="int4"),
                                         scale=np.full(8, 0.1, np.float32), axis=0)


def _blockwise(b):
    return b.constexpr_blockwise_shift_scale(data=b.const(RNG.integers(-128, 128, (8, 16)), dtype="int8"),
                                             scale=np.full((8, 2), 0.02, np.float32),
                                             offset=b.const(RNG.integers(-3, 3, (8, 2)), dtype="int8"))


def _lut16(b):
    return b.constexpr_lut_to_dense(indices=b.const(RNG.integers(0, 4, 128), dtype="uint2"),
                                    lut=RNG.standard_normal(4).astype(np.float32), shape=np.array([8, 16], np.uint32))


def _lut18_vector(b):
    return b.constexpr_lut_to_dense(indices=b.const(RNG.integers(0, 4, (8, 8)), dtype="uint2"),
                                    lut=RNG.standard_normal((2, 1, 4, 2)).astype(np.float32), vector_axis=1)


def _lut_of_int8_lut(b):
    lut = b.constexpr_blockwise_shift_scale(data=b.const(RNG.integers(-128, 128, (4, 1, 16, 1)), dtype="int8"),
                                            scale=np.full((4, 1, 1, 1), 0.02, np.float32))
    return b.constexpr_lut_to_dense(indices=b.const(RNG.integers(0, 16, (8, 16)), dtype="uint4"), lut=lut)


def _sparse(b):
    return b.constexpr_sparse_to_dense(nonzero_data=RNG.standard_normal(NNZ).astype(np.float32),
                                       mask=b.const(MASK, dtype="uint1"))


def _sparse_palettized(b):
    m, v = b.constexpr_lut_to_sparse(indices_mask=b.const(VMASK, dtype="uint1"),
                                     indices_nonzero_data=b.const(RNG.integers(0, 16, int(VMASK.sum())), dtype="uint4"),
                                     lut=RNG.standard_normal((2, 1, 16, 2)).astype(np.float32), vector_axis=1)
    return b.constexpr_sparse_to_dense(nonzero_data=v, mask=m)


def _sparse_int4(b):
    m, v = b.constexpr_sparse_blockwise_shift_scale(
        data_mask=b.const(MASK, dtype="uint1"), nonzero_data=b.const(RNG.integers(-8, 8, NNZ), dtype="int4"),
        scale=np.full((8, 1), 0.1, np.float32), offset=b.const(RNG.integers(-2, 2, (8, 1)), dtype="int4"))
    return b.constexpr_sparse_to_dense(nonzero_data=v, mask=m)


FORMS = [_affine, _blockwise, _lut16, _lut18_vector, _lut_of_int8_lut, _sparse, _sparse_palettized, _sparse_int4]


def _net(weight_fn):
    @program(inputs={"x": TensorSpec((3, 16))}, opset="iOS16" if weight_fn is _lut16 else "iOS18")
    def net(b, x):
        return b.linear(x=x, weight=weight_fn(b), name="y")
    return net


def _constexpr_kinds(prog):
    return collections.Counter(op.op_type for op in prog.main.ops if op.op_type.startswith("constexpr_"))


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__.strip("_"))
def test_export_import_export_is_stable(tmp_path, form):
    prog = _net(form)
    back = import_onnx(export_onnx(prog, tmp_path / "a.onnx"))
    assert _constexpr_kinds(back) == _constexpr_kinds(prog)
    assert not [op for op in back.main.ops if op.op_type.startswith("onnx.")]
    x = {"x": RNG.standard_normal((3, 16)).astype(np.float32)}
    np.testing.assert_array_equal(evaluate(back, x)["y"], evaluate(prog, x)["y"])
    first, second = to_onnx_model(prog), to_onnx_model(back)
    assert [n.op_type for n in second.graph.node] == [n.op_type for n in first.graph.node]
    assert sorted(t.raw_data for t in second.graph.initializer) == sorted(t.raw_data for t in first.graph.initializer)


def test_a_record_that_no_longer_matches_is_ignored(tmp_path):
    """A tool that renamed the decode nodes: import falls back to the nodes themselves."""
    prog = _net(_sparse_palettized)
    model = to_onnx_model(prog)
    for i, n in enumerate(model.graph.node):
        n.name = f"renamed_{i}"
    back = import_onnx(model)
    assert not _constexpr_kinds(back)
    x = {"x": RNG.standard_normal((3, 16)).astype(np.float32)}
    np.testing.assert_allclose(evaluate(back, x)["y"], evaluate(prog, x)["y"], rtol=1e-6, atol=1e-6)


def _dq_model(zero_point: bool, axis_scale: bool):
    """A third-party style quantized model: DequantizeLinear of an int8 initializer into MatMul."""
    q = RNG.integers(-128, 128, (16, 4)).astype(np.int8)
    scale = np.full(4, 0.05, np.float32) if axis_scale else np.float32(0.05)
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(np.asarray(scale), "w_scale")]
    dq_in = ["w_q", "w_scale"]
    if zero_point:
        inits.append(numpy_helper.from_array(np.asarray(np.full(4, 3, np.int8) if axis_scale else np.int8(3)), "w_zp"))
        dq_in.append("w_zp")
    nodes = [helper.make_node("DequantizeLinear", dq_in, ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("zero_point,axis_scale", [(True, True), (False, False), (True, False)])
def test_dequantize_linear_of_an_initializer_is_constexpr(zero_point, axis_scale):
    model = _dq_model(zero_point, axis_scale)
    prog = import_onnx(model)
    assert _constexpr_kinds(prog) == {"constexpr_affine_dequantize": 1}
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight = (arrays["w_q"].astype(np.float32) - arrays.get("w_zp", np.int8(0))) * arrays["w_scale"]
    want = x @ weight
    np.testing.assert_allclose(evaluate(prog, {"x": x})["y"], want, rtol=1e-5, atol=1e-5)
