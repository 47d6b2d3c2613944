"""Every compressed-weight form exports to ONNX that onnxruntime runs and that
matches the interpreter; palettized files shrink with the bits."""
import os

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from ir.formats.onnx import export_onnx
from ir.formats.onnx.common import OnnxExportError
from ir.formats.onnx.exporter import to_onnx_model
from ir.interpret import evaluate

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(7)


def run_both(prog, tmp_path, opset=None, feeds=None, name="m.onnx"):
    feeds = feeds or {"x": RNG.standard_normal(prog.main.inputs[0].shape).astype(np.float32)}
    path = export_onnx(prog, tmp_path / name, opset=opset)
    got = ort.InferenceSession(str(path)).run(None, feeds)
    want = list(evaluate(prog, feeds).values())
    for g, e in zip(got, want):
        # float sums in another order: the tolerance scales with the outputs' magnitude
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(e).max())))
    return path


def linear_with(weight_fn, d_in=16, d_out=8, opset="iOS18"):
    @program(inputs={"x": TensorSpec((3, d_in))}, opset=opset)
    def net(b, x):
        return b.linear(x=x, weight=weight_fn(b), name="y")
    return net


def node_types(prog, opset=None):
    return [n.op_type for n in to_onnx_model(prog, opset).graph.node]


@pytest.mark.parametrize("dt,axis", [("int8", 0), ("uint8", None), ("int4", 1), ("uint4", 0)])
def test_affine_dequantize_is_dequantize_linear(tmp_path, dt, axis):
    lo, hi = (-8, 8) if dt == "int4" else (0, 16) if dt == "uint4" else (-128, 128) if dt == "int8" else (0, 256)
    q = RNG.integers(lo, hi, (8, 16))
    n = 1 if axis is None else q.shape[axis]
    scale = (RNG.random(n).astype(np.float32) + 0.5) * 0.01
    zp = RNG.integers(lo, hi, n)
    if axis is None:
        scale, zp = scale[0], zp[0]

    def w(b):
        return b.constexpr_affine_dequantize(quantized_data=b.const(q, dtype=dt), zero_point=b.const(zp, dtype=dt),
                                             scale=scale, axis=axis if axis is not None else 0)
    prog = linear_with(w)
    path = run_both(prog, tmp_path)
    assert "DequantizeLinear" in node_types(prog)
    if dt in ("int4", "uint4"):  # packed two per byte at opset 21
        import onnx
        init = next(t for t in onnx.load(path).graph.initializer if len(t.dims) == 2 and t.dims[1] == 16)
        assert len(init.raw_data) == 8 * 16 // 2


@pytest.mark.parametrize("scale_shape,offset,opset", [
    ((8, 2), True, None),      # per-block along axis 1 -> DequantizeLinear block_size
    ((8, 1), True, None),      # per-channel -> DequantizeLinear axis 0
    ((1, 1), False, None),     # per-tensor
    ((2, 4), True, None),      # blocks on two axes -> Cast/Sub/Mul by hand
    ((8, 2), True, 17),        # no block_size before opset 21 -> by hand
])
def test_blockwise_shift_scale(tmp_path, scale_shape, offset, opset):
    q = RNG.integers(-8, 8, (8, 16))
    scale = (RNG.random(scale_shape).astype(np.float32) + 0.5) * 0.1
    off = RNG.integers(-2, 3, scale_shape)

    def w(b):
        return b.constexpr_blockwise_shift_scale(data=b.const(q, dtype="int4"), scale=scale,
                                                 offset=b.const(off, dtype="int4") if offset else None)
    prog = linear_with(w)
    run_both(prog, tmp_path, opset=opset)
    types = node_types(prog, opset)
    expect_dq = scale_shape != (2, 4) and opset is None
    assert ("DequantizeLinear" in types) == expect_dq


