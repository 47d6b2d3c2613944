"""verify="each": every step checked by its stage's own contract, no tolerance from the user."""
import dataclasses

import numpy as np
import pytest

import ir.ops.registry as op_registry
from pipeline import EquivalenceError, Pipeline, presets
from pipeline.contracts import ContractReport, check_step
from stages.base import Stage, StageResult
from stages.contracts import affine_bound, exact, lossy
from tests.pipeline import contract_programs as cp
from tests.stages.test_preset import _mixed_program

COMPRESSION_PRESETS = [p for p in presets.names() if p != "canonicalize_quantization"]


# ---- correct code passes at defaults ----------------------------------------------------------

@pytest.mark.parametrize("preset", COMPRESSION_PRESETS)
@pytest.mark.parametrize("prog", sorted(cp.WEIGHT_PROGRAMS))
def test_every_compression_preset_keeps_its_contract(preset, prog):
    trace = Pipeline.preset(preset).run(cp.WEIGHT_PROGRAMS[prog](), verify="each")
    assert all(s.changed for s in trace.steps)  # something was compressed, and checked
    for s in trace.steps:
        assert isinstance(s.verification, ContractReport) and s.verification.passed
        assert s.verification.contract.startswith("lossy") and s.verification.samples == 8


def test_decompress_and_set_target_keep_theirs():
    net = Pipeline.preset("sparse+palettize")(cp.mlp())
    trace = Pipeline.from_spec('decompress_weights').run(net, verify="each")
    assert trace.steps[0].changed and trace.steps[0].verification.passed
    trace = Pipeline.from_spec('set_target{target="iOS17"},int8').run(cp.mlp(), verify="each")
    assert [s.verification.contract for s in trace.steps] == ["exact", "lossy (affine_bound)"]


def _lut_program():
    from ir import Program
    from ir.builder import TensorSpec, build_function

    rng = np.random.default_rng(1)

    def body(b, x):
        idx = b.const(rng.integers(0, 4, (2, 3)).astype(np.uint8), dtype="uint2")
        lut_f = b.constexpr_lut_to_dense(indices=idx, lut=rng.standard_normal((1, 1, 4, 1)).astype(np.float32))
        a = b.linear(x=x, weight=b.constexpr_blockwise_shift_scale(data=lut_f, scale=np.array([[0.5], [2.0]],
                                                                                                np.float32)))
        lut_i = b.constexpr_lut_to_dense(indices=idx, lut=rng.integers(-9, 9, (2, 1, 4, 1)).astype(np.int8))
        wi = b.constexpr_blockwise_shift_scale(data=lut_i, scale=np.array([[0.5], [2.0]], np.float32))
        return b.add(x=a, y=b.linear(x=x, weight=wi))

    return Program.make([build_function(body, {"x": TensorSpec((4, 3))}, "main", "iOS18")])


@pytest.mark.parametrize("make", [cp.quantized_add, lambda: cp.quantized_add(0), _mixed_program,
                                  lambda: _mixed_program("iOS18"), _lut_program])
@pytest.mark.parametrize("form", ["stage", "preset"])
def test_canonicalize_quantization_keeps_its_contract(make, form):
    pipe = Pipeline.from_spec("canonicalize_quantization") if form == "stage" else \
        Pipeline.preset("canonicalize_quantization")
    trace = pipe.run(make(), verify="each")
    checked = [s for s in trace.steps if s.changed]
    assert checked and all(s.verification.passed for s in checked)


def test_the_quantized_add_moves_one_step_and_passes():
    # scales where normalizing by s_y moves z by one step for the codes qx = 63, qy = -126
    # (0.131 * 63 - 0.061 * 126) / 0.018 = 31.55: 32 before, 31 once the scales are divided
    scales = (0.131, 0.061, 0.018)
    prog = cp.quantized_add(0, scales)
    name = "distributive_quantized_binary_op_scale_normalization"
    inputs = {"x": np.full((4, 8), np.float32(0.131) * 63, np.float32),
              "y": np.full((4, 8), np.float32(0.061) * -126, np.float32)}
    from ir.interpret import evaluate
    after = Pipeline.from_spec(name)(prog)
    steps = np.rint(evaluate(prog, inputs)["out"] / np.float32(0.018)) - np.rint(evaluate(after, inputs)["out"] / np.float32(0.018))
    assert np.all(steps == 1)  # by design, as the stage's contract says
    trace = Pipeline.from_spec(name).run(prog, verify={"mode": "each", "inputs": inputs})
    assert trace.steps[0].verification.passed and trace.steps[0].verification.contract.startswith("within 1")
    st = Pipeline.from_spec(name).stages[0]
    strict = check_step_with(prog, after, st, exact(), inputs)
    assert strict and "output 'out'" in str(strict[0])  # an exact contract would not hold


