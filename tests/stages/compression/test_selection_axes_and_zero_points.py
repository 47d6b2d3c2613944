"""Edges the mutation run found unpinned: the default selection's threshold, per-channel zero
points that are zero in some channels only, the iOS16 axis of a matmul weight, the block axis
of per_block and the run axis of n:m on a matmul weight. Expected values are computed here
from the formulas, not by the stage's code."""
import numpy as np

from ir.builder import TensorSpec, program
from stages.compression import affine_quantize_weights, decompress_weights, sparsify_weights


def _linear(w, opset="iOS18"):
    @program(inputs={"x": TensorSpec((2, w.shape[1]))}, opset=opset)
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w"), name="y")
    return net


def _matmul(w, opset="iOS18"):
    @program(inputs={"x": TensorSpec((2, w.shape[0]))}, opset=opset)
    def net(b, x):
        return b.matmul(x=x, y=b.const(w, name="w"), name="y")
    return net


def _weight_after(prog):
    return next(op.attrs["val"] for op in decompress_weights(prog).main.ops
                if op.op_type == "const" and op.outputs[0].name == "w")


def _op(prog, op_type):
    return next(op for op in prog.main.ops if op.op_type == op_type)


def test_default_selection_takes_weights_of_more_than_2048_elements_only():
    rng = np.random.default_rng(0)
    exactly = _linear(rng.standard_normal((32, 64)).astype(np.float32))  # 2048 elements: left alone
    above = _linear(rng.standard_normal((33, 64)).astype(np.float32))    # 2112: compressed
    assert affine_quantize_weights(exactly) is exactly
    assert any(op.op_type == "constexpr_blockwise_shift_scale" for op in affine_quantize_weights(above).main.ops)


def test_linear_uint8_per_channel_keeps_a_zero_point_that_is_zero_in_some_channels():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 16)).astype(np.float32)
    w[0] = np.abs(w[0]) + 0.1  # all positive: range [0, max], zero point 0
    w[2] = np.abs(w[2]) + 0.1
    after = affine_quantize_weights(_linear(w), mode="linear", dtype="uint8", granularity="per_channel",
                                    op_selector=lambda v: True)
    lo, hi = np.minimum(w.min(axis=1), 0), np.maximum(w.max(axis=1), 0)
    step = (hi - lo) / 255
    zp = np.clip(np.round(-lo / step), 0, 255)
    assert zp[0] == 0 and zp[1] > 0  # the case: zero in some channels, not in others
    err = np.abs(_weight_after(after).astype(np.float64) - w)
    assert np.all(err <= (step / 2 * (1 + 1e-3))[:, None])
    assert _op(after, "constexpr_blockwise_shift_scale").offset.val.ravel().tolist() == zp.tolist()


def test_ios16_per_channel_on_a_matmul_weight_is_along_its_output_axis():
    w = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)  # matmul y: [in, out]
    after = affine_quantize_weights(_matmul(w, "iOS16"), op_selector=lambda v: True)
    op = _op(after, "constexpr_affine_dequantize")
    assert int(op.axis.val) % 2 == 1 and op.scale.val.shape == (4,)
    scale = np.abs(w).max(axis=0) / 127
    assert np.all(np.abs(_weight_after(after) - w) <= scale / 2 * (1 + 1e-3))


def test_per_block_blocks_run_along_a_matmul_weights_input_axis():
    w = np.random.default_rng(3).standard_normal((64, 8)).astype(np.float32)  # [in, out]: blocks along axis 0
    after = affine_quantize_weights(_matmul(w), dtype="int4", granularity="per_block", block_size=16,
                                    op_selector=lambda v: True)
    assert _op(after, "constexpr_blockwise_shift_scale").scale.shape == (4, 8)


def test_n_m_runs_along_the_input_axis():
    w = np.random.default_rng(4).uniform(0.5, 2.0, (8, 16)).astype(np.float32)  # no zeros already
    after = sparsify_weights(_linear(w), n_m_ratio=(2, 4), op_selector=lambda v: True)
    runs = _weight_after(after).reshape(8, 4, 4)  # runs of 4 along axis 1 (the input axis of linear)
    assert np.all((runs == 0).sum(axis=2) == 2)
    kept = runs != 0
    assert np.all(np.where(kept, runs, np.inf).min(axis=2) >= np.where(kept, -np.inf, np.abs(w.reshape(8, 4, 4))).max(axis=2))
