"""GPTQ on conv weights: against the direct sequential least-squares solution of the conv's own
output error (its H built from the interpreter's conv on one-hot kernels, not from im2col),
brute force on a tiny case, the affine stage's grid and block layout, the LUT form, the
contracts under verify="each", purity."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline import Pipeline
from pipeline.calibration import calibration_data
from stages.calibration import calibrate
from stages.compression import (affine_quantize_weights, gptq_palettize_weights, gptq_quantize_weights,
                                palettize_weights)
from tests.calibration.test_conv_gram import F32, conv_model, conv_of
from tests.stages.compression.helpers import decompressed as weight_value


def _const(prog, name):
    return next(op.outputs[0].val for op in prog.main.ops if op.outputs and op.outputs[0].name == name)


def _inputs(shape, batches=4, seed=5):
    """Correlated neighbouring pixels and channels (a smoothed random image): what GPTQ exploits."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches * shape[0], *shape[1:]))
    x = x + np.roll(x, 1, axis=-1) + np.roll(x, 1, axis=-2) + 0.5 * np.roll(x, 1, axis=1)
    return x.astype(F32)


def _conv_hessian(w_shape, xs, groups=1, **conv):
    """H per group from the conv itself: the output of each one-hot kernel is one column of the
    map vec(row of W) -> outputs; H = A^T A / (output positions)."""
    cout, cg = w_shape[:2]
    d = int(np.prod(w_shape[1:]))
    per = cout // groups
    hs = []
    for j in range(groups):
        cols = []
        for i in range(d):
            w = np.zeros(w_shape)
            w[j * per].flat[i] = 1.0  # output channel j * per (first of group j), input column i
            cols.append(conv_of(w, xs, groups=np.int32(groups), **conv)[:, j * per].reshape(-1))
        a = np.stack(cols, axis=1)
        hs.append(a.T @ a / a.shape[0])
    return hs


def _sequential_least_squares(w, h, scale, lo, hi):
    """GPTQ's definition solved directly (as tests/compression_numeric/test_gptq.py): round column
    j of the current weight to its row's grid, set the later columns to the least-squares
    optimum given the codes so far, from the original weight every time."""
    rows, cols = w.shape
    q = np.zeros_like(w)
    v = w.copy()
    for j in range(cols):
        q[:, j] = np.clip(np.rint(v[:, j] / scale), lo, hi) * scale
        Q, Fr = np.arange(j + 1), np.arange(j + 1, cols)
        if len(Fr):
            d = w[:, Q] - q[:, Q]
            v[:, Fr] = w[:, Fr] + np.linalg.solve(h[np.ix_(Fr, Fr)], h[np.ix_(Fr, Q)] @ d.T).T
    return np.rint(q / scale[:, None])


@pytest.mark.parametrize("groups", [1, 2])
def test_codes_are_the_sequential_least_squares_solution_of_the_convs_error(groups):
    rng = np.random.default_rng(0)
    conv = dict(strides=np.array([2, 1], np.int32), pad_type="custom", pad=np.array([1, 0, 1, 1], np.int32),
                dilations=np.array([1, 2], np.int32))
    shape = (4, 3 if groups == 1 else 2, 2, 2)
    cin = shape[1] * groups
    w = rng.normal(size=shape).astype(F32)
    xs = _inputs((2, cin, 6, 6))
    prog = conv_model(w, (2, cin, 6, 6), groups=np.int32(groups), **conv)
    cal = calibrate(data=calibration_data({"x": xs})).run(prog).program
    out = gptq_quantize_weights(dtype="int4", granularity="per_channel", damp=0.0, act_order=False,
                                op_selector=_every).run(cal)
    assert out.stats["weights"]["w"]["method"] == "gptq", out.stats["weights"]["w"]
    codes = _const(out.program, "w_q").reshape(shape[0], -1).astype(np.int64)
    scale = _const(out.program, "w_scale").reshape(-1).astype(np.float64)
    hs = _conv_hessian(shape, xs, groups, **conv)
    m = w.reshape(shape[0], -1).astype(np.float64)
    per = shape[0] // groups
    for j, h in enumerate(hs):
        rows = slice(j * per, (j + 1) * per)
        ref = _sequential_least_squares(m[rows], h, scale[rows], -7, 7)
        assert np.array_equal(codes[rows], ref), f"group {j}"


def test_one_output_three_taps_against_brute_force():
    # a 1x3 kernel on one channel: the last tap's code is optimal given the others, the whole
    # result never worse than rounding, never better than the best of all code triples
    rng = np.random.default_rng(4)
    for seed in range(6):
        w = rng.uniform(-1, 1, size=(1, 1, 1, 3)).astype(F32)
        xs = _inputs((2, 1, 1, 9), seed=seed)
        prog = conv_model(w, (2, 1, 1, 9))
        cal = calibrate(data=calibration_data({"x": xs})).run(prog).program
        out = gptq_quantize_weights(dtype="int4", granularity="per_channel", damp=0.0, act_order=False,
                                    op_selector=_every).run(cal)
        s = float(_const(out.program, "w_scale").reshape(-1)[0])
        codes = _const(out.program, "w_q").reshape(-1).astype(np.int64)

        h = _conv_hessian(w.shape, xs)[0]  # the conv's own output error, a quadratic form in the weight

        def loss(c):
            d = w.reshape(-1).astype(np.float64) - np.asarray(c, np.float64) * s
            return float(d @ h @ d)

        last = min(range(-7, 8), key=lambda c: loss([*codes[:2], c]))
        assert codes[2] == last
        assert loss(codes) <= loss(np.clip(np.rint(w.reshape(-1) / s), -7, 7)) * (1 + 1e-9)
        assert loss(codes) >= min(loss(c) for c in itertools.product(range(-7, 8), repeat=3)) * (1 - 1e-9)