def test_blockwise_fp16_scale_at_old_opset(tmp_path):
    q = RNG.integers(-128, 128, (8, 16))
    scale = (RNG.random((8, 1)) + 0.5).astype(np.float16) * np.float16(0.01)

    @program(inputs={"x": TensorSpec((3, 16), "fp16")})
    def net(b, x):
        w = b.constexpr_blockwise_shift_scale(data=b.const(q, dtype="int8"), scale=scale)
        return b.linear(x=x, weight=w, name="y")
    feeds = {"x": RNG.standard_normal((3, 16)).astype(np.float16)}
    path = export_onnx(net, tmp_path / "m.onnx", opset=17)
    got = ort.InferenceSession(str(path)).run(None, feeds)[0]
    np.testing.assert_allclose(got, evaluate(net, feeds)["y"], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_lut_ios16_every_width(tmp_path, nbits):
    k = 1 << nbits
    lut = np.sort(RNG.standard_normal(k).astype(np.float32))
    idx = RNG.integers(0, k, 8 * 16)
    dt = f"uint{nbits}" if nbits < 8 else "uint8"

    def w(b):
        return b.constexpr_lut_to_dense(indices=b.const(idx, dtype=dt), lut=lut, shape=np.array([8, 16], np.uint32))
    prog = linear_with(w, opset="iOS16")
    run_both(prog, tmp_path)
    run_both(prog, tmp_path, opset=13, name="old.onnx")  # Mod instead of BitwiseAnd


def test_lut_ios18_three_bits_one_table(tmp_path):
    idx = RNG.integers(0, 8, (8, 16))
    lut = RNG.standard_normal((1, 1, 8, 1)).astype(np.float32)
    run_both(linear_with(lambda b: b.constexpr_lut_to_dense(indices=b.const(idx, dtype="uint3"), lut=lut)), tmp_path)


def test_lut_ios18_per_block(tmp_path):
    idx = RNG.integers(0, 4, (8, 16))
    lut = RNG.standard_normal((4, 2, 4, 1)).astype(np.float32)  # 4 x 2 blocks, each its own 2-bit LUT

    def w(b):
        return b.constexpr_lut_to_dense(indices=b.const(idx, dtype="uint2"), lut=lut)
    prog = linear_with(w)
    run_both(prog, tmp_path)
    assert "Gather" in node_types(prog)


def test_lut_of_quantized_lut(tmp_path):
    """iOS18 chain: an int8 LUT dequantized by blockwise_shift_scale, then looked up."""
    idx = RNG.integers(0, 16, (8, 16))
    qlut = RNG.integers(-128, 128, (8, 1, 16, 1))

    def w(b):
        lut = b.constexpr_blockwise_shift_scale(data=b.const(qlut, dtype="int8"),
                                                scale=np.full((8, 1, 1, 1), 0.02, np.float32))
        return b.constexpr_lut_to_dense(indices=b.const(idx, dtype="uint4"), lut=lut)
    run_both(linear_with(w), tmp_path)


def test_sparse_to_dense(tmp_path):
    dense = RNG.standard_normal((8, 16)).astype(np.float32)
    mask = RNG.random((8, 16)) < 0.3
    nz = dense[mask]

    def w(b):
        return b.constexpr_sparse_to_dense(nonzero_data=nz, mask=b.const(mask.astype(np.uint8), dtype="uint1"))
    prog = linear_with(w)
    run_both(prog, tmp_path)
    assert "ScatterND" in node_types(prog)


def test_sparse_palettized_chain(tmp_path):
    """iOS18 lut_to_sparse -> sparse_to_dense: mask and values reach ONNX; numbers agree."""
    mask = (RNG.random((8, 16)) < 0.5).astype(np.uint8)
    idx = RNG.integers(0, 4, int(mask.sum()))
    lut = RNG.standard_normal((1, 1, 4, 1)).astype(np.float32)

    def w(b):
        m, vals = b.constexpr_lut_to_sparse(indices_mask=b.const(mask, dtype="uint1"),
                                            indices_nonzero_data=b.const(idx, dtype="uint2"), lut=lut)
        return b.constexpr_sparse_to_dense(nonzero_data=vals, mask=m)
    run_both(linear_with(w), tmp_path)


@pytest.mark.parametrize("lut_blocks,vs,axis", [
    ((1, 1), 2, 1), ((1, 1), 4, 0), ((4, 1), 2, 1), ((2, 2), 2, 0), ((2, 4), 1, None)])
def test_lut_ios18_vectors(tmp_path, lut_blocks, vs, axis):
    """Vector palettization: each index yields vs values along vector_axis, read from its block's LUT."""
    shape = [8, 16]
    if axis is not None:
        shape[axis] //= vs
    idx = RNG.integers(0, 4, shape)
    lut = RNG.standard_normal(lut_blocks + (4, vs)).astype(np.float32)

    def w(b):
        return b.constexpr_lut_to_dense(indices=b.const(idx, dtype="uint2"), lut=lut, vector_axis=axis)
    prog = linear_with(w)
    run_both(prog, tmp_path)
    assert "DequantizeLinear" not in node_types(prog) and "Gather" in node_types(prog)


@pytest.mark.parametrize("lut_blocks,vs,axis", [
    ((1, 1), 1, None), ((4, 1), 1, None), ((1, 1), 2, 1), ((1, 1), 2, 0), ((2, 2), 2, 0)])
def test_lut_to_sparse_forms(tmp_path, lut_blocks, vs, axis):
    shape = [8, 16]
    if axis is not None:
        shape[axis] //= vs
    mask = (RNG.random(shape) < 0.4).astype(np.uint8)
    idx = RNG.integers(0, 16, int(mask.sum()))
    lut = RNG.standard_normal(lut_blocks + (16, vs)).astype(np.float32)

    def w(b):
        m, vals = b.constexpr_lut_to_sparse(indices_mask=b.const(mask, dtype="uint1"),
                                            indices_nonzero_data=b.const(idx, dtype="uint4"), lut=lut,
                                            vector_axis=axis)
        return b.constexpr_sparse_to_dense(nonzero_data=vals, mask=m)
    run_both(linear_with(w), tmp_path)


@pytest.mark.parametrize("scale_shape,offset,dt", [
    ((1, 1), True, "int8"), ((1, 1), False, "int4"), ((8, 1), True, "int8"), ((2, 4), True, "int4"),
    ((8, 2), False, "uint4")])
def test_sparse_blockwise_shift_scale(tmp_path, scale_shape, offset, dt):
    mask = (RNG.random((8, 16)) < 0.5).astype(np.uint8)
    lo, hi = {"int8": (-128, 128), "int4": (-8, 8), "uint4": (0, 16)}[dt]
    data = RNG.integers(lo, hi, int(mask.sum()))
    scale = (RNG.random(scale_shape).astype(np.float32) + 0.5) * 0.1
    off = RNG.integers(lo, hi, scale_shape)

    def w(b):
        m, vals = b.constexpr_sparse_blockwise_shift_scale(
            data_mask=b.const(mask, dtype="uint1"), nonzero_data=b.const(data, dtype=dt), scale=scale,
            offset=b.const(off, dtype=dt) if offset else None)
        return b.constexpr_sparse_to_dense(nonzero_data=vals, mask=m)
    prog = linear_with(w)
    run_both(prog, tmp_path)
    assert ("DequantizeLinear" in node_types(prog)) == (scale_shape == (1, 1))


def _initializer_bytes(path) -> int:
    import onnx
    return sum(len(t.raw_data) for t in onnx.load(path).graph.initializer)


def test_joint_forms_file_size_follows_bits(tmp_path):
    """Sparse + palettized (4-bit indices, 1-bit mask) and sparse + int8 files hold about
    the compressed bits, not the dense or nonzero fp32 values."""
    d_out, d_in = 256, 512
    mask = (RNG.random((d_out, d_in)) < 0.5).astype(np.uint8)
    nnz = int(mask.sum())
    lut = RNG.standard_normal((1, 1, 16, 1)).astype(np.float32)
    pal_idx = RNG.integers(0, 16, nnz)
    vlut = RNG.standard_normal((4, 1, 16, 2)).astype(np.float32)  # 4 row blocks, vectors of 2
    vmask = mask[:, : d_in // 2]
    vidx = RNG.integers(0, 16, int(vmask.sum()))
    q = RNG.integers(-128, 128, nnz)

    def dense(pair):
        def weight(b):
            m, vals = pair(b)
            return b.constexpr_sparse_to_dense(mask=m, nonzero_data=vals)
        return weight

    def net(weight_fn, opset="iOS18"):
        @program(inputs={"x": TensorSpec((1, d_in))}, opset=opset)
        def prog(b, x):
            return b.linear(x=x, weight=weight_fn(b), name="y")
        return prog
    sparse_pal = net(dense(lambda b: b.constexpr_lut_to_sparse(
        indices_mask=b.const(mask, dtype="uint1"), indices_nonzero_data=b.const(pal_idx, dtype="uint4"), lut=lut)))
    vector_sparse_pal = net(dense(lambda b: b.constexpr_lut_to_sparse(
        indices_mask=b.const(vmask, dtype="uint1"), indices_nonzero_data=b.const(vidx, dtype="uint4"),
        lut=vlut, vector_axis=1)))
    sparse_int8 = net(dense(lambda b: b.constexpr_sparse_blockwise_shift_scale(
        data_mask=b.const(mask, dtype="uint1"), nonzero_data=b.const(q, dtype="int8"),
        scale=np.full((d_out, 1), 0.01, np.float32))))
    dense_bits = d_out * d_in * 32
    for prog, bits_per_weight in ((sparse_pal, 1 + 0.5 * 4), (vector_sparse_pal, (1 + 0.5 * 4) / 2),
                                  (sparse_int8, 1 + 0.5 * 8)):
        size = _initializer_bytes(run_both(prog, tmp_path)) * 8
        assert size / dense_bits == pytest.approx(bits_per_weight / 32, rel=0.08)


def test_palettized_file_size_follows_bits(tmp_path):
    d_out, d_in = 256, 512
    dense = RNG.standard_normal((d_out, d_in)).astype(np.float32)

    @program(inputs={"x": TensorSpec((1, d_in))})
    def fp32(b, x):
        return b.linear(x=x, weight=dense, name="y")
    for nbits in (2, 4):
        lut = np.linspace(-1, 1, 1 << nbits).astype(np.float32)
        idx = RNG.integers(0, 1 << nbits, d_out * d_in)

        @program(inputs={"x": TensorSpec((1, d_in))}, opset="iOS16")
        def pal(b, x):
            w = b.constexpr_lut_to_dense(indices=b.const(idx, dtype=f"uint{nbits}"), lut=lut,
                                         shape=np.array([d_out, d_in], np.uint32))
            return b.linear(x=x, weight=w, name="y")
        big = os.path.getsize(run_both(fp32, tmp_path, name="fp32.onnx"))
        small = os.path.getsize(run_both(pal, tmp_path, name=f"pal{nbits}.onnx"))
        # the weights' bits, plus a fixed few KB (graph, import record)
        assert small / big == pytest.approx(nbits / 32, rel=0.05, abs=4096 / big)


def test_quantize_dequantize_activations(tmp_path):
    @program(inputs={"x": TensorSpec((4, 6))})
    def net(b, x):
        q = b.quantize(input=x, scale=np.float32(0.05), zero_point=np.int8(3), output_dtype="int8")
        dq = b.dequantize(input=q, scale=np.float32(0.05), zero_point=np.int8(3))
        q2 = b.quantize(input=dq, scale=np.full(6, 0.1, np.float32), axis=1, output_dtype="uint8")
        return b.dequantize(input=q2, scale=np.full(6, 0.1, np.float32), axis=1, name="y")
    run_both(net, tmp_path)


def test_layer_ops_from_the_builder(tmp_path):
    """Core ops that ONNX import never produces (silu, squeeze_mask slices, argmax) still export."""
    @program(inputs={"x": TensorSpec((4, 6, 5))})
    def net(b, x):
        s = b.silu(x=x)
        sl = b.slice_by_index(x=s, begin=[1, 0, 0], end=[0, 6, 4], stride=[1, 2, 1],
                              begin_mask=[False, True, True], end_mask=[True, False, False],
                              squeeze_mask=[True, False, False], name="sl")
        y = b.select(cond=b.cast(x=sl, dtype="bool"), a=sl, b=b.tile(x=sl, reps=[1, 1]), name="y")
        return y, b.reduce_argmax(x=x, axis=-1, keep_dims=False, name="am")
    run_both(net, tmp_path)


@pytest.mark.parametrize("op_type", ["equal", "not_equal", "greater", "greater_equal", "less", "less_equal"])
def test_comparisons_export_and_run_in_onnxruntime(op_type, tmp_path):
    """The comparisons a Core ML model brings (coremltools writes greater_equal for attention
    masks) export to ONNX's Equal / Not / Greater / GreaterOrEqual / Less / LessOrEqual."""
    @program(inputs={"x": TensorSpec((3, 4))})
    def net(b, x):
        c = getattr(b, op_type)(x=b.floor(x=x), y=np.float32(0.0))
        return b.select(cond=c, a=x, b=b.neg(x=x), name="y")
    run_both(net, tmp_path)


def test_a_transpose_perm_counting_from_the_end_exports(tmp_path):
    """coremltools writes perms like [0, 2, -3, -1]; ONNX's Transpose takes only non-negative ones."""
    @program(inputs={"x": TensorSpec((4, 6, 5, 2))})
    def net(b, x):
        return b.transpose(x=x, perm=[0, 2, -3, -1], name="y")  # [0, 2, 1, 3]
    x = RNG.standard_normal((4, 6, 5, 2)).astype(np.float32)
    run_both(net, tmp_path, feeds={"x": x})
    assert evaluate(net, {"x": x})["y"].shape == (4, 5, 6, 2)


def test_or_equal_comparisons_before_opset_12(tmp_path):
    """GreaterOrEqual / LessOrEqual came with opset 12: integers are written as Not(Less) /
    Not(Greater) before it; floats are refused (the negation differs on NaN)."""
    @program(inputs={"x": TensorSpec((2, 3), "int32")})
    def ints(b, x):
        return b.cast(x=b.greater_equal(x=x, y=np.int32(1)), dtype="int32", name="ge"), \
            b.cast(x=b.less_equal(x=x, y=np.int32(1)), dtype="int32", name="le")
    feeds = {"x": np.array([[0, 1, 2], [3, -1, 1]], np.int32)}
    run_both(ints, tmp_path, opset=11, feeds=feeds)
    assert "GreaterOrEqual" not in node_types(ints, 11) and "GreaterOrEqual" in node_types(ints, 12)

    @program(inputs={"x": TensorSpec((2, 3))})
    def floats(b, x):
        return b.cast(x=b.greater_equal(x=x, y=np.float32(0.0)), dtype="fp32", name="ge")
    with pytest.raises(OnnxExportError, match="needs opset 12"):
        to_onnx_model(floats, 11)


def test_sigmoid_hard_and_thresholded_relu_export(tmp_path):
    """torch's hardswish as coremltools writes it: x * sigmoid_hard(thresholded_relu(x, -3), 1/6, 1/2);
    the threshold itself must pass (ONNX's ThresholdedRelu would drop it)."""
    @program(inputs={"x": TensorSpec((2, 4))})
    def net(b, x):
        t = b.thresholded_relu(x=x, alpha=np.float32(-3.0))
        return b.mul(x=x, y=b.sigmoid_hard(x=t, alpha=np.float32(1 / 6), beta=np.float32(0.5)), name="y")
    feeds = {"x": np.array([[-4.0, -3.0, -1.0, 0.0], [1.0, 2.5, 3.0, 5.0]], np.float32)}
    run_both(net, tmp_path, feeds=feeds)
