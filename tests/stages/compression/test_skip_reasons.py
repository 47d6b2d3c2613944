"""Every weight a compression stage leaves alone says why, in the step's stats.

One model with awkward weights (channel counts no group divides, a prime axis, a 1-D bias
above the size threshold, a thin weight no layout makes smaller, scalars, an int8 weight,
an embedding table) is run through every compression preset; each weight of each step's
input is either compressed or carries a non-empty reason.
"""
from __future__ import annotations

import numpy as np
import pytest

from ir.analysis import use_def
from ir.builder import TensorSpec, program
from pipeline import Pipeline, presets
from pipeline.report import weights_of
from stages.compression import (OptimizationConfig, affine_quantize_weights, palettize_weights,
                                sparsify_weights)
from stages.compression.weights import DEFAULT_MIN_ELEMENTS

RNG = np.random.default_rng(17)


def _f(*shape):
    return (RNG.standard_normal(shape) * 0.1).astype(np.float32)


W1, B1 = _f(20, 300), _f(20)           # 20 channels: group 16 does not divide them
W2, B2 = _f(3000, 20), _f(3000)        # a 1-D bias above the threshold
WP = _f(3000, 67)                      # matmul y: 67 (prime) output channels, 3000 input rows
THIN = _f(2053, 1)                     # 2053 (prime) channels of one element: no layout is smaller
TABLE = _f(50, 64)                     # an embedding table (gather)
CONV = _f(32, 3, 5, 5)                 # input axis of 3
Q8 = RNG.integers(-127, 128, (64, 64)).astype(np.int8)  # already integer


@program(inputs={"x": TensorSpec((1, 300), "fp32"), "t": TensorSpec((1, 1), "fp32"),
                 "ids": TensorSpec((2,), "int32"), "img": TensorSpec((1, 3, 8, 8), "fp32")})
def awkward(b, x, t, ids, img):
    h = b.linear(x=x, weight=b.const(W1, name="w1"), bias=b.const(B1, name="b1"))
    h = b.linear(x=h, weight=b.const(W2, name="w2"), bias=b.const(B2, name="b2"))
    h = b.mul(x=b.matmul(x=h, y=b.const(WP, name="wp")), y=b.const(np.float32(0.5), name="half"))
    thin = b.linear(x=t, weight=b.const(THIN, name="thin"))
    emb = b.gather(x=b.const(TABLE, name="table"), indices=ids)
    deq = b.dequantize(input=b.const(Q8, name="q8"), scale=b.const(np.float32(0.01), name="q8_scale"))
    mixed = b.matmul(x=emb, y=deq)
    conv = b.conv(x=img, weight=b.const(CONV, name="conv_w"))
    return h, thin, mixed, conv


COMPRESSION_PRESETS = [p for p in presets.names() if p != "canonicalize_quantization"]


def _weights_of_step(prog) -> set:
    """What a user calls the weights: every float weight the inspect table lists, plus large
    non-float consts (an already-integer weight); small int consts (shapes, axes) are not."""
    names = {w.name for w in weights_of(prog, min_size=1)}
    ud = use_def(prog.main)
    for op in prog.main.block.walk():
        out = op.outputs[0] if op.outputs else None
        if op.op_type == "const" and not out.type.dt.is_float and out.val.size > DEFAULT_MIN_ELEMENTS \
                and any(not c.op_type.startswith("constexpr_") for c in ud.consumers_of(out)):
            names.add(out.name)  # (a mask read only by its sparse form is part of that weight)
    return names


def _assert_every_weight_accounted(trace, smaller=True):
    """Each weight compressed (and, with the default selection, smaller) or skipped with a reason."""
    for i, step in enumerate(trace.steps):
        stats = step.stats["weights"]
        for name in _weights_of_step(trace.program_at(i)):
            assert name in stats, (step.spec, name, sorted(stats))
            entry = dict(stats[name])
            if "skipped" in entry:
                assert isinstance(entry["skipped"], str) and entry["skipped"].strip(), (step.spec, name)
            elif smaller:
                assert entry["compressed_bytes"] < entry["original_bytes"], (step.spec, name, entry)


@pytest.mark.parametrize("preset", COMPRESSION_PRESETS)
def test_every_weight_is_compressed_or_says_why(preset):
    trace = Pipeline.preset(preset).run(awkward)
    _assert_every_weight_accounted(trace)
    first = trace.steps[0].stats["weights"]
    assert first["half"]["skipped"] == (f"below the size threshold: 1 elements, compressed when more than "
                                        f"{DEFAULT_MIN_ELEMENTS}")
    assert first["q8"]["skipped"] == "dtype int8: only float weights are compressed"


@pytest.mark.parametrize("stage", [affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32),
                                   affine_quantize_weights(dtype="int8", granularity="per_channel"),
                                   affine_quantize_weights(dtype="uint4", granularity="per_tensor", mode="linear"),
                                   palettize_weights(nbits=4, granularity="per_grouped_channel", group_size=16),
                                   palettize_weights(nbits=2, granularity="per_grouped_channel", group_size=8,
                                                     cluster_dim=2),
                                   palettize_weights(nbits=4, enable_per_channel_scale=True),
                                   palettize_weights(mode="unique"),
                                   sparsify_weights(n_m_ratio=(2, 4))],
                         ids=lambda s: s.spec() if hasattr(s, "spec") else str(s))