def check_step_with(before, after, st, contract, inputs):
    from stages.contracts import check_step as check_stage_step
    return check_stage_step(before, after, st, {}, [inputs], contract=contract)


# ---- wrong code fails, naming the step, the stage and the broken promise ------------------------

def _perturb(prog, name, fn):
    from tests.pipeline.pipeline_helpers import _map_const
    return _map_const(prog, name, fn)


def _unregistered(name, contract):
    """A stage of the tests' own, kept out of the registry (other suites list the registry)."""
    return lambda fn: Stage(name, fn, "1", contract=contract)


@_unregistered("test_contract_exact_but_rounds", exact())
def _rounds(prog, *, context=None):
    return _perturb(prog, "w2", lambda v: np.round(v, 2).astype(v.dtype))


def test_an_exact_stage_that_changes_outputs_fails():
    with pytest.raises(EquivalenceError) as e:
        Pipeline([_rounds]).run(cp.mlp(), verify="each")
    msg = str(e.value)
    assert e.value.step == 0 and e.value.stage.name == "test_contract_exact_but_rounds"
    assert "output 'y'" in msg and "promise: exact" in msg and "differ" in msg


def test_a_quantize_kernel_bug_is_caught_though_it_cancels(monkeypatch):
    """round -> floor in the production quantize kernel: on both sides of the step, but the
    oracle evaluates each program independently and compares kernel with oracle."""
    good = op_registry.REGISTRY["quantize"]

    def floored(v, ctx):
        x = v["input"]
        q = np.floor(x / np.asarray(v["scale"]).astype(x.dtype))
        dt = ctx.out_types[0].dt
        return [np.clip(q, dt.min, dt.max).astype(dt.storage)]

    monkeypatch.setitem(op_registry.REGISTRY, "quantize", dataclasses.replace(good, compute=floored))
    with pytest.raises(EquivalenceError) as e:
        Pipeline.from_spec("canonicalize_quantization").run(cp.quantized_add(), verify="each")
    assert "disagrees with the oracle" in str(e.value) and "promise: kernel" in str(e.value)


def test_a_decoder_bug_is_caught_by_the_compression_step(monkeypatch):
    good = op_registry.REGISTRY["constexpr_blockwise_shift_scale"]

    def off_by_one(v, ctx):
        out = good.compute(v, ctx)[0]
        return [(out * np.asarray(1.01, out.dtype)).astype(out.dtype)]

    monkeypatch.setitem(op_registry.REGISTRY, "constexpr_blockwise_shift_scale",
                        dataclasses.replace(good, compute=off_by_one))
    with pytest.raises(EquivalenceError, match="constexpr_blockwise_shift_scale"):
        Pipeline.preset("int8").run(cp.mlp(), verify="each")


@pytest.mark.parametrize("patch", ["symmetric_128", "step_plus_one"])
def test_affine_range_bugs_are_caught(monkeypatch, patch):
    import stages.compression.numeric.affine as affine
    if patch == "symmetric_128":
        monkeypatch.setattr(affine, "quant_range", lambda dtype, mode: (-128, 127) if dtype == "int8" else
                            affine.QUANT_DTYPES and (0, 255))
        expect = "outside [-127, 127]"
    else:
        step = affine._step
        monkeypatch.setattr(affine, "_step", lambda a, b, lo, hi: step(a, b, lo - 1, hi))
        expect = "block scale(s) are not"
    with pytest.raises(EquivalenceError, match=r"affine_quantize_weights") as e:
        Pipeline.preset("int8").run(cp.mlp(), verify="each")
    assert expect in str(e.value) and "weight 'w1'" in str(e.value)


