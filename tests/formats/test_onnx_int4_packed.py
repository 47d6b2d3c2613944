"""int4 / uint4 weights take 4 bits in the ONNX file at every opset (INT4 initializers
from 21, bytes packed two per byte and decoded in the graph below), onnxruntime decodes
them to exactly what the interpreter decodes, and import gives the constexpr ops back."""
import collections

import numpy as np
import onnx
import pytest

from ir.builder import TensorSpec, program
from ir.formats.onnx import export_onnx, import_onnx
from ir.formats.onnx.exporter import choose_opset, to_onnx_model
from ir.interpret import evaluate

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(21)
OPSETS = (13, 17, 19, 21)
SHAPE = (8, 16)


def _ints(dt, shape):
    lo, hi = (-8, 8) if dt == "int4" else (0, 16)
    return RNG.integers(lo, hi, shape)


def _affine(dt, axis):
    def w(b):
        n = 1 if axis is None else SHAPE[axis]
        scale = (RNG.random(n).astype(np.float32) + 0.5) * 0.1
        zp = _ints(dt, n)
        if axis is None:
            scale, zp = scale[0], zp[0]
        return b.constexpr_affine_dequantize(quantized_data=b.const(_ints(dt, SHAPE), dtype=dt),
                                             zero_point=b.const(zp, dtype=dt), scale=scale,
                                             axis=0 if axis is None else axis)
    return w


def _blockwise(dt, scale_shape, offset, shape=SHAPE):
    def w(b):
        scale = (RNG.random(scale_shape).astype(np.float32) + 0.5) * 0.1
        off = b.const(_ints(dt, scale_shape), dtype=dt) if offset else None
        return b.constexpr_blockwise_shift_scale(data=b.const(_ints(dt, shape), dtype=dt), scale=scale, offset=off)
    return w


def _sparse(dt, per_channel):
    def w(b):
        mask = (RNG.random(SHAPE) < 0.5).astype(np.uint8)
        pshape = (SHAPE[0], 1) if per_channel else (1, 1)
        m, v = b.constexpr_sparse_blockwise_shift_scale(
            data_mask=b.const(mask, dtype="uint1"), nonzero_data=b.const(_ints(dt, int(mask.sum())), dtype=dt),
            scale=np.full(pshape, 0.1, np.float32), offset=b.const(_ints(dt, pshape), dtype=dt))
        return b.constexpr_sparse_to_dense(nonzero_data=v, mask=m)
    return w


FORMS = {
    "affine-int4-axis0": _affine("int4", 0), "affine-int4-axis1": _affine("int4", 1),
    "affine-uint4-tensor": _affine("uint4", None),
    "block-int4": _blockwise("int4", (8, 2), True), "block-uint4": _blockwise("uint4", (8, 4), True),
    "block-int4-no-offset": _blockwise("int4", (8, 2), False),
    "channel-uint4": _blockwise("uint4", (8, 1), False), "tensor-int4": _blockwise("int4", (1, 1), True),
    "two-axis-blocks": _blockwise("int4", (2, 4), True),
    "odd-count": _blockwise("int4", (3, 1), True, shape=(3, 5)),  # 15 nibbles: the last byte half empty
    "sparse-int4-channel": _sparse("int4", True), "sparse-uint4-tensor": _sparse("uint4", False),
}


def _net(form):
    """The decoded weight itself is the output (x is fed zeros: 0 + w == w exactly)."""
    probe = program(inputs={"x": TensorSpec((1,))})(lambda b, x: FORMS[form](b))
    shape = probe.main.outputs[0].shape

    @program(inputs={"x": TensorSpec(shape)}, opset="iOS18")
    def net(b, x):
        return b.add(x=x, y=FORMS[form](b), name="y")
    return net


def _int4_consts(prog):
    return [op.attrs["val"] for op in prog.main.ops
            if op.op_type == "const" and op.outputs[0].dtype in ("int4", "uint4") and op.attrs["val"].size > 1]


