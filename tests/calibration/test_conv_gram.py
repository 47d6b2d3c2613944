"""The patch Gram of conv weights (calibrate, patches.py) and the calibrated proxy on it: a hand
example, and tr(dW H dW^T) against the conv's own output error (the interpreter's conv, and
onnxruntime's Conv for the ONNX forms) over strides, dilations, pads and groups."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ir.builder import TensorSpec, program
from ir.interpret import evaluate
from pipeline.calibration import calibration_data
from stages.calibration import calibrate, collect
from stages.calibration.patches import patch_rows, sample_rows, unfold
from stages.compression.calibrated import proxy_distortion

F32 = np.float32


def conv_model(w, x_shape, **conv):
    @program(inputs={"x": TensorSpec(x_shape, "fp32")})
    def net(b, x):
        return b.conv(x=x, weight=b.const(w.astype(F32), name="w"), name="y", **conv)
    return net


def conv_of(w, x, **conv):
    """The interpreter's conv of x by w (no bias): the oracle the Gram must agree with."""
    out = evaluate(conv_model(w, x.shape, **conv), {"x": x.astype(F32)})
    return np.asarray(next(iter(out.values())), np.float64)


def stats_of(prog, data, name="w"):
    return calibrate(data=calibration_data(data), evaluator="interpreter").run(prog).program.attrs["calibration"][name]


def test_hand_example_one_dim_pad_and_stride():
    # x = [1, 2, 3], kernel 2, one zero of padding at the start: the patches are [0, 1], [1, 2],
    # [2, 3] (stride 1), H = [[0+1+4, 0+2+6], [0+2+6, 1+4+9]] / 3; stride 2: [0, 1], [2, 3]
    x = np.array([[[1.0, 2.0, 3.0]]], F32)
    w = np.ones((1, 1, 2), F32)
    one = stats_of(conv_model(w, (1, 1, 3), pad_type="custom", pad=np.array([1, 0], np.int32)), {"x": x})
    assert np.allclose(one["gram"], np.array([[5, 8], [8, 14]]) / 3)
    assert np.allclose(one["input_moment"], [14 / 3]) and one["count"] == 3
    two = stats_of(conv_model(w, (1, 1, 3), pad_type="custom", pad=np.array([1, 0], np.int32),
                              strides=np.array([2], np.int32)), {"x": x})
    assert np.allclose(two["gram"], np.array([[4, 6], [6, 10]]) / 2)


def test_depthwise_gram_is_one_per_channel():
    # two channels, kernel 2, valid: channel 0 [1, 2, 3] -> patches [1, 2], [2, 3];
    # channel 1 [0, 1, -1] -> [0, 1], [1, -1]
    x = np.array([[[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]], F32)
    s = stats_of(conv_model(np.ones((2, 1, 2), F32), (1, 2, 3), groups=np.int32(2)), {"x": x})
    assert "gram" not in s
    assert np.allclose(s["group_gram"], [np.array([[5, 8], [8, 13]]) / 2, np.array([[1, -1], [-1, 2]]) / 2])


def _case(draw):
    nsp = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 4]))
    cg = draw(st.sampled_from([1, 2])) if groups > 1 else draw(st.sampled_from([1, 3]))
    cout = groups * draw(st.sampled_from([1, 2]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 2)) for _ in range(nsp)]
    dil = [draw(st.integers(1, 2)) for _ in range(nsp)]
    pad_type = draw(st.sampled_from(["valid", "same", "same_lower", "custom"]))
    pad = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    spatial = [(k - 1) * d + 1 + draw(st.integers(0, 4)) for k, d in zip(kernel, dil)]
    return nsp, groups, cg, cout, kernel, strides, dil, pad_type, pad, spatial


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_proxy_is_the_convs_output_error_energy(data):
    nsp, groups, cg, cout, kernel, strides, dil, pad_type, pad, spatial = _case(data.draw)
    seed = data.draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    conv = dict(strides=np.array(strides, np.int32), dilations=np.array(dil, np.int32), pad_type=pad_type,
                pad=np.array(pad, np.int32), groups=np.int32(groups))
    x_shape = (2, groups * cg, *spatial)
    w = rng.normal(size=(cout, cg, *kernel))
    batches = rng.normal(size=(3, *x_shape)).astype(F32)  # three batches of two samples
    stats = stats_of(conv_model(w, x_shape, **conv), {"x": batches.reshape(-1, *x_shape[1:])})
    dw = rng.normal(size=w.shape)
    # the conv is linear in its weight: the output error of dW is conv(x, dW)
    outs = [conv_of(dw, b, **conv) for b in batches]
    rows = sum(o.shape[0] * int(np.prod(o.shape[2:])) for o in outs)
    energy = sum(float(np.sum(o * o)) for o in outs) / rows
    assert proxy_distortion(dw, stats, 1, False) == pytest.approx(energy, rel=1e-5)
    assert ("gram" in stats) == (groups == 1) and ("group_gram" in stats) == (groups > 1)


