"""Every registered stage over generated programs and weights: purity and its contract.

The programs come from pipeline.strategies (the patterns each quantization pass
matches, and models whose weights have the hard cases: zero channels, constant groups,
fewer distinct values than LUT entries, fp16 extremes, ties, a const read by two ops,
an already sparse weight, a vector LUT with several blocks). For each stage:

(a) purity: the input's digest, recomputed from scratch, is the same after the stage;
    the output validates;
(b) its contract, checked here from first principles (no code of the stage or of
    ir/ops/quant.py computes the expected values):
    - the quantization passes: outputs bit-identical on seeded inputs, except the
      scale normalization (within one quantization step, by design) and the LUT scale
      reorder (float rounding of the moved scale);
    - affine_quantize_weights: each weight's scale is the seed's formula (symmetric int8:
      max|w| / 127 per channel; linear uint8: (max(w, 0) - min(w, 0)) / 255), codes in
      the mode's range ([-127, 127] for symmetric int8), every value within scale / 2;
    - palettize_weights: every value decompresses to its nearest LUT entry, each LUT
      sorted and inside [min, max] of what it serves; uniform LUTs are evenly spaced
      from min to max;
    - sparsify_weights: exactly the promised zeros (|w| <= threshold; floor(size * p)
      smallest magnitudes), every other value untouched;
    - decompress_weights: outputs bit-identical, even when a const feeds a constexpr
      and another op;
    - nothing is NaN that was not NaN.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import stages
from ir.digest import program_digest
from ir.interpret import evaluate
from ir.validate import validate
from pipeline.strategies import PATTERNS, pattern_programs, quantization_programs, weight_models
from stages.compression import affine_quantize_weights, decompress_weights, palettize_weights, sparsify_weights

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def every_weight(view) -> bool:
    """op_selector: compress every weight, however small (the generated models are small)."""
    return True


def _inputs(program, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for v in program.main.inputs:
        dt = v.type.dt
        if dt.is_float:
            out[v.name] = rng.uniform(-4, 4, v.shape).astype(dt.storage)
        else:
            out[v.name] = rng.integers(dt.min, dt.max, size=v.shape, endpoint=True).astype(dt.storage)
    return out


def _run_pure(stage, program):
    digest = program_digest(program)
    after = stage(program)
    assert program_digest(program) == digest, f"{stage.name} mutated its input"
    validate(after)
    return after


def _outputs(program, seed):
    return list(evaluate(program, _inputs(program, seed)).values())


# ---- the quantization passes: exact, or within their documented rounding ---------------------------

def _exact(before, after):
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"max diff {np.max(np.abs(a.astype(float) - b))}"


def _one_step(before, after):
    """Quantized outputs within one integer step (the scale normalization's documented rounding)."""
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)), initial=0) <= 1


def _float_rounding(before, after):
    """The moved scale multiplies after the layer: float rounding, relative to the output's size."""
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        size = max(1.0, float(np.max(np.abs(a64), initial=0)))
        tol = 4e-3 if a.dtype == np.float16 else 1e-5
        assert np.max(np.abs(a64 - b64), initial=0) <= tol * size