def _every(op):
    return True  # the depthwise weight (288 elements) is below the default size rule


def _conv_net(groups=1, seed=1):
    rng = np.random.default_rng(seed)
    cin = 16 if groups == 1 else groups
    shape = (32, cin // groups, 3, 3)
    w = (rng.normal(size=shape) * 0.1).astype(F32)
    return conv_model(w, (2, cin, 8, 8), groups=np.int32(groups), pad_type="same"), w, cin


@pytest.mark.parametrize("groups", [1, 16])  # 16: depthwise with a channel multiplier of 2
def test_affine_grid_and_blocks_are_the_affine_stages_and_the_output_error_drops(groups):
    prog, w, cin = _conv_net(groups)
    xs = _inputs((2, cin, 8, 8))
    cal = calibrate(data=calibration_data({"x": xs})).run(prog).program
    before, held = cal.digest, weight_value(cal, "w").copy()
    opts = dict(dtype="int4", granularity="per_block", block_size=8, op_selector=_every)
    trace = Pipeline([gptq_quantize_weights(**opts)]).run(cal, verify="each")
    got = trace.result
    assert trace.steps[-1].verification is not None and trace.steps[-1].changed
    rtn = affine_quantize_weights(**opts).run(cal).program
    assert cal.digest == before and np.array_equal(weight_value(cal, "w"), held)  # the input is untouched
    scale = _const(got, "w_scale")
    assert np.array_equal(scale, _const(rtn, "w_scale"))
    # blocks of 8 input channels x the whole kernel (a depthwise weight has one input channel: per channel)
    assert scale.shape == ((32, 2, 1, 1) if groups == 1 else (32, 1, 1, 1))
    codes = _const(got, "w_q")
    assert codes.shape == w.shape and codes.min() >= -8 and codes.max() <= 7
    st = trace.steps[-1].stats["weights"]["w"]
    assert st["output_error"] < st["output_error_data_free"]

    def out_err(p):
        d = weight_value(p, "w").astype(np.float64) - w
        y = conv_of(d, xs, groups=np.int32(groups), pad_type="same")
        return float(np.sum(y * y))

    assert out_err(got) < 0.95 * out_err(rtn)
    energy = float(np.sum(conv_of(w.astype(np.float64), xs, groups=np.int32(groups), pad_type="same") ** 2))
    assert st["output_error"] == pytest.approx(out_err(got) / energy, rel=1e-4)


@pytest.mark.parametrize("groups", [1, 16])
def test_lut_form_on_conv_weights(groups):
    prog, w, cin = _conv_net(groups)
    xs = _inputs((2, cin, 8, 8))
    cal = calibrate(data=calibration_data({"x": xs})).run(prog).program
    before, held = cal.digest, weight_value(cal, "w").copy()
    trace = Pipeline([gptq_palettize_weights(nbits=3, granularity="per_grouped_channel", group_size=8,
                                             op_selector=_every)]
                     ).run(cal, verify="each")
    got = trace.result
    assert trace.steps[-1].verification is not None and trace.steps[-1].changed
    assert cal.digest == before and np.array_equal(weight_value(cal, "w"), held)
    lut = _const(got, "w_lut")
    assert lut.shape == (4, 1, 1, 1, 8, 1)
    idx = _const(got, "w_indices")
    assert idx.shape == w.shape
    plain = palettize_weights(nbits=3, granularity="per_grouped_channel", group_size=8,
                              op_selector=_every).run(cal).program

    def out_err(p):
        d = weight_value(p, "w").astype(np.float64) - w
        return float(np.sum(conv_of(d, xs, groups=np.int32(groups), pad_type="same") ** 2))

    assert out_err(got) < out_err(plain)
    a, b = (gptq_palettize_weights(nbits=3, op_selector=_every).run(cal).program for _ in range(2))
    assert a.digest == b.digest  # deterministic


@pytest.mark.parametrize("groups", [1, 16])
def test_clip_search_on_conv_weights_keeps_its_contract(groups):
    prog, w, cin = _conv_net(groups)
    xs = _inputs((2, cin, 8, 8))
    cal = calibrate(data=calibration_data({"x": xs})).run(prog).program
    trace = Pipeline([gptq_quantize_weights(dtype="int4", granularity="per_channel", clip_search=True,
                                            op_selector=_every)]).run(cal, verify="each")
    st = trace.steps[-1].stats["weights"]["w"]
    assert trace.steps[-1].verification is not None and st["method"] == "gptq"
    assert "clipped_blocks" in st and st["output_error"] < st["output_error_data_free"]


def test_grouped_factors_are_each_groups_own():
    from stages.compression.numeric.gptq import factor, factor_groups

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 30, 9))
    hs = np.einsum("gri,grj->gij", x, x) / 30
    hs[2, 3, :] = hs[2, :, 3] = 0.0  # a channel never seen in group 2
    for act_order in (True, False):
        orders, us = factor_groups(hs, 0.01, act_order)
        for j in range(7):
            order, u = factor(hs[j], 0.01, act_order)
            assert np.array_equal(orders[j], order) and np.array_equal(us[j], u)