def test_without_the_gram_the_grouped_proxy_uses_each_groups_channel_moments():
    rng = np.random.default_rng(0)
    dw = rng.normal(size=(4, 1, 3))  # depthwise over 4 channels
    m = np.array([1.0, 2.0, 3.0, 4.0])
    want = float(np.sum(m * np.sum(dw[:, 0, :] ** 2, axis=1)))
    assert proxy_distortion(dw, {"input_moment": m}, 1, False) == pytest.approx(want)
    dw2 = rng.normal(size=(2, 4, 3))  # groups 1: every output channel reads every channel
    want2 = float(np.sum(m * np.sum(dw2 ** 2, axis=(0, 2))))
    assert proxy_distortion(dw2, {"input_moment": m}, 1, False) == pytest.approx(want2)


def _onnx_conv_model(w, x_shape, **attrs):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                              [numpy_helper.from_array(w.astype(F32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("attrs", [dict(auto_pad="SAME_UPPER", strides=[2, 1]),
                                   dict(auto_pad="SAME_LOWER", strides=[2, 2]),
                                   dict(pads=[1, 0, 2, 1], strides=[1, 2], dilations=[2, 1], group=2)])
def test_onnx_conv_geometry_matches_onnxruntime(attrs):
    import onnxruntime as ort

    from ir.formats.onnx import import_onnx
    from stages.calibration.patches import geometry

    rng = np.random.default_rng(3)
    groups = attrs.get("group", 1)
    w = rng.normal(size=(4, 4 // groups, 3, 2))
    x_shape = (2, 4, 7, 6)
    prog = import_onnx(_onnx_conv_model(w, x_shape, **attrs))
    x = rng.normal(size=x_shape).astype(F32)
    cal = calibrate(data=calibration_data({"x": x})).run(prog).program
    stats = next(iter(cal.attrs["calibration"].values()))
    dw = rng.normal(size=w.shape)
    sess = ort.InferenceSession(_onnx_conv_model(dw, x_shape, **attrs).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0].astype(np.float64)
    energy = float(np.sum(y * y)) / (y.shape[0] * int(np.prod(y.shape[2:])))
    assert proxy_distortion(dw, stats, 1, False) == pytest.approx(energy, rel=1e-5)
    # a Conv kept as the foreign onnx.Conv (an input of unknown rank) reads its attributes the same way
    core = next(op for op in prog.main.ops if op.op_type == "conv")
    foreign = SimpleNamespace(op_type="onnx.Conv", attrs={"kernel_shape": (3, 2), **attrs})
    assert geometry(foreign, w.shape) == geometry(core, w.shape)


def test_gram_too_large_keeps_only_the_moments(monkeypatch):
    monkeypatch.setattr(collect, "CONV_GRAM_MAX", 8)  # D = 3 * 3 * 3 = 27 > 8
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5, 5)).astype(F32)
    s = stats_of(conv_model(rng.normal(size=(4, 3, 3, 3)), (2, 3, 5, 5)), {"x": x})
    assert "gram" not in s and "group_gram" not in s
    assert np.allclose(s["input_moment"], np.mean(x.astype(np.float64) ** 2, axis=(0, 2, 3)), rtol=1e-6)


def test_many_patch_rows_are_subsampled_deterministically(monkeypatch):
    monkeypatch.setattr(collect._Sums, "PATCH_ROWS", 7)
    monkeypatch.setattr(collect._Sums, "PATCH_MACS", 0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 6, 5)).astype(F32)
    w = rng.normal(size=(3, 2, 2, 2))
    prog = conv_model(w, x.shape)
    s = stats_of(prog, {"x": x})
    assert s["count"] == 2 * 6 * 5  # the moments see every pixel
    from stages.calibration.patches import ConvGeometry

    g = ConvGeometry((2, 2), (1, 1), (1, 1), "valid", (0, 0, 0, 0), 1)
    total = patch_rows(x.shape, g)
    assert total == 2 * 5 * 4
    chosen = sample_rows(total, 7, 1)  # the first batch's rows
    p = unfold(x, g, chosen)[0].astype(np.float64)
    assert p.shape == (7, 8)
    assert np.allclose(s["gram"], p.T @ p / 7, rtol=1e-6)
    assert np.array_equal(stats_of(prog, {"x": x})["gram"], s["gram"])
