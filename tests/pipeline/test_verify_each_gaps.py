"""verify="each" at defaults catches wrong stages the earlier contracts let through: each test
runs a correct stage (it passes) and a wrong one (a monkeypatched internal, the kind of bug a
mutation stands for), which must fail naming the step, the weight or site and the reason."""
import importlib

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from pipeline import EquivalenceError, Pipeline
from pipeline.errors import InvalidStepOutput

F32, F16 = np.float32, np.float16


def _matmul_and_linear(dtype=F32, seed=0):
    """x [2, 64] -> linear(w1 [48, 64]) -> matmul(y = w2 [48, 64]): the two input axes differ
    (linear: axis 1; matmul y: axis 0)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((48, 64)).astype(dtype)
    w2 = rng.standard_normal((48, 64)).astype(dtype)
    dt = "fp16" if dtype == F16 else "fp32"

    @program(inputs={"x": TensorSpec((2, 64), dt)})
    def net(b, x):
        h = b.linear(x=x, weight=b.const(w1, name="w1"), name="h")
        return b.matmul(x=h, y=b.const(w2, name="w2"), name="y")
    return net


def _fails(spec, prog, *match):
    with pytest.raises(EquivalenceError) as e:
        Pipeline.from_spec(spec).run(prog, verify="each")
    msg = str(e.value)
    assert e.value.step == 0 and "broke its contract" in msg, msg
    for m in match:
        assert m in msg, msg
    return msg


def _passes(spec, prog):
    trace = Pipeline.from_spec(spec).run(prog, verify="each")
    assert trace.steps[0].changed and trace.steps[0].verification.passed
    return trace


# ---- sparsify: n:m exactly, along the consumer's input axis --------------------------------------

NM = "sparsify_weights{n_m_ratio=[2,4]}"


def test_nm_along_the_output_axis_fails(monkeypatch):
    import stages.compression.sparsify as sparsify

    _passes(NM, _matmul_and_linear())
    real = sparsify.nm_mask
    monkeypatch.setattr(sparsify, "nm_mask", lambda w, n, m, axis=1, name=None: real(w, n, m, axis=0, name=name))
    _fails(NM, _matmul_and_linear(), "weight 'w1'", "along axis 1 (its consumer's input axis)")


def test_nm_zeroing_one_too_many_fails(monkeypatch):
    import stages.compression.sparsify as sparsify

    real = sparsify.nm_mask
    monkeypatch.setattr(sparsify, "nm_mask", lambda w, n, m, axis=1, name=None: real(w, n + 1, m, axis=axis, name=name))
    _fails(NM, _matmul_and_linear(), "wrong number of zeros", "3 instead of 2 (2:4)")


# ---- affine: positive scales, the range ends reached, blocks along the input axis --------------

def _zero_channel(dtype=F32):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((48, 64)).astype(dtype)
    w[5] = 0
    dt = "fp16" if dtype == F16 else "fp32"

    @program(inputs={"x": TensorSpec((2, 64), dt)})
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w"), name="y")
    return net


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the bug divides 0 by 0
def test_an_all_zero_channel_with_scale_zero_fails(monkeypatch):
    import stages.compression.numeric.affine as affine

    spec = 'affine_quantize_weights{mode="linear",granularity="per_channel"}'
    _passes(spec, _zero_channel())
    real = affine._store_scale
    monkeypatch.setattr(affine, "_store_scale", lambda a, b, lo, hi, zp, dtype: np.where(
        b - a == 0, 0, real(a, b, lo, hi, zp, dtype)).astype(dtype))
    _fails(spec, _zero_channel(), "weight 'w'", "scale(s) not finite and > 0")


def test_per_block_blocks_along_the_wrong_axis_fail(monkeypatch):
    import stages.compression.affine as affine

    spec = 'affine_quantize_weights{dtype="int4",granularity="per_block",block_size=32}'
    _passes(spec, _matmul_and_linear())
    real = affine._axes
    monkeypatch.setattr(affine, "_axes", lambda view, w: (real(view, w)[0], 1))  # axis 1 whatever the consumer
    _fails(spec, _matmul_and_linear(), "weight 'w2'", "scale of shape (1, 2)", "gives (2, 64)")


def test_per_block_falling_back_to_a_smaller_block_fails(monkeypatch):
    import stages.compression.affine as affine

    spec = 'affine_quantize_weights{dtype="int4",granularity="per_block",block_size=16}'
    _passes(spec, _matmul_and_linear())
    real = affine._block_size
    monkeypatch.setattr(affine, "_block_size", lambda w, params, in_axis: real(w, params, in_axis) // 2)
    _fails(spec, _matmul_and_linear(), "weight 'w1'", "per_block (block_size 16, along the input axis)")


# ---- palettize: vectors along the vector axis, each reading its nearest entry -------------------

def test_vectors_taken_along_the_wrong_axis_fail(monkeypatch):
    pal = importlib.import_module("stages.compression.numeric.palettize")  # the package re-exports a function of that name
    spec = 'palettize_weights{cluster_dim=2,granularity="per_grouped_channel",group_size=16,nbits=2}'
    _passes(spec, _matmul_and_linear())

    def wrong(rows, cluster_dim, group_channels):
        return np.ascontiguousarray(rows.reshape(rows.shape[0], group_channels // cluster_dim, cluster_dim, -1)
                                    ).reshape(rows.shape[0], -1, cluster_dim)
    monkeypatch.setattr(pal, "_vector_rows", wrong)
    _fails(spec, _matmul_and_linear(), "weight 'w1'", "do not read their nearest LUT entry")


# ---- quantization passes: the form of the opset, no site left ------------------------------------

def _const_dequantize(opset):
    data = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)

    @program(inputs={"x": TensorSpec((3, 4), "fp32")}, opset=opset)
    def net(b, x):
        w = b.dequantize(input=b.const(data, name="q"), scale=np.float32(0.5), name="w")
        return b.add(x=x, y=w, name="y")
    return net


def test_iOS18_functions_given_the_iOS16_form_fail(monkeypatch):
    d2c = importlib.import_module("stages.quantization.dequantize_to_constexpr")

    _passes("dequantize_to_constexpr", _const_dequantize("iOS18"))
    _passes("dequantize_to_constexpr", _const_dequantize("iOS16"))
    monkeypatch.setattr(d2c, "has_blockwise_forms", lambda opset: False)
    _fails("dequantize_to_constexpr", _const_dequantize("iOS18"), "new constexpr_affine_dequantize",
           "opset iOS18, whose form is constexpr_blockwise_shift_scale", "postcondition")


def test_a_dequantize_to_constexpr_that_declines_fails(monkeypatch):
    d2c = importlib.import_module("stages.quantization.dequantize_to_constexpr")

    declines = d2c.Pattern("dequantize_to_constexpr", lambda op, ctx: None, d2c.to_constexpr, frozenset({"dequantize"}))
    monkeypatch.setattr(d2c, "PATTERN", declines)
    with pytest.raises(EquivalenceError, match="dequantize 'w' of constant data is left"):
        Pipeline.from_spec("dequantize_to_constexpr").run(_const_dequantize("iOS18"), verify="each")


def _quantized_reshape(opset):
    @program(inputs={"x": TensorSpec((2, 6), "int8")}, opset=opset)
    def net(b, x):
        dq = b.dequantize(input=x, scale=np.float32(0.1), name="dq")
        r = b.reshape(x=dq, shape=[3, 4], name="r")
        return b.quantize(input=r, scale=np.float32(0.1), output_dtype="int8", name="q")
    return net


def test_an_int_reshape_before_iOS17_fails(monkeypatch):
    ioc = importlib.import_module("stages.quantization.int_op_canonicalization")

    _passes("int_op_canonicalization", _quantized_reshape("iOS17"))
    assert not Pipeline.from_spec("int_op_canonicalization").run(_quantized_reshape("iOS16"),
                                                                  verify="each").steps[0].changed
    monkeypatch.setattr(ioc, "INT_OP_VERSIONS", {"reshape": frozenset({"iOS15", "iOS17"})})
    _fails("int_op_canonicalization", _quantized_reshape("iOS16"), "new integer reshape 'q'", "opset iOS16")


def _lut_scaled_linear():
    rng = np.random.default_rng(1)

    @program(inputs={"x": TensorSpec((4, 3), "fp32")}, opset="iOS18")
    def net(b, x):
        idx = b.const(rng.integers(0, 4, (2, 3)).astype(np.uint8), dtype="uint2", name="idx")
        lut = b.constexpr_lut_to_dense(indices=idx, lut=rng.standard_normal((1, 1, 4, 1)).astype(F32), name="lut")
        w = b.constexpr_blockwise_shift_scale(data=lut, scale=np.array([[0.5], [2.0]], F32), name="w")
        return b.linear(x=x, weight=w, name="y")
    return net


def test_a_scale_reorder_that_declines_fails(monkeypatch):
    reorder = importlib.import_module("stages.quantization.reorder_lut_per_channel_scale")

    _passes("reorder_lut_per_channel_scale", _lut_scaled_linear())
    monkeypatch.setitem(reorder.MOVE_SCALE, "linear", lambda reader, m: None)  # refuses everywhere
    _fails("reorder_lut_per_channel_scale", _lut_scaled_linear(), "per-channel scale 'w' of LUT 'lut'",
           "could move behind 'y' and was not")


# ---- checking never crashes: an invalid output or a failing check is a failed check --------------

def _drops_dequantizes(p, *, context=None):
    """Deletes every dequantize although ops still read them: an invalid program."""
    from ir import Program
    from stages.base import StageResult

    fn = p.functions["main"]
    keep = [op for op in fn.block.ops if op.op_type != "dequantize"]
    return StageResult(Program.make([fn.replace(block=fn.block.replace(ops=keep))]), {})


def test_an_invalid_step_output_is_a_broken_contract_under_verify_each():
    from stages.base import Stage
    from stages.contracts import exact

    prog = _quantized_reshape("iOS17")
    st = Stage("test_gaps_breaks_the_ir", _drops_dequantizes, "1", contract=exact())
    with pytest.raises(InvalidStepOutput) as plain:  # without verify: the invalid output, as before
        Pipeline([st]).run(prog)
    assert not isinstance(plain.value, EquivalenceError)
    with pytest.raises(EquivalenceError) as e:  # verify="each": also a failed check naming the step
        Pipeline([st]).run(prog, verify="each")
    assert isinstance(e.value, InvalidStepOutput) and e.value.step == 0
    assert "stage 'test_gaps_breaks_the_ir', broke its contract: returned an invalid program" in str(e.value)
    assert "%dq before its definition" in str(e.value)
    assert not e.value.report.passed and "ir.validate" in str(e.value.report.violations[0])


def test_a_check_that_raises_is_reported_not_raised(monkeypatch):
    import stages.contracts.step as step
    from pipeline.contracts import check_step

    prog = _zero_channel()
    trace = Pipeline.from_spec("int8").run(prog)

    def boom(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")
    monkeypatch.setattr(step, "check_outputs", boom)
    report = check_step(prog, trace.result, trace.steps[0].stage, trace.steps[0].stats, samples=1)
    assert not report.passed
    assert "checking its output raised IndexError: index 7 is out of bounds" in report.summary()
    assert "stage 'affine_quantize_weights'" in report.summary()


# ---- the exact / within contracts on programs that reach the bug --------------------------------

def _fp16_scaled_add():
    @program(inputs={"a": TensorSpec((4,), "int8"), "b": TensorSpec((4,), "int8")})
    def net(bb, a, b):
        da = bb.dequantize(input=a, scale=np.float16(60000), name="da")
        db = bb.dequantize(input=b, scale=np.float16(0.5), name="db")
        return bb.quantize(input=bb.add(x=da, y=db, name="s"), scale=np.float16(1000), output_dtype="int8", name="q")
    return net


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the bug's fp16 overflow
def test_a_normalization_that_overflows_fp16_fails(monkeypatch):
    dsn = importlib.import_module("stages.quantization.distributive_scale_normalization")
    spec = "distributive_quantized_binary_op_scale_normalization"
    _passes(spec, _fp16_scaled_add())  # divides by 60000 instead: 0.5 / 60000 is still an fp16
    monkeypatch.setattr(dsn, "FP16_MAX", 6.5504e8)
    _fails(spec, _fp16_scaled_add(), "dequantize 'da_normalized' has scale inf", "promise: finite positive scales")


def _uint8_const_zp_127():
    data = np.array([[0, 255, 3], [254, 128, 127]], np.uint8)

    @program(inputs={"x": TensorSpec((2, 3), "fp32")})
    def net(b, x):
        d = b.dequantize(input=data, scale=np.float32(0.01), zero_point=np.uint8(127), name="dq")
        return b.add(x=x, y=d, name="y")
    return net


def test_a_zero_point_flip_at_127_fails(monkeypatch):
    nz = importlib.import_module("stages.quantization.nullify_zero_point")
    spec = "nullify_redundant_quantization_zero_point"
    assert not Pipeline.from_spec(spec).run(_uint8_const_zp_127(), verify="each").steps[0].changed
    monkeypatch.setattr(nz, "FLIP", {-128: ("int8", "uint8"), 127: ("uint8", "int8")})
    _fails(spec, _uint8_const_zp_127(), "output 'y'", "promise: exact")


def test_grouped_luts_along_the_input_axis_fail(monkeypatch):
    pal = importlib.import_module("stages.compression.palettize")
    spec = 'palettize_weights{granularity="per_grouped_channel",group_size=16,nbits=2}'
    _passes(spec, _matmul_and_linear())
    _passes('palettize_weights{granularity="per_grouped_channel",group_size=16,nbits=2,channel_axis=1}',
            _matmul_and_linear())  # asked for: the contract follows channel_axis
    monkeypatch.setattr(pal, "_channel_axis", lambda view, params: 1)  # the input axis of w1
    _fails(spec, _matmul_and_linear(), "weight 'w1'", "split axis 1; per_grouped_channel splits only the "
                                                      "channel axis 0")