def test_selecting_every_weight_never_aborts_the_run(stage):
    """With an op_selector taking everything (scalars, 1-D, thin weights), each weight is
    compressed or skipped with its reason; none stops the stage."""
    st = stage.bind(op_selector=lambda view: True)
    trace = Pipeline([st]).run(awkward)
    _assert_every_weight_accounted(trace, smaller=False)


def test_thin_weight_no_layout_serves_gets_a_reason():
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32).run(awkward)
    # one input column: blocks of 1, 4-bit data + an fp32 scale per element = 2053 * 4.5 bytes
    assert res.stats["weights"]["thin"]["skipped"] == (
        "not smaller once compressed: linear_symmetric int4 (per_block, block_size 1 (requested 32)) "
        "takes 9239 bytes against the weight's 8212")
    res = palettize_weights(nbits=4, granularity="per_grouped_channel", group_size=16).run(awkward)
    # 2053 is prime: groups of 1 channel, 16 fp32 entries each + 4-bit indices
    assert res.stats["weights"]["thin"]["skipped"] == (
        "not smaller once compressed: kmeans (per_grouped_channel, group_size 1 (requested 16)) takes "
        f"{(2053 * 4 + 7) // 8 + 2053 * 16 * 4} bytes against the weight's 8212")


def test_per_channel_on_a_1d_weight_is_not_written_bigger():
    # a scale per element: 3000 int8 + 3000 fp32 scales > 3000 fp32
    res = affine_quantize_weights(dtype="int8", granularity="per_channel").run(awkward)
    assert res.stats["weights"]["b2"]["skipped"] == (
        "not smaller once compressed: linear_symmetric int8 (per_channel) takes 15000 bytes against "
        "the weight's 12000")


def test_no_group_size_serves_gets_a_reason():
    # 2053 channels (prime), cluster_dim 2: no group size is both a divisor and a multiple of 2
    res = palettize_weights(nbits=2, granularity="per_grouped_channel", group_size=8, cluster_dim=2,
                            op_selector=lambda v: v.name == "thin").run(awkward)
    assert res.stats["weights"]["thin"]["skipped"] == (
        "per_grouped_channel: no group size <= 8 divides the 2053 channels and is a multiple of cluster_dim 2")


def test_one_d_bias_is_skipped_not_fatal_under_per_block():
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32).run(awkward)
    assert "rank >= 2" in res.stats["weights"]["b2"]["skipped"] and "1-D" in res.stats["weights"]["b2"]["skipped"]
    assert "skipped" not in res.stats["weights"]["w2"]


def test_op_selector_and_config_reasons():
    def only_w1(view):
        return view.name == "w1"

    res = palettize_weights(nbits=4, op_selector=only_w1).run(awkward)
    assert res.stats["weights"]["w2"]["skipped"] == \
        "op_selector test_op_selector_and_config_reasons.<locals>.only_w1 declined it"
    config = OptimizationConfig.from_dict({"global_config": {"nbits": 4}, "op_type_configs": {"conv": None},
                                           "op_name_configs": {"w2": None}})
    res = palettize_weights(config=config).run(awkward)
    weights = res.stats["weights"]
    assert weights["w2"]["skipped"] == "config: op_name_configs['w2'] is None"
    assert weights["conv_w"]["skipped"] == "config: op_type_configs['conv'] is None"
    assert "skipped" not in weights["w1"]
    only_typed = OptimizationConfig.from_dict({"op_type_configs": {"linear": {"nbits": 4}}})
    res = palettize_weights(config=only_typed).run(awkward)
    assert res.stats["weights"]["wp"]["skipped"] == "config: global_config is None"


def test_already_compressed_forms_say_so():
    int8 = affine_quantize_weights(awkward, dtype="int8")
    res = palettize_weights(nbits=4).run(int8)
    assert res.stats["weights"]["w2"]["skipped"] == \
        "already compressed (constexpr_blockwise_shift_scale): not a form palettize_weights compresses further"
    # a palettized weight's LUT can be quantized per tensor / channel, not per block: a reason, not an abort
    pal = palettize_weights(awkward, nbits=4)
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32).run(pal)
    assert "not per_block" in res.stats["weights"]["w2"]["skipped"]
    assert "skipped" not in affine_quantize_weights(dtype="int8").run(pal).stats["weights"]["w2"]


def test_skip_counts_match_the_reasons():
    res = palettize_weights(nbits=4).run(awkward)
    weights = res.stats["weights"]
    skipped = sum("skipped" in dict(v) for v in weights.values())
    assert skipped == 4  # b1, half, q8_scale (threshold), q8 (int8)
    assert res.stats["skipped"] == skipped and res.stats["compressed"] == len(weights) - skipped


def test_an_explicit_op_selector_is_obeyed_even_when_bigger():
    # the default selection skips the thin weight (test above); asked for by name, it is written
    res = affine_quantize_weights(dtype="int4", granularity="per_block", block_size=32,
                                  op_selector=lambda v: v.name == "thin").run(awkward)
    st_thin = res.stats["weights"]["thin"]
    assert (st_thin["compressed_bytes"], st_thin["original_bytes"], st_thin["block_size"]) == (9239, 8212, 1)
    assert "skipped" not in st_thin
