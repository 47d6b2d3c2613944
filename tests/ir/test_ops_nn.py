"""linear, matmul, conv, conv_transpose, pooling, normalisation, softmax and
reductions: hand-checked values, type errors, and conv / conv_transpose / pooling
cross-checked against onnxruntime (one-node ONNX models) on random shapes."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from ir.ops import OpError
from tests.ir.op_harness import optional_module, out_types, requires, run

f32 = np.float32


def test_linear_hand_values_and_errors():
    x = np.array([[1.0, 2.0]], f32)
    w = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]], f32)  # [out=3, in=2]
    assert run("linear", x=x, weight=w).tolist() == [[1, 3, -2]]
    assert run("linear", x=x, weight=w, bias=np.array([1, 2, 3], f32)).tolist() == [[2, 5, 1]]
    with pytest.raises(OpError, match=r"^linear 'out': x has 64 features but weight \(32, 63\) expects 63"):
        out_types("linear", x=np.zeros((1, 64), f32), weight=np.zeros((32, 63), f32))
    with pytest.raises(OpError, match=r"bias \(2,\) must be \(3,\)"):
        out_types("linear", x=x, weight=w, bias=np.zeros(2, f32))


@pytest.mark.parametrize("xs, ys, tx, ty, expected", [
    ((2, 3), (3, 4), False, False, (2, 4)),
    ((3, 2), (3, 4), True, False, (2, 4)),
    ((2, 3), (4, 3), False, True, (2, 4)),
    ((5, 1, 2, 3), (4, 3, 6), False, False, (5, 4, 2, 6)),
    ((3,), (3, 4), False, False, (4,)),
    ((2, 3), (3,), False, False, (2,)),
    ((3,), (3,), True, True, ()),
    ((3,), (4, 3), False, True, (4,)),
])
def test_matmul_matches_numpy(xs, ys, tx, ty, expected):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=xs).astype(f32), rng.normal(size=ys).astype(f32)
    got = run("matmul", x=x, y=y, transpose_x=tx, transpose_y=ty)
    xt = np.swapaxes(x, -1, -2) if tx and x.ndim > 1 else x
    yt = np.swapaxes(y, -1, -2) if ty and y.ndim > 1 else y
    assert got.shape == expected
    np.testing.assert_allclose(got, np.matmul(xt, yt), rtol=1e-6)


def test_matmul_errors():
    with pytest.raises(OpError, match=r"inner dims differ: \(2, 3\) @ \(4, 5\)"):
        out_types("matmul", x=np.zeros((2, 3), f32), y=np.zeros((4, 5), f32))
    with pytest.raises(OpError, match="do not broadcast"):
        out_types("matmul", x=np.zeros((2, 2, 3), f32), y=np.zeros((3, 3, 4), f32))


def test_conv_1d_hand_values():
    x = np.array([[[1, 2, 3, 4, 5]]], f32)
    w = np.array([[[1, 0, -1]]], f32)
    assert run("conv", x=x, weight=w).tolist() == [[[-2, -2, -2]]]
    assert run("conv", x=x, weight=w, pad_type="same").tolist() == [[[-2, -2, -2, -2, 4]]]
    assert run("conv", x=x, weight=w, strides=[2], pad_type="custom", pad=[1, 1],
               bias=np.array([10], f32)).tolist() == [[[8, 8, 14]]]
    assert run("conv", x=x, weight=w, dilations=[2]).tolist() == [[[-4]]]


def test_conv_errors():
    x = np.zeros((1, 4, 5, 5), f32)
    with pytest.raises(OpError, match=r"x has 4 channels, weight \(2, 3, 1, 1\) with groups=1 expects 3"):
        out_types("conv", x=x, weight=np.zeros((2, 3, 1, 1), f32))
    with pytest.raises(OpError, match="3 output channels are not divisible by groups=2"):
        out_types("conv", x=x, weight=np.zeros((3, 2, 1, 1), f32), groups=2)
    with pytest.raises(OpError, match="unknown pad_type 'SAME'"):
        out_types("conv", x=x, weight=np.zeros((2, 4, 1, 1), f32), pad_type="SAME")
    with pytest.raises(OpError, match="strides"):
        out_types("conv", x=x, weight=np.zeros((2, 4, 1, 1), f32), strides=[1])
    with pytest.raises(OpError, match="kernel extent 7 exceeds"):
        out_types("conv", x=x, weight=np.zeros((2, 4, 7, 1), f32))


def test_conv_transpose_hand_values():
    x = np.array([[[1, 2]]], f32)
    w = np.array([[[1, 10, 100]]], f32)  # [C_in=1, C_out=1, K=3]
    assert run("conv_transpose", x=x, weight=w).tolist() == [[[1, 12, 120, 200]]]
    assert run("conv_transpose", x=x, weight=w, strides=[2]).tolist() == [[[1, 10, 102, 20, 200]]]
    assert run("conv_transpose", x=x, weight=w, pad_type="custom", pad=[1, 2]).tolist() == [[[12]]]
    # output_shape larger than the full extent appends zeros (output_padding)
    assert run("conv_transpose", x=x, weight=w, output_shape=[1, 1, 6]).tolist() == [[[1, 12, 120, 200, 0, 0]]]


# ---- cross-checks against onnxruntime ------------------------------------------

onnx = optional_module("onnx")
ort = optional_module("onnxruntime")
needs_onnxruntime = requires(onnx, ort, reason="onnx / onnxruntime not installed")
from onnx import TensorProto, helper  # noqa: E402

ONNX_AUTO_PAD = {"valid": "VALID", "same": "SAME_UPPER", "same_lower": "SAME_LOWER", "custom": "NOTSET"}


def onnx_run(op_type, inputs: dict, attrs: dict, n_out=1):
    names = list(inputs)
    node = helper.make_node(op_type, names, [f"y{i}" for i in range(n_out)], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(n_out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def onnx_pads(pad):  # MIL [b0, e0, b1, e1] -> ONNX [b0, b1, e0, e1]
    return list(pad[0::2]) + list(pad[1::2])


@st.composite
def conv_case(draw, transpose=False):
    nsp = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 2)) for _ in range(nsp)]
    dil = [draw(st.integers(1, 2)) for _ in range(nsp)]
    span = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
    sp = [draw(st.integers(s, s + 3)) for s in span]
    pad_type = draw(st.sampled_from(["valid", "same", "same_lower", "custom"]))
    pad = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.normal(size=(draw(st.integers(1, 2)), cin, *sp)).astype(f32)
    wshape = (cin, cout // groups, *k) if transpose else (cout, cin // groups, *k)
    w = rng.normal(size=wshape).astype(f32)
    b = rng.normal(size=cout).astype(f32) if draw(st.booleans()) else None
    return x, w, b, strides, dil, pad_type, pad, groups


@needs_onnxruntime
@given(conv_case())
def test_conv_equals_onnxruntime(case):
    x, w, b, strides, dil, pad_type, pad, groups = case
    kw = dict(strides=strides, dilations=dil, pad_type=pad_type, groups=groups)
    if pad_type == "custom":
        kw["pad"] = pad
    ours = run("conv", x=x, weight=w, bias=b, **kw)
    attrs = dict(strides=strides, dilations=dil, group=groups, auto_pad=ONNX_AUTO_PAD[pad_type])
    if pad_type == "custom":
        attrs["pads"] = onnx_pads(pad)
    elif pad_type != "valid" and max(dil) > 1:  # onnxruntime refuses SAME with dilation: spell it out
        pads = []
        for n, k, s, d in zip(x.shape[2:], w.shape[2:], strides, dil):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2] if pad_type == "same" else [total - total // 2, total // 2]
        attrs = dict(attrs, auto_pad="NOTSET", pads=onnx_pads(pads))
    ins = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
    np.testing.assert_allclose(ours, onnx_run("Conv", ins, attrs), rtol=1e-4, atol=1e-4)


@needs_onnxruntime
@given(conv_case(transpose=True), st.booleans())
def test_conv_transpose_equals_onnxruntime(case, use_output_shape):
    x, w, b, strides, dil, pad_type, pad, groups = case
    if pad_type in ("same", "same_lower"):
        pad_type = "valid"  # ONNX runtimes disagree on ConvTranspose auto_pad SAME; checked by hand below
    kw = dict(strides=strides, dilations=dil, pad_type=pad_type, groups=groups)
    attrs = dict(strides=strides, dilations=dil, group=groups)
    if pad_type == "custom":
        kw["pad"], attrs["pads"] = pad, onnx_pads(pad)
    full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(x.shape[2:], strides, w.shape[2:], dil)]
    if pad_type == "custom":
        full = [f - pad[2 * i] - pad[2 * i + 1] for i, f in enumerate(full)]
    if min(full) < 1:
        return
    if use_output_shape and pad_type == "valid":
        target = [max(f - i % 3, 1) for i, f in enumerate(full)]  # crop 0..2 per axis
        kw["output_shape"] = [x.shape[0], w.shape[1] * groups, *target]
        attrs["output_shape"] = target
    ours = run("conv_transpose", x=x, weight=w, bias=b, **kw)
    ins = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
    np.testing.assert_allclose(ours, onnx_run("ConvTranspose", ins, attrs), rtol=1e-4, atol=1e-4)


def test_conv_transpose_same_gives_input_times_stride():
    x = np.array([[[1, 2]]], f32)
    w = np.array([[[1, 10, 100]]], f32)
    # full [1, 10, 102, 20, 200] (stride 2) cropped to 4: total 1 -> same puts it at the end
    assert run("conv_transpose", x=x, weight=w, strides=[2], pad_type="same").tolist() == [[[1, 10, 102, 20]]]
    assert run("conv_transpose", x=x, weight=w, strides=[2], pad_type="same_lower").tolist() == [[[10, 102, 20, 200]]]
    # stride larger than the kernel extent: output still input * stride
    assert run("conv_transpose", x=x, weight=w[..., :1], strides=[3], pad_type="same").tolist() == [[[1, 0, 0, 2, 0, 0]]]


@needs_onnxruntime
@given(st.data())
def test_pooling_equals_onnxruntime(data):
    nsp = data.draw(st.integers(1, 2))
    k = [data.draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [data.draw(st.integers(1, 2)) for _ in range(nsp)]
    sp = [data.draw(st.integers(kk, kk + 3)) for kk in k]
    pad = [data.draw(st.integers(0, kk - 1)) for kk in k for _ in range(2)]
    pad_type = data.draw(st.sampled_from(["valid", "custom", "same"]))
    exclude = data.draw(st.booleans())
    if pad_type == "same":  # onnxruntime fails (negative pads) where the SAME total would be < 0
        assume(all((-(-n // s) - 1) * s + kk >= n for n, s, kk in zip(sp, strides, k)))
    x = np.random.default_rng(data.draw(st.integers(0, 99))).normal(size=(1, 2, *sp)).astype(f32)
    kw = dict(kernel_sizes=k, strides=strides, pad_type=pad_type)
    attrs = dict(kernel_shape=k, strides=strides, auto_pad=ONNX_AUTO_PAD[pad_type])
    if pad_type == "custom":
        kw["pad"], attrs["pads"] = pad, onnx_pads(pad)
    np.testing.assert_allclose(run("max_pool", x=x, **kw), onnx_run("MaxPool", {"x": x}, attrs), rtol=1e-6)
    avg = run("avg_pool", x=x, exclude_padding_from_average=exclude, **kw)
    ref = onnx_run("AveragePool", {"x": x}, dict(attrs, count_include_pad=int(not exclude)))
    np.testing.assert_allclose(avg, ref, rtol=1e-5, atol=1e-6)


def test_avg_pool_counts_padding_by_default():
    x = np.array([[[2.0, 4.0]]], f32)
    # window [pad, 2] and [4, pad]: MIL default averages over the whole window
    assert run("avg_pool", x=x, kernel_sizes=[2], pad_type="custom", pad=[1, 1]).tolist() == [[[1, 3, 2]]]
    assert run("avg_pool", x=x, kernel_sizes=[2], pad_type="custom", pad=[1, 1],
               exclude_padding_from_average=True).tolist() == [[[2, 3, 4]]]


# ---- normalisation, softmax, reductions ----------------------------------------

def test_softmax_hand_values():
    y = run("softmax", x=np.array([[0.0, np.log(3.0)], [1.0, 1.0]], f32), axis=0)
    np.testing.assert_allclose(y, [[1 / (1 + np.e), 3 / (3 + np.e)], [np.e / (1 + np.e), np.e / (3 + np.e)]], rtol=1e-6)
    y = run("softmax", x=np.array([1000.0, 1000.0], f32))  # stable at large values
    assert y.tolist() == [0.5, 0.5]


def test_layer_norm_and_batch_norm_hand_values():
    x = np.array([[1.0, 3.0], [4.0, 0.0]], f32)
    y = run("layer_norm", x=x, axes=[-1], gamma=np.array([1.0, 2.0], f32), beta=np.array([0.0, 1.0], f32),
            epsilon=f32(0.0))
    assert y.tolist() == [[-1.0, 3.0], [1.0, -1.0]]
    x = np.arange(8, dtype=f32).reshape(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    y = run("batch_norm", x=x, mean=np.array([1.0, 5.0], f32), variance=np.array([4.0, 1.0], f32),
            gamma=np.array([2.0, 1.0], f32), beta=np.array([0.0, 10.0], f32), epsilon=f32(0.0))
    assert y.reshape(2, 4).tolist() == [[-1, 0, 1, 2], [9, 10, 11, 12]]


@pytest.mark.parametrize("op_type, axes, keep, expected", [
    ("reduce_sum", [1], False, [3, 12]),
    ("reduce_mean", [0], True, [[1.5, 2.5, 3.5]]),
    ("reduce_max", None, False, 5),
    ("reduce_min", [-1], True, [[0], [3]]),
])
def test_reductions(op_type, axes, keep, expected):
    x = np.arange(6, dtype=f32).reshape(2, 3)
    kw = {"keep_dims": keep} if axes is None else {"axes": axes, "keep_dims": keep}
    got = run(op_type, x=x, **kw)
    assert got.tolist() == expected
    assert out_types(op_type, x=x, **kw)[0].shape == np.shape(expected)
