"""The opt-in MatMulNBits form: 4-bit per-block MatMul / linear weights as onnxruntime's
com.microsoft MatMulNBits, equal to the dequantized-weight matmul within float rounding,
and back as the original ops on import."""
import collections

import numpy as np
import onnx
import pytest

from ir.builder import TensorSpec, program
from ir.formats.onnx import export_onnx, import_onnx
from ir.formats.onnx.exporter import to_onnx_model
from ir.formats.onnx.nbits import rewrite
from ir.interpret import evaluate

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(42)


def _weight(b, dt, n, k, block, offset, rows_first=True, scale_dtype="fp32"):
    lo, hi = (-8, 8) if dt == "int4" else (0, 16)
    shape, sshape = ((n, k), (n, k // block)) if rows_first else ((k, n), (k // block, n))
    scale = ((RNG.random(sshape) + 0.5) * 0.05).astype(np.float16 if scale_dtype == "fp16" else np.float32)
    off = b.const(RNG.integers(lo, hi, sshape), dtype=dt) if offset else None
    return b.constexpr_blockwise_shift_scale(data=b.const(RNG.integers(lo, hi, shape), dtype=dt), scale=scale,
                                             offset=off)


def _linear(dt="int4", n=24, k=64, block=32, offset=False, bias=True, batch=(3,)):
    @program(inputs={"x": TensorSpec(batch + (k,))})
    def net(b, x):
        bias_val = RNG.standard_normal(n).astype(np.float32) if bias else None
        return b.linear(x=x, weight=_weight(b, dt, n, k, block, offset), bias=bias_val, name="y")
    return net


def _matmul(dt="uint4", n=20, k=48, block=16, offset=True, scale_dtype="fp32"):
    @program(inputs={"x": TensorSpec((2, 5, k), scale_dtype)})
    def net(b, x):
        return b.matmul(x=x, y=_weight(b, dt, n, k, block, offset, rows_first=False, scale_dtype=scale_dtype),
                        name="y")
    return net


def _nodes(model):
    return [n for n in model.graph.node if n.op_type == "MatMulNBits"]


def _kinds(prog):
    return collections.Counter(op.op_type for op in prog.main.ops if op.op_type != "const")


CASES = {
    "linear-int4-bias": _linear(),
    "linear-int4-offset-rank3": _linear(offset=True, batch=(2, 3)),
    "linear-uint4-no-offset": _linear(dt="uint4", bias=False),
    "matmul-uint4-offset-odd-blocks": _matmul(),  # 3 blocks per row: zero points padded per row
    "matmul-int4-fp16": _matmul(dt="int4", offset=False, scale_dtype="fp16", block=16),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnxruntime_equals_the_dequantized_matmul(tmp_path, case):
    prog = CASES[case]
    path = export_onnx(prog, tmp_path / "m.onnx", matmul_nbits=True)
    model = onnx.load(path)
    (node,) = _nodes(model)
    assert node.domain == "com.microsoft"
    assert "DequantizeLinear" not in [n.op_type for n in model.graph.node]
    attrs = {a.name: a.i for a in node.attribute}
    inits = {t.name: t for t in model.graph.initializer}
    blob = attrs["block_size"] * 4 // 8
    assert list(inits[node.input[1]].dims) == [attrs["N"], attrs["K"] // attrs["block_size"], blob]
    fp16 = prog.main.inputs[0].dtype == "fp16"
    x = RNG.standard_normal(prog.main.inputs[0].shape).astype(np.float16 if fp16 else np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = evaluate(prog, {"x": x})["y"]
    tol = 2e-3 if fp16 else 1e-5  # sums in another order: fp16 / fp32 rounding
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol * float(np.abs(want).max()))
    back = import_onnx(path)  # the record gives the constexpr op and its reader back
    assert _kinds(back) == _kinds(prog)
    np.testing.assert_array_equal(evaluate(back, {"x": x})["y"], want)
    again = to_onnx_model(rewrite(back))
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in model.graph.node]


def test_b_is_packed_low_nibble_first_with_int4_shifted_by_8():
    """One row of the 16 int4 values -8..7: codes 0..15, two per byte, low nibble first."""
    @program(inputs={"x": TensorSpec((1, 16))})
    def net(b, x):
        w = b.constexpr_blockwise_shift_scale(data=b.const(np.arange(-8, 8).reshape(1, 16), dtype="int4"),
                                              scale=np.full((1, 1), 0.5, np.float32))
        return b.linear(x=x, weight=w, name="y")
    model = to_onnx_model(rewrite(net))
    (node,) = _nodes(model)
    b = {t.name: t for t in model.graph.initializer}[node.input[1]]
    assert list(b.dims) == [1, 1, 8]
    assert list(b.raw_data) == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]
    assert len(node.input) == 3  # no zero points: MatMulNBits' default 8 is int4's zero


@pytest.mark.parametrize("why,build", [
    ("block of 8 (MatMulNBits needs 16 or more)", lambda b: _weight(b, "int4", 8, 64, 8, False)),
    ("blocks along both axes", lambda b: b.constexpr_blockwise_shift_scale(
        data=b.const(RNG.integers(-8, 8, (8, 64)), dtype="int4"), scale=np.full((2, 2), 0.1, np.float32))),
    ("int8 data", lambda b: b.constexpr_blockwise_shift_scale(
        data=b.const(RNG.integers(-8, 8, (8, 64)), dtype="int8"), scale=np.full((8, 2), 0.1, np.float32))),
])
def test_other_weights_keep_their_form(why, build):
    @program(inputs={"x": TensorSpec((3, 64))})
    def net(b, x):
        return b.linear(x=x, weight=build(b), name="y")
    assert rewrite(net) is net, why


def test_a_weight_read_by_something_else_too_keeps_its_form():
    @program(inputs={"x": TensorSpec((3, 64)), "i": TensorSpec((2,), "int32")})
    def net(b, x, i):
        w = _weight(b, "int4", 8, 64, 32, False)
        return b.linear(x=x, weight=w, name="y"), b.gather(x=w, indices=i, name="rows")
    assert rewrite(net) is net
