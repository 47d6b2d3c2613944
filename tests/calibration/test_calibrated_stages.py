"""The calibrated stages on a tiny model: the grid / LUT forms, what calibration buys (the output
error on the calibration rows), contracts (verify="each"), skips without statistics, purity."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import Pipeline
from pipeline.calibration import calibration_data
from stages.calibration import calibrate
from stages.compression import (ParameterError, affine_quantize_weights, gptq_palettize_weights,
                                gptq_quantize_weights, palettize_weights, weighted_palettize_weights)
from tests.calibration.models import IN, SHIFT, tiny_data, tiny_model
from tests.stages.compression.helpers import decompressed as weight_value


def _calibrated():
    return calibrate(data=calibration_data(tiny_data(batches=12))).run(tiny_model()).program


def _rows():
    return tiny_data(batches=12)["x"].reshape(-1, IN).astype(np.float64) + SHIFT


def _output_error(prog, original) -> float:
    """mean ||(W - Q) x||^2 over the calibration rows (the linear's own output error)."""
    x = _rows()
    d = weight_value(prog, "w").astype(np.float64) - original.astype(np.float64)
    return float(np.mean(np.sum((x @ d.T) ** 2, axis=1)))


def _const(prog, name):
    return next(op.outputs[0].val for op in prog.main.ops if op.outputs and op.outputs[0].name == name)


@pytest.mark.parametrize("dtype, granularity", [("int4", "per_channel"), ("int8", "per_channel"),
                                                ("uint4", "per_block"), ("int4", "per_block")])
def test_gptq_keeps_the_affine_grid_and_lowers_the_output_error(dtype, granularity):
    net = _calibrated()
    w = weight_value(net, "w")
    mode = "linear" if dtype.startswith("u") else "linear_symmetric"
    opts = dict(dtype=dtype, granularity=granularity, block_size=16, mode=mode)
    rtn = affine_quantize_weights(**opts).run(net).program
    got = gptq_quantize_weights(**opts).run(net)
    g = got.program
    ops = [op.op_type for op in g.main.ops]
    assert "constexpr_blockwise_shift_scale" in ops
    assert np.array_equal(_const(g, "w_scale"), _const(rtn, "w_scale"))  # the data-free grid
    codes = _const(g, "w_q")
    assert not np.array_equal(codes, _const(rtn, "w_q"))  # GPTQ chose other codes
    assert _output_error(g, w) < 0.8 * _output_error(rtn, w)
    st = got.stats["weights"]["w"]
    assert st["method"] == "gptq" and st["output_error"] < st["output_error_data_free"]
    assert "skipped" in got.stats["weights"]["table"]  # an embedding: no Gram matrix
    assert "linear / matmul" in got.stats["weights"]["table"]["skipped"]


def test_gptq_palettize_uses_a_fixed_lut_and_beats_nearest_rounding():
    net = _calibrated()
    w = weight_value(net, "w")
    got = gptq_palettize_weights(nbits=3).run(net)
    st = got.stats["weights"]["w"]
    assert st["output_error"] < 0.8 * st["output_error_data_free"]
    lut = _const(got.program, "w_lut")
    assert lut.shape == (1, 1, 8, 1) and np.all(np.diff(lut.ravel()) >= 0)
    plain = palettize_weights(nbits=3).run(net).program
    assert _output_error(got.program, w) < _output_error(plain, w)


def test_weighted_palettize_favours_frequent_tokens_and_heavy_channels():
    net = _calibrated()
    table = weight_value(net, "table")
    got = weighted_palettize_weights(nbits=2, token_prior=0.1).run(net)
    plain = palettize_weights(nbits=2).run(net).program
    assert got.stats["weights"]["table"]["weighting"] == "token_counts"
    assert got.stats["weights"]["w"]["weighting"] == "input_moment"
    counts = np.bincount(tiny_data(batches=12)["ids"].ravel(), minlength=table.shape[0]) + 0.1
    # the objective it minimises: each row's squared error times its lookups (+ the prior)
    cost = lambda p: float(np.sum(counts[:, None] * (weight_value(p, "table") - table) ** 2))  # noqa: E731
    assert cost(got.program) < cost(plain)
    # the input-moment weighting: the error weighted by E[x^2] is lower than plain k-means's
    m = np.mean(_rows() ** 2, axis=0)
    w = weight_value(net, "w")
    werr = lambda p: float(np.sum(m * (weight_value(p, "w") - w) ** 2))  # noqa: E731
    assert werr(got.program) < werr(plain)


@pytest.mark.parametrize("stage", [gptq_quantize_weights(dtype="int4", granularity="per_block", block_size=16),
                                   gptq_palettize_weights(nbits=4, granularity="per_grouped_channel", group_size=16),
                                   weighted_palettize_weights(nbits=4),
                                   weighted_palettize_weights(nbits=3, granularity="per_grouped_channel",
                                                              group_size=8)])
def test_contracts_hold_under_verify_each(stage):
    trace = Pipeline([stage]).run(tiny_model(), calibration=tiny_data(), verify="each")
    assert trace.steps[1].changed and trace.steps[1].verification is not None


@pytest.mark.parametrize("stage", [gptq_quantize_weights(dtype="int4"), gptq_palettize_weights(nbits=4),
                                   weighted_palettize_weights(nbits=4)])
def test_without_statistics_every_weight_is_skipped_with_the_reason(stage):
    net = tiny_model()
    out = stage.run(net)
    assert out.program is net
    assert "calibrat" in out.stats["weights"]["w"]["skipped"]


def test_pure_and_deterministic():
    net = _calibrated()
    before = net.digest
    for st in (gptq_quantize_weights(dtype="int4"), gptq_palettize_weights(nbits=4), weighted_palettize_weights(nbits=4)):
        a, b = st.run(net).program, st.run(net).program
        assert a.digest == b.digest != before
    assert net.digest == before


def test_bad_parameters_name_themselves():
    with pytest.raises(ParameterError, match="damp"):
        gptq_quantize_weights(damp=2.0)
    with pytest.raises(ParameterError, match="nbits"):
        weighted_palettize_weights(nbits=5)
    with pytest.raises(ParameterError, match="token_prior"):
        weighted_palettize_weights(token_prior=-1)
    with pytest.raises(ParameterError, match="block_columns"):
        gptq_palettize_weights(block_columns=0)


def test_clip_search_shrinks_scales_within_its_bounds_and_lowers_the_weighted_error():
    from stages.compression.numeric.clip_search import search_scales

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 32)).astype(np.float32)
    w[0, 3] = 12.0  # an outlier stretches block 0's step
    scale = (np.abs(w).max(axis=1, keepdims=True) / 7).astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.int8)
    imp = np.ones((1, 32))
    imp[0, 3] = 1e-4  # ... in a channel that hardly matters
    s, ratio = search_scales(w, scale, zp, -7, 7, imp)
    assert ratio[0, 0] < 1 and np.all((ratio >= 0.5) & (ratio <= 1))
    assert np.all(s <= scale) and np.all(s >= 0.5 * scale * (1 - 1e-6))

    def cost(sc):
        q = np.clip(np.rint(w / sc), -7, 7) * sc
        return float(np.sum(imp * (w - q) ** 2))

    assert cost(s) < cost(scale)
    trace = Pipeline([gptq_quantize_weights(dtype="int4", granularity="per_block", block_size=16, clip_search=True)]
                     ).run(tiny_model(), calibration=tiny_data(), verify="each")
    assert trace.steps[1].changed
