"""The calibrated stages end to end on a Core ML model: an mlprogram built with coremltools'
MIL builder, imported, calibrated, compressed by GPTQ / activation-weighted k-means /
mixed precision, written back as an .mlpackage, and checked without a Core ML runtime
(coremltools cannot predict on Linux): coremltools' own loader reads the package and
computes every compressed weight, which must equal our interpreter's value; the package
re-imported runs in our interpreter and stays close to the fp32 model on held-out inputs."""
from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402

from ir.formats.coreml import export_coreml, import_coreml  # noqa: E402
from ir.interpret import evaluate  # noqa: E402
from pipeline import Pipeline  # noqa: E402
from pipeline.calibration import calibration_data  # noqa: E402
from stages.calibration import calibration_stats, without_calibration  # noqa: E402
from stages.compression.numeric import metrics  # noqa: E402
from tests.formats.test_coreml_roundtrip import coreml_dense_weights, ir_dense_weights, save  # noqa: E402

import stages  # noqa: E402

RNG = np.random.default_rng(5)
W1 = (RNG.standard_normal((96, 64)) / 8).astype(np.float32)
W2 = (RNG.standard_normal((48, 96)) / 10).astype(np.float32)
W3 = (RNG.standard_normal((48, 48)) / 7).astype(np.float32)
MIX = RNG.standard_normal((64, 64)).astype(np.float32)  # correlated inputs: where GPTQ beats rounding
BATCH = 4