@pytest.mark.parametrize("bug", ["threshold_strict", "percentile_ceil"])
def test_sparsify_bugs_are_caught(monkeypatch, bug):
    import stages.compression.sparsify as sparsify
    from stages.compression.numeric import sparse

    if bug == "threshold_strict":
        monkeypatch.setattr(sparsify, "threshold_mask", lambda w, t, name=None: sparse._finish(w, np.abs(w) < t))
        spec, expect = 'sparsify_weights{threshold=0.001}', "zeroed or kept against |w| <= 0.001"
    else:
        def ceil_mask(w, p, name=None):
            count = int(np.ceil(w.size * p))
            order = np.argsort(np.abs(w).ravel(), kind="stable")
            zero = np.zeros(w.size, bool)
            zero[order[:count]] = True
            return sparse._finish(w, zero.reshape(w.shape))
        monkeypatch.setattr(sparsify, "percentile_mask", ceil_mask)
        spec, expect = "sparse-50", "promised floor(2205 * 0.5) = 1102"
    pipe = Pipeline.preset(spec) if spec in presets.PRESETS else Pipeline.from_spec(spec)
    with pytest.raises(EquivalenceError, match="sparsify_weights") as e:
        pipe.run(cp.odd_sized(), verify="each")
    assert expect in str(e.value)


# ---- no silent no-op ------------------------------------------------------------------------

@_unregistered("test_contract_claims_but_does_nothing", lossy(affine_bound))
def _claims(prog, *, context=None):
    return StageResult(prog, {"weights": {"w1": {"mode": "linear_symmetric", "dtype": "int8"}}, "compressed": 1})


def test_a_stage_reporting_work_it_did_not_do_fails_by_default():
    with pytest.raises(EquivalenceError, match="reports 1 weight"):
        Pipeline([_claims]).run(cp.mlp(), verify="each")


def test_require_change_is_off_by_default_and_names_the_stage_when_on():
    pipe = Pipeline.from_spec("int_op_canonicalization,int8")  # the first has nothing to do here
    trace = pipe.run(cp.mlp(), verify="each")
    assert not trace.steps[0].changed and trace.steps[1].verification.passed
    with pytest.raises(EquivalenceError, match="int_op_canonicalization.*required to change") as e:
        pipe.run(cp.mlp(), verify={"mode": "each", "require_change": True})
    assert e.value.step == 0
    # only the named stage must act: the compression step did
    pipe.run(cp.mlp(), verify={"mode": "each", "require_change": ["affine_quantize_weights"]})


def test_require_change_reports_skip_reasons_of_a_compression_stage_that_compressed_nothing():
    with pytest.raises(EquivalenceError, match="below the size threshold"):
        Pipeline.from_spec("int8").run(cp.quantized_add(), verify={"mode": "each", "require_change": True})


# ---- user tolerances still work where there is no contract or end to end ----------------------

def test_final_mode_and_explicit_tolerances_still_use_verify():
    trace = Pipeline.preset("int8").run(cp.mlp(), verify={"mode": "final", "snr_db": 25})
    assert trace.steps[0].verification is None
    with pytest.raises(EquivalenceError, match="broke equivalence"):
        Pipeline.preset("int8").run(cp.mlp(), verify={"mode": "final", "snr_db": 80})
    with pytest.raises(EquivalenceError, match="broke equivalence"):  # contracts off: verify() per step
        Pipeline.preset("int8").run(cp.mlp(), verify={"mode": "each", "contracts": False})


def test_check_step_api_for_property_tests():
    before = cp.mlp()
    result = Pipeline.preset("int8").stages[0].run(before)
    report = check_step(before, result.program, Pipeline.preset("int8").stages[0], result.stats, samples=2)
    assert report.passed and report.samples == 2 and "lossy" in report.contract


# ---- hard weights: correct code never fails its contract ---------------------------------------