def _kinds(prog):
    return collections.Counter(op.op_type for op in prog.main.ops if op.op_type.startswith("constexpr_"))


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("form", sorted(FORMS))
def test_four_bits_on_disk_and_bit_exact(tmp_path, form, opset):
    prog = _net(form)
    path = export_onnx(prog, tmp_path / "m.onnx", opset=opset)
    model = onnx.load(path)
    assert model.opset_import[0].version == opset
    ints = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    # every int4 const of n values lies in an initializer of ceil(n / 2) bytes; none holds it a byte each
    sizes = collections.Counter(len(t.raw_data) for t in model.graph.initializer if t.data_type in ints)
    bytewise = [onnx.numpy_helper.to_array(t).reshape(-1) for t in model.graph.initializer
                if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    for val in _int4_consts(prog):
        assert sizes[(val.size + 1) // 2] >= 1
        assert not [a for a in bytewise if a.size == val.size and np.array_equal(a, val.reshape(-1))]
    feeds = {"x": np.zeros(prog.main.inputs[0].shape, np.float32)}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_array_equal(got, evaluate(prog, feeds)["y"])
    back = import_onnx(path)
    assert _kinds(back) == _kinds(prog)
    np.testing.assert_array_equal(evaluate(back, feeds)["y"], evaluate(prog, feeds)["y"])


def test_int4_file_is_half_the_int8_file_below_opset_21(tmp_path):
    """The same 64x256 weight as int8 and as int4 (per-channel) at opset 17: the int4 file
    is smaller by about half the weight's int8 bytes."""
    q = RNG.integers(-8, 8, (64, 256))

    def net(dt):
        @program(inputs={"x": TensorSpec((2, 256))})
        def p(b, x):
            w = b.constexpr_blockwise_shift_scale(data=b.const(q, dtype=dt), scale=np.full((64, 1), 0.1, np.float32))
            return b.linear(x=x, weight=w, name="y")
        return p
    sizes = {dt: (tmp_path / f"{dt}.onnx") for dt in ("int8", "int4")}
    for dt, path in sizes.items():
        export_onnx(net(dt), path, opset=17)
    saved = sizes["int8"].stat().st_size - sizes["int4"].stat().st_size
    assert 64 * 256 // 2 - 1024 < saved <= 64 * 256 // 2  # the decode nodes cost well under 1 KB


def _imported(opset, extra_nodes=()):
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    nodes = [h.make_node("MatMul", ["x", "w"], ["y0"])] + list(extra_nodes)
    out = h.make_tensor_value_info(extra_nodes[-1].output[0], T.INT64, [2]) if extra_nodes else \
        h.make_tensor_value_info("y0", T.FLOAT, [2, 64])
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 64])], [out],
                     [nh.from_array(RNG.standard_normal((64, 64)).astype(np.float32), "w")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return import_onnx(m)


def test_the_model_keeps_its_opset_unless_asked():
    from stages.compression import affine_quantize_weights

    prog = affine_quantize_weights(_imported(17), dtype="int4", granularity="per_block", block_size=16)
    assert _kinds(prog)  # something was compressed
    assert choose_opset(prog, None, prog.main) == 17
    assert to_onnx_model(prog).opset_import[0].version == 17
    assert choose_opset(prog, 21, prog.main) == 21  # the opt-in


def test_the_opt_in_upgrade_carries_foreign_ops_along(tmp_path):
    from onnx import helper as h

    from stages.compression import affine_quantize_weights

    prog = _imported(17, [h.make_node("Shape", ["y0"], ["s"], name="shape_node")])  # Shape changed at 19 and 21
    prog = affine_quantize_weights(prog, dtype="int4", granularity="per_block", block_size=16)
    assert any(op.op_type == "onnx.Shape" for op in prog.main.ops)
    assert choose_opset(prog, None, prog.main) == 17
    path = export_onnx(prog, tmp_path / "up.onnx", opset=21)
    model = onnx.load(path)
    assert model.opset_import[0].version == 21
    assert onnx.TensorProto.INT4 in {t.data_type for t in model.graph.initializer}
    (shape,) = ort.InferenceSession(str(path)).run(None, {"x": np.zeros((2, 64), np.float32)})
    assert list(shape) == [2, 64]