def _inputs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.2, 3.0, 64).astype(np.float32)  # uneven channel importance
    return ((rng.standard_normal((n, 64)).astype(np.float32) @ MIX / 8) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def coreml_model(tmp_path_factory):
    @mb.program(input_specs=[mb.TensorSpec(shape=(BATCH, 64))], opset_version=ct.target.iOS18)
    def prog(x):
        y = mb.linear(x=x, weight=W1, bias=np.zeros(96, np.float32), name="fc1")
        y = mb.relu(x=y, name="relu")
        y = mb.linear(x=y, weight=W2, name="fc2")
        return mb.matmul(x=y, y=W3, name="mm")

    return save(prog, tmp_path_factory.mktemp("coreml") / "mlp.mlpackage", ct.target.iOS18)


INT4 = dict(dtype="int4", granularity="per_block", block_size=32)
CALIBRATED = {
    "gptq int4 per-block": (lambda: [stages.get("gptq_quantize_weights")(**INT4)], "constexpr_blockwise_shift_scale"),
    "gptq 4-bit LUT": (lambda: [stages.get("gptq_palettize_weights")(nbits=4)], "constexpr_lut_to_dense"),
    "weighted k-means 4-bit": (lambda: [stages.get("weighted_palettize_weights")(nbits=4)], "constexpr_lut_to_dense"),
    "mixed precision 4.5 bpw": (lambda: [stages.get("mixed_precision")(target_bpw=4.5)], None),
    # fc1 -> relu -> fc2: fc2's input scale folds into fc1's output channels and bias
    "awq then gptq int4": (lambda: [stages.get("awq_scale_weights")(target="int4_block"),
                                    stages.get("gptq_quantize_weights")(**INT4)], "constexpr_blockwise_shift_scale"),
}


def _calibrate(program):
    data = calibration_data({"x": _inputs(64, seed=1)})  # 64 samples: 16 batches of the fixed 4
    return stages.get("calibrate")(data=data, evaluator="interpreter").run(program).program


@pytest.fixture(scope="module")
def fp32(coreml_model):
    return import_coreml(str(coreml_model))


@pytest.fixture(scope="module")
def calibrated(fp32):
    return _calibrate(fp32)


def _outputs(program, x) -> np.ndarray:
    (name,) = [v.name for v in program.main.outputs]
    return np.concatenate([evaluate(program, {"x": x[i:i + BATCH]})[name] for i in range(0, len(x), BATCH)])


def test_calibration_statistics_cover_every_weight_of_the_coreml_program(calibrated):
    program = calibrated
    weights = {v.name for op in program.main.ops if op.op_type in ("linear", "matmul")
               for key, v in op.inputs.items() if key in ("weight", "y")}
    assert len(weights) == 3
    for name in weights:
        st = calibration_stats(program, name)
        assert st is not None and st["count"] == 64  # one row per sample for each layer
        assert st["input_moment"].shape[0] in (64, 96, 48)


@pytest.mark.parametrize("run", sorted(CALIBRATED))
def test_a_calibrated_stage_writes_a_valid_coreml_model(fp32, calibrated, tmp_path, run):
    make, expected_op = CALIBRATED[run]
    trace = Pipeline(make()).run(calibrated)
    result = without_calibration(trace.result)
    ops = {op.op_type for op in result.main.ops}
    if expected_op is not None:
        assert expected_op in ops, ops
    assert any(t.startswith("constexpr_") for t in ops)  # something was compressed
    out = export_coreml(result, tmp_path / "out.mlpackage")

    # coremltools reads the package and decompresses each weight exactly as our interpreter does
    model = ct.models.MLModel(str(out), skip_model_load=True)
    assert model.get_spec().WhichOneof("Type") == "mlProgram"
    theirs, ours = coreml_dense_weights(out), ir_dense_weights(import_coreml(str(out)))
    assert theirs and set(theirs) == set(ours)
    for name in theirs:
        np.testing.assert_allclose(theirs[name], ours[name], rtol=0, atol=1e-6, err_msg=name)

    # the re-imported package runs, close to the fp32 model on held-out inputs
    held_out = _inputs(32, seed=2)
    ref, got = _outputs(fp32, held_out), _outputs(import_coreml(str(out)), held_out)
    s = metrics.sums(ref, got)
    assert s.cosine > 0.98 and s.snr_db > 12, (run, s.cosine, s.snr_db)  # 4-bit: 16-25 dB here


def test_gptq_beats_rounding_on_the_coreml_model(fp32, calibrated):
    """GPTQ minimises each layer's output error on the calibration inputs: the whole model's
    output error on those inputs is below plain rounding onto the same int4 grid."""
    gptq = Pipeline([stages.get("gptq_quantize_weights")(**INT4)]).run(calibrated).result
    rtn = Pipeline([stages.get("affine_quantize_weights")(**INT4)]).run(fp32).result
    x = _inputs(64, seed=1)
    ref = _outputs(fp32, x)
    err_gptq = metrics.sums(ref, _outputs(without_calibration(gptq), x)).noise
    err_rtn = metrics.sums(ref, _outputs(rtn, x)).noise
    assert err_gptq < err_rtn, (err_gptq, err_rtn)


def test_awq_folds_on_the_coreml_model_and_keeps_its_function(fp32, calibrated):
    """The scale folds into the Core ML program (fc1's rows and bias divided, fc2's columns
    multiplied) and the program computes what it did."""
    out = stages.get("awq_scale_weights")(target="int4_block").run(calibrated)
    scaled = without_calibration(out.program)
    consts = lambda p: {op.outputs[0].name: op.outputs[0].val for op in p.main.ops if op.op_type == "const"}  # noqa: E731
    before, after = consts(fp32), consts(scaled)
    changed = {n for n in before if n in after and not np.array_equal(before[n], after[n])}
    # fc1's weight rows divided (its bias is zeros), fc2's columns multiplied and its rows divided
    # for the matmul after it, whose weight's rows are multiplied
    assert changed == {"fc1_weight_0", "fc2_weight_0", "mm_y_0"}, changed
    assert out.stats["scaled"] == 2
    x = _inputs(16, seed=3)
    np.testing.assert_allclose(_outputs(scaled, x), _outputs(fp32, x), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def coreml_embedding(tmp_path_factory):
    """An embedding lookup as coremltools writes one (gather with batch_dims=0 and
    validate_indices=False) and a linear layer over it."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((300, 32)).astype(np.float32)
    w = (rng.standard_normal((96, 32)) / 6).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 8), dtype=ct.converters.mil.mil.types.int32)],
                opset_version=ct.target.iOS18)
    def prog(ids):
        e = mb.gather(x=table, indices=ids, axis=0, batch_dims=0, validate_indices=False, name="emb")
        return mb.linear(x=e, weight=w, name="fc")

    return save(prog, tmp_path_factory.mktemp("coreml_emb") / "emb.mlpackage", ct.target.iOS18)


def test_a_coreml_embedding_table_is_calibrated_and_measured_end_to_end(coreml_embedding, tmp_path):
    program = import_coreml(str(coreml_embedding))
    # MIL's default batch_dims / validate_indices: the lookup is the core gather (interpretable)
    assert [op.op_type for op in program.main.ops if "gather" in op.op_type] == ["gather"]
    ids = np.random.default_rng(4).integers(0, 300, size=(24, 8)).astype(np.int32)
    name = program.main.inputs[0].name
    calibrated = stages.get("calibrate")(data=calibration_data({name: ids}), sensitivity=8).run(program).program
    (table,) = [k for k, st in calibrated.attrs["calibration"].items() if "token_counts" in st]
    result = stages.get("mixed_precision")(target_bpw=4.5).run(calibrated)
    a = result.stats["allocation"]
    assert a["measured_end_to_end"] == (table,) and "1 table(s) measured end to end" in a["proxy"]
    out = tmp_path / "out.mlpackage"
    export_coreml(without_calibration(result.program), str(out))
    back = import_coreml(str(out))
    x = {name: ids[:1]}
    got, want = evaluate(back, x), evaluate(program, x)
    (o,) = [v.name for v in program.main.outputs]
    assert metrics.cosine(np.asarray(got[o]), np.asarray(want[o])) > 0.99


def test_a_gather_with_other_than_mils_defaults_stays_foreign_with_all_its_inputs(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(6, 2)

    @mb.program(input_specs=[mb.TensorSpec(shape=(3,), dtype=ct.converters.mil.mil.types.int32)],
                opset_version=ct.target.iOS18)
    def prog(ids):
        return mb.gather(x=table, indices=ids, axis=0, batch_dims=0, validate_indices=True, name="emb")

    program = import_coreml(str(save(prog, tmp_path / "g.mlpackage", ct.target.iOS18)))
    (op,) = [o for o in program.main.ops if "gather" in o.op_type]
    assert op.op_type == "mil.gather" and {"batch_dims", "validate_indices"} <= set(op.inputs)


def test_pools_with_mils_default_ceil_mode_import_as_core_and_run(tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS18)
    def prog(x):
        m = mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", ceil_mode=False, name="mp")
        return mb.avg_pool(x=m, kernel_sizes=[3, 3], strides=[1, 1], pad_type="valid", ceil_mode=False, name="ap")

    program = import_coreml(str(save(prog, tmp_path / "p.mlpackage", ct.target.iOS18)))
    assert [op.op_type for op in program.main.ops if "pool" in op.op_type] == ["max_pool", "avg_pool"]
    pooled = x.reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5))           # 2x2 max, stride 2: [1, 2, 3, 3]
    (name,) = [v.name for v in program.main.outputs]
    got = evaluate(program, {program.main.inputs[0].name: x})[name]
    np.testing.assert_allclose(got, pooled.mean(axis=(2, 3), keepdims=True), rtol=1e-6)  # 3x3 mean of 3x3