def _hard_weights():
    rng = np.random.default_rng(5)
    w = {}
    w["zero_row"] = rng.standard_normal((64, 100)).astype(np.float32)
    w["zero_row"][3] = 0
    w["few_distinct_fp16"] = np.round(rng.standard_normal((64, 64))).astype(np.float16)
    ext = (rng.standard_normal((64, 64)) * 20000).clip(-65504, 65504).astype(np.float16)
    ext[0, 0], ext[1, 1] = 65504, -65504
    w["fp16_extremes"] = ext
    w["positive"] = np.abs(rng.standard_normal((48, 64))).astype(np.float32)
    w["constant_rows"] = rng.standard_normal((40, 80)).astype(np.float32)
    w["constant_rows"][::2] = 1.5
    w["tiny_fp16"] = (rng.standard_normal((64, 64)) * 1e-6).astype(np.float16)
    return w


HARD = _hard_weights()
HARD_SPECS = [
    'affine_quantize_weights{mode="linear",dtype="uint8"}',
    'affine_quantize_weights{mode="linear",dtype="int4",granularity="per_block",block_size=32}',
    'affine_quantize_weights{mode="linear_symmetric",dtype="uint4",granularity="per_tensor"}',
    'palettize_weights{mode="uniform",nbits=3,granularity="per_grouped_channel",group_size=8}',
    'palettize_weights{mode="unique"}',
    'palettize_weights{nbits=2,enable_per_channel_scale=true}',
    'palettize_weights{nbits=2,cluster_dim=2,granularity="per_grouped_channel",group_size=16}',
    'palettize_weights{nbits=8}',
    'sparsify_weights{n_m_ratio=[2,4]}',
    'sparsify_weights{mode="percentile_based",target_percentile=0.3}',
    'palettize_weights{nbits=4},affine_quantize_weights{granularity="per_channel"}',
    'sparse-50,int8',
    'int8,decompress_weights',
    'palettize-4bit-grouped,decompress_weights',
    'sparse+palettize,decompress_weights',
]
HARD_CASES = [(name, spec) for i, spec in enumerate(HARD_SPECS) for name in
              (sorted(HARD)[i % len(HARD)], sorted(HARD)[(i + 3) % len(HARD)])]


def _single_linear(w, opset=None):
    from ir.builder import TensorSpec, program

    dt = "fp16" if w.dtype == np.float16 else "fp32"

    @program(inputs={"x": TensorSpec((2, w.shape[1]), dt)}, **({"opset": opset} if opset else {}))
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w"), name="y")
    return net


@pytest.mark.parametrize("weight, spec", HARD_CASES)
def test_hard_weights_keep_every_contract(weight, spec):
    pipe = Pipeline.preset(spec) if spec in presets.PRESETS else Pipeline.from_spec(spec)
    trace = pipe.run(_single_linear(HARD[weight]), verify="each")
    assert all(s.verification is None or s.verification.passed for s in trace.steps)


@pytest.mark.parametrize("spec", ["int8,decompress_weights", 'palettize_weights{mode="unique"}'])
def test_ios16_forms_keep_their_contracts(spec):
    trace = Pipeline.from_spec(spec).run(_single_linear(HARD["few_distinct_fp16"], "iOS16"), verify="each")
    assert trace.steps[0].changed and trace.steps[0].verification.passed


def test_final_mode_trusts_no_decoder_either(monkeypatch):
    good = op_registry.REGISTRY["constexpr_blockwise_shift_scale"]

    def off(v, ctx):
        out = good.compute(v, ctx)[0]
        return [(out * np.asarray(1.01, out.dtype)).astype(out.dtype)]

    Pipeline.preset("int8").run(cp.mlp(), verify={"mode": "final", "snr_db": 20})  # correct: passes
    monkeypatch.setitem(op_registry.REGISTRY, "constexpr_blockwise_shift_scale", dataclasses.replace(good, compute=off))
    # 1% on every weight still passes an SNR of 20 dB; the oracle does not agree with the kernel
    with pytest.raises(EquivalenceError, match="disagrees with the oracle"):
        Pipeline.preset("int8").run(cp.mlp(), verify={"mode": "final", "snr_db": 20})