CONTRACTS = {
    "distributive_quantized_binary_op_scale_normalization": _one_step,
    "reorder_lut_per_channel_scale": _float_rounding,
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_each_quantization_pass_keeps_its_contract_on_its_patterns(pattern):
    _, stage_name = PATTERNS[pattern]
    stage = stages.get(stage_name)
    check = CONTRACTS.get(stage_name, _exact)

    @SETTINGS
    @given(pattern_programs(pattern))
    def run(program):
        after = _run_pure(stage, program)
        for seed in range(3):
            check(_outputs(program, seed), _outputs(after, seed))
        assert stage(after) is after or stage_name in CONTRACTS, "a second run changed the program again"

    run()


def test_the_patterns_are_rewritten_often():
    """A pass silently disabled (an off-by-one that never matches) leaves the program alone: the
    generators make programs every pass must rewrite, so most examples change."""
    from pipeline.strategies.programs import example_program

    for pattern, (_, stage_name) in PATTERNS.items():
        stage = stages.get(stage_name)
        changed = sum(stage(p) is not p for p in (example_program(pattern, s) for s in range(12)))
        assert changed >= 4, f"{stage_name} rewrote only {changed} of 12 {pattern} programs"


# ---- every registered stage: pure, valid output ------------------------------------------------------

STAGE_PARAMS = {"palettize_weights": {"nbits": 2, "op_selector": every_weight},
                "affine_quantize_weights": {"op_selector": every_weight},
                "sparsify_weights": {"op_selector": every_weight, "threshold": 0.3},
                "set_target": {"target": "iOS18"}}


@pytest.mark.parametrize("name", stages.names())
def test_every_registered_stage_is_pure_on_generated_programs(name):
    stage = stages.get(name)(**STAGE_PARAMS.get(name, {})) if name in STAGE_PARAMS else stages.get(name)

    @settings(max_examples=6, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(quantization_programs() | weight_models())
    def run(program):
        _run_pure(stage, program)

    run()


# ---- compression contracts, checked on the weights -------------------------------------------------

AXIS = {"fc1_w": 0, "shared_w": 0, "proj_w": 1, "conv_w": 0, "sparse_w": 0}  # output axis per model weight


def _dense_weights(program) -> dict:
    return {op.outputs[0].name: np.asarray(op.attrs["val"]) for op in program.main.ops
            if op.op_type == "const" and op.outputs[0].name in AXIS}


def _decompressed(program) -> dict:
    return {k: np.asarray(v) for k, v in _dense_weights(decompress_weights(program)).items()}


def _reduce_others(a, axis, fn):
    return fn(a, axis=tuple(i for i in range(a.ndim) if i != axis), keepdims=True)


def _ulp_slack(w):
    """Two units in the last place of each value (the reconstruction is rounded to w's dtype)."""
    eps = float(np.finfo(w.dtype).eps)
    return np.abs(w.astype(np.float64)) * eps * 2 + float(np.finfo(w.dtype).smallest_subnormal)


@SETTINGS
@given(weight_models())
def test_affine_int8_symmetric_scale_codes_and_error_bound(model):
    after = _run_pure(affine_quantize_weights(op_selector=every_weight), model)
    original, back = _dense_weights(model), _decompressed(after)
    for name, w in original.items():
        axis = AXIS[name]
        w64 = w.astype(np.float64)
        scale = _reduce_others(np.abs(w64), axis, np.max) / 127  # the seed's formula
        scale = np.where(scale == 0, 1.0, scale)
        err = np.abs(back[name].astype(np.float64) - w64)
        assert np.all(np.isfinite(back[name])), f"{name}: non-finite reconstruction"
        bound = scale / 2 * (1 + 2e-3) + _ulp_slack(w)
        assert np.all(err <= bound), f"{name}: error {np.max(err / bound):.3f} x the scale/2 bound"
    for op in after.main.ops:
        if op.op_type == "constexpr_blockwise_shift_scale" and op.data.dtype == "int8":
            codes = op.data.val
            assert codes.min() >= -127 and codes.max() <= 127, "symmetric int8 codes must stay in [-127, 127]"
            s = op.scale.val.astype(np.float64)
            w = original.get(op.outputs[0].name)
            if w is not None:  # the stored scale is max|w| / 127 rounded to the weight's dtype
                want = _reduce_others(np.abs(w.astype(np.float64)), AXIS[op.outputs[0].name], np.max) / 127
                ok = (want == 0) | (np.abs(s - want) <= np.spacing(want.astype(w.dtype)).astype(np.float64))
                assert np.all(ok), f"{op.outputs[0].name}: scale is not max|w| / 127"


@SETTINGS
@given(weight_models())
def test_affine_linear_uint8_per_tensor_within_half_a_step(model):
    after = _run_pure(affine_quantize_weights(mode="linear", dtype="uint8", granularity="per_tensor",
                                              op_selector=every_weight), model)
    original, back = _dense_weights(model), _decompressed(after)
    for name, w in original.items():
        w64 = w.astype(np.float64)
        step = (max(w64.max(), 0.0) - min(w64.min(), 0.0)) / 255
        if step == 0:
            assert np.array_equal(back[name], w)
            continue
        err = np.abs(back[name].astype(np.float64) - w64)
        assert np.all(np.isfinite(back[name]))
        assert np.all(err <= step / 2 * (1 + 2e-3) + _ulp_slack(w)), f"{name}: error past scale / 2"


def _lut_of(after, name):
    op = next(o for o in after.main.ops if o.outputs[0].name == name)
    assert op.op_type == "constexpr_lut_to_dense"
    return np.asarray(op.lut.val)


@SETTINGS
@given(weight_models())
def test_palettize_every_value_takes_its_nearest_sorted_entry(model):
    after = _run_pure(palettize_weights(nbits=4, op_selector=every_weight), model)
    original, back = _dense_weights(model), _decompressed(after)
    for name, w in original.items():
        lut = _lut_of(after, name).reshape(-1).astype(np.float64)  # per tensor: one LUT
        assert np.all(np.diff(lut) >= 0), f"{name}: LUT not sorted"
        w64 = w.astype(np.float64)
        assert lut.min() >= w64.min() and lut.max() <= w64.max(), f"{name}: LUT outside [min, max]"
        dist = np.abs(w64.reshape(-1, 1) - lut.reshape(1, -1)).min(axis=1)
        got = np.abs(w64.reshape(-1) - back[name].astype(np.float64).reshape(-1))
        assert np.all(got <= dist * (1 + 1e-9) + _ulp_slack(w).reshape(-1)), f"{name}: a value missed its nearest entry"
        assert set(np.unique(back[name]).tolist()) <= set(lut.astype(w.dtype).tolist())


@SETTINGS
@given(weight_models())
def test_palettize_uniform_spans_min_to_max(model):
    after = _run_pure(palettize_weights(nbits=2, mode="uniform", op_selector=every_weight), model)
    for name, w in _dense_weights(model).items():
        lut = _lut_of(after, name).reshape(-1)
        w64 = w.astype(np.float64)
        want = np.linspace(w64.min(), w64.max(), 4).astype(w.dtype)
        assert np.array_equal(lut, want), f"{name}: uniform LUT {lut} != {want}"


@SETTINGS
@given(weight_models())
def test_sparsify_threshold_zeroes_exactly_the_small_values(model):
    t = 0.25
    after = _run_pure(sparsify_weights(threshold=t, op_selector=every_weight), model)
    original, back = _dense_weights(model), _decompressed(after)
    for name, w in original.items():
        zeroed = np.abs(w.astype(np.float64)) <= t
        assert np.all(back[name][zeroed] == 0), f"{name}: a value <= threshold kept"
        assert np.array_equal(back[name][~zeroed], w[~zeroed]), f"{name}: a value above the threshold changed"


@SETTINGS
@given(weight_models())
def test_sparsify_percentile_zeroes_exactly_the_promised_count(model):
    p = 0.37  # size * p is rarely whole: floor and ceil differ
    after = _run_pure(sparsify_weights(mode="percentile_based", target_percentile=p, op_selector=every_weight), model)
    original, back = _dense_weights(model), _decompressed(after)
    for name, w in original.items():
        count = int(np.floor(w.size * p))
        zeros_before = int(np.count_nonzero(w == 0))
        got = back[name]
        kept = got != 0
        assert np.array_equal(got[kept], w[kept]), f"{name}: a kept value changed"
        assert int(np.count_nonzero(~kept)) == max(count, zeros_before), f"{name}: wrong number of zeros"
        if kept.any() and (~kept).any():
            assert np.abs(w[~kept]).max() <= np.abs(w[kept]).min(), f"{name}: a larger value was zeroed"


@pytest.mark.parametrize("spec", [
    affine_quantize_weights(op_selector=every_weight),
    palettize_weights(nbits=2, op_selector=every_weight),
    sparsify_weights(threshold=0.3, op_selector=every_weight),
])
def test_decompress_is_bit_identical_after_every_compression(spec):
    @settings(max_examples=8, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(weight_models())
    def run(model):
        compressed = spec(model)
        after = _run_pure(decompress_weights, compressed)
        assert not any(op.op_type.startswith("constexpr_") for op in after.main.ops)
        for seed in range(2):
            _exact(_outputs(compressed, seed), _outputs(after, seed))

    run()


# ---- every registered stage by its own declared contract (stages/contracts/) ------------------

@pytest.mark.parametrize("name", stages.names())
def test_every_registered_stage_keeps_its_declared_contract(name):
    from pipeline.contracts import check_step
    from stages.contracts import contract_of

    stage = stages.get(name)(**STAGE_PARAMS.get(name, {})) if name in STAGE_PARAMS else stages.get(name)
    assert contract_of(stage) is not None, f"{name} declares no contract"

    @settings(max_examples=6, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(quantization_programs() | weight_models())
    def run(program):
        digest = program_digest(program)
        result = stage.run(program)
        assert program_digest(program) == digest, f"{name} mutated its input"
        report = check_step(program, result.program, stage, result.stats, inputs=[_inputs(program, s) for s in range(3)])
        assert report.passed, report.summary()

    run()