def test_a_reference_that_never_runs_is_a_failure_not_a_pass():
    from stages.contracts import check_outputs
    prog = cp.mlp()
    after = Pipeline.preset("int8")(prog)
    found = check_outputs(prog, after, exact(), [{"x": np.ones((3, 3), np.float32)}])
    assert found and "fails on every one of the 1 inputs" in str(found[0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_kmeans_luts_reach_the_optimum_the_contract_computes(dtype):
    # 120 distinct values per group: the contract solves 1-D k-means exactly and compares
    rng = np.random.default_rng(0)
    w = (rng.integers(0, 40, (64, 64)) * 0.37 + rng.integers(0, 3, (64, 64)) * 0.011).astype(dtype)
    spec = 'palettize_weights{nbits=2,granularity="per_grouped_channel",group_size=8}'
    assert Pipeline.from_spec(spec).run(_single_linear(w), verify="each").steps[0].verification.passed


def test_weights_inside_control_flow_are_checked_too():
    from ir.builder import TensorSpec, program
    from stages.contracts import weight_cases

    rng = np.random.default_rng(0)
    wt, wf = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))

    @program(inputs={"x": TensorSpec((2, 64), "fp32"), "p": TensorSpec((), "bool")})
    def net(b, x, p):
        return b.cond(pred=p, true_fn=lambda bb: bb.linear(x=x, weight=bb.const(wt, name="wt")),
                      false_fn=lambda bb: bb.linear(x=x, weight=bb.const(wf, name="wf")))

    for preset in COMPRESSION_PRESETS:
        trace = Pipeline.preset(preset).run(net, verify="each")
        assert all(s.verification.passed for s in trace.steps)
    st = Pipeline.preset("int8").stages[0]
    result = st.run(net)
    cases, problems = weight_cases(net, result.program, st, result.stats)
    assert sorted(c.name for c in cases) == ["wf", "wt"] and problems == []


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_reordered_per_channel_scale_rounds_within_its_dtype(dtype):
    """reorder_lut_per_channel_scale on fp16 rounds w * s and (x . w) * s in fp16: ~1e-3 of the
    output, which its contract allows (64 epsilons of the output's dtype), fp32 within 1e-5."""
    from ir import Program
    from ir.builder import TensorSpec, build_function

    npdt = np.float16 if dtype == "fp16" else np.float32
    rng = np.random.default_rng(7)

    def body(b, x):
        idx = b.const(rng.integers(0, 16, (32, 48)).astype(np.uint8), dtype="uint4")
        lut = b.constexpr_lut_to_dense(indices=idx, lut=rng.standard_normal((1, 1, 16, 1)).astype(npdt))
        w = b.constexpr_blockwise_shift_scale(data=lut, scale=rng.uniform(0.1, 3, (32, 1)).astype(npdt))
        return b.linear(x=x, weight=w, bias=rng.standard_normal(32).astype(npdt))

    prog = Program.make([build_function(body, {"x": TensorSpec((4, 48), dtype)}, "main", "iOS18")])
    for spec in ("reorder_lut_per_channel_scale", "canonicalize_quantization"):
        trace = Pipeline.from_spec(spec).run(prog, verify="each")
        assert trace.steps[0].changed and trace.steps[0].verification.passed


# ---- postconditions: a canonicalization that silently declines is caught at defaults ------------

def test_a_pair_elimination_that_declines_everything_fails_at_defaults(monkeypatch):
    import stages.quantization.dequantize_quantize_pair as pair

    Pipeline.preset("canonicalize_quantization").run(_mixed_program(), verify="each")  # correct: passes
    monkeypatch.setattr(pair, "_cancels", lambda *args: False)  # an off-by-one, in effect
    with pytest.raises(EquivalenceError, match="still cancel out") as e:
        Pipeline.preset("canonicalize_quantization").run(_mixed_program(), verify="each")
    assert e.value.stage.name == "dequantize_quantize_pair_elimination" and "postcondition" in str(e.value)


def test_a_scale_normalization_that_declines_fails_at_defaults(monkeypatch):
    import stages.quantization.distributive_scale_normalization as dsn

    monkeypatch.setattr(dsn, "_already_normalized", lambda dq_y: True)
    with pytest.raises(EquivalenceError, match="could be normalized by a scalar input scale"):
        Pipeline.from_spec("distributive_quantized_binary_op_scale_normalization").run(cp.quantized_add(),
                                                                                       verify="each")
