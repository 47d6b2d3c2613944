"""canonicalize_quantization: the eight seed passes + dead code elimination to a fixed point."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import stages
from ir import Program
from ir.builder import TensorSpec, build_function, program
from stages.quantization import SEED_PASS_ORDER, canonicalize_quantization
from tests.stages.equivalence import assert_equivalent, assert_idempotent, inputs_for

F32 = np.float32
SEED_PASSES = {
    "merge_affine_dequantize_with_consecutive_ops", "int_op_canonicalization",
    "nullify_redundant_quantization_zero_point", "dequantize_quantize_pair_elimination",
    "distributive_quantized_binary_op_scale_normalization", "dequantize_to_constexpr",
    "reorder_lut_per_channel_scale", "canonicalize_quantized_lut_pattern",
}


def test_order_holds_every_seed_pass_and_dce_and_is_registered():
    assert set(SEED_PASS_ORDER) == SEED_PASSES | {"dead_code_elimination"}
    assert SEED_PASS_ORDER[-1] == "dead_code_elimination"
    assert stages.get("canonicalize_quantization") is canonicalize_quantization
    # coremltools' relative order: canonicalize, eliminate pairs, normalize, then constexprs
    pos = {n: SEED_PASS_ORDER.index(n) for n in SEED_PASSES}
    assert pos["int_op_canonicalization"] < pos["dequantize_quantize_pair_elimination"] \
        < pos["distributive_quantized_binary_op_scale_normalization"] < pos["dequantize_to_constexpr"] \
        < pos["merge_affine_dequantize_with_consecutive_ops"]


def test_nothing_to_do_returns_the_input():
    @program(inputs={"x": TensorSpec((2, 3))})
    def net(b, x):
        return b.relu(x=b.add(x=x, y=F32(1)))
    assert canonicalize_quantization(net) is net


def _mixed(b, x, y, w_scale=F32(0.5)):
    """Several seed patterns chained: int reshape, redundant zero point, dq->q pair,
    a quantized add, a const dequantize followed by a transpose."""
    dx = b.dequantize(input=x, scale=F32(0.5), zero_point=np.int8(0))  # zp 0 -> none
    q = b.quantize(input=b.reshape(x=dx, shape=[3, 2]), scale=F32(0.5), output_dtype="int8")  # int reshape
    dq = b.dequantize(input=q, scale=F32(0.5))
    again = b.quantize(input=dq, scale=F32(0.5), output_dtype="int8")  # identical pair
    s = b.add(x=b.dequantize(input=again, scale=F32(0.5)), y=b.dequantize(input=y, scale=F32(0.25)))
    z = b.quantize(input=b.relu(x=s), scale=F32(1.0), output_dtype="int8", name="z")
    wq = np.arange(6, dtype=np.int8).reshape(2, 3)
    w = b.transpose(x=b.dequantize(input=b.const(wq), scale=w_scale, zero_point=np.int8(0)), perm=[1, 0])
    fc = b.matmul(x=b.cast(x=z, dtype="fp32"), y=b.transpose(x=w, perm=[1, 0]), name="fc")
    return z, fc


def _mixed_program(opset="iOS17"):
    @program(inputs={"x": TensorSpec((2, 3), "int8"), "y": TensorSpec((3, 2), "int8")}, opset=opset)
    def net(b, x, y):
        return _mixed(b, x, y)
    return net


def test_mixed_graph_reaches_the_canonical_form():
    before = _mixed_program()
    result = canonicalize_quantization.run(before)
    after = result.program
    kinds = [op.op_type for op in after.main.ops if op.op_type != "const"]
    assert kinds == ["reshape", "dequantize", "dequantize", "add", "relu", "quantize",
                     "cast", "constexpr_affine_dequantize", "matmul"]
    ops = {op.name: op for op in after.main.ops}
    assert ops["z"].scale.val == F32(4.0)  # normalized by s_y = 0.25
    assert all(op.zero_point is None for op in after.main.ops if op.op_type in ("quantize", "dequantize"))
    changed = set(result.stats["changed_by"])
    assert {"int_op_canonicalization", "nullify_redundant_quantization_zero_point",
            "dequantize_quantize_pair_elimination", "distributive_quantized_binary_op_scale_normalization",
            "dequantize_to_constexpr", "merge_affine_dequantize_with_consecutive_ops",
            "dead_code_elimination"} <= changed
    assert result.stats["stage_runs"] <= 3 * len(SEED_PASS_ORDER)
    rng = np.random.default_rng(0)
    ins = {"x": rng.integers(-128, 128, (2, 3)).astype(np.int8), "y": rng.integers(-128, 128, (3, 2)).astype(np.int8)}
    # z may move by one quantization step (scales divided by s_y); fc reads z: one step of z
    # times the largest weight column sum bounds it
    assert_equivalent(before, canonicalize_quantization, ins, atol=1 * 0.5 * 15,
                      why="s_x/s_y and s_z/s_y rounding: z within one step, fc within one step of z")


def test_lut_patterns_in_an_ios18_function():
    rng = np.random.default_rng(1)

    def body(b, x):
        idx = b.const(rng.integers(0, 4, (2, 3)).astype(np.uint8), dtype="uint2")
        lut_f = b.constexpr_lut_to_dense(indices=idx, lut=rng.standard_normal((1, 1, 4, 1)).astype(F32))
        a = b.linear(x=x, weight=b.constexpr_blockwise_shift_scale(data=lut_f, scale=np.array([[0.5], [2.0]], F32)))
        lut_i = b.constexpr_lut_to_dense(indices=idx, lut=rng.integers(-9, 9, (2, 1, 4, 1)).astype(np.int8))
        wi = b.constexpr_blockwise_shift_scale(data=lut_i, scale=np.array([[0.5], [2.0]], F32))
        return b.add(x=a, y=b.linear(x=x, weight=wi))

    prog = Program.make([build_function(body, {"x": TensorSpec((4, 3))}, "main", "iOS18")])
    after = assert_equivalent(prog, canonicalize_quantization, {"x": rng.standard_normal((4, 3)).astype(F32)},
                              atol=1e-5, rtol=1e-5, why="reorder_lut_per_channel_scale scales after the sum")
    kinds = [op.op_type for op in after.main.ops if op.op_type != "const"]
    assert kinds == ["constexpr_lut_to_dense", "linear", "mul",  # float LUT: scale moved after the layer
                     "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "linear", "add"]  # int8 LUT


def test_idempotent_nested_and_multi_function():
    def body(b, x, y, p):
        branch = lambda bb: _mixed(bb, x, y)[0]  # noqa: E731
        return b.cond(pred=p, true_fn=branch, false_fn=branch)

    specs = {"x": TensorSpec((2, 3), "int8"), "y": TensorSpec((3, 2), "int8"), "p": TensorSpec((), "bool")}
    prog = Program.make([build_function(body, specs, "main", "iOS17"), build_function(body, specs, "g", "iOS18")])
    once = assert_idempotent(prog, canonicalize_quantization)
    assert canonicalize_quantization(once) is once
    for f in ("main", "g"):
        inner = [op.op_type for cond in once.functions[f].ops if cond.op_type == "cond"
                 for blk in cond.blocks for op in blk.ops]
        assert inner.count("dequantize") == 4 and inner.count("quantize") == 2 and inner.count("reshape") == 2  # 2 branches


def test_max_rounds_must_be_positive():
    with pytest.raises(ValueError, match="max_rounds"):
        canonicalize_quantization(_mixed_program(), max_rounds=0)


# ---- property -----------------------------------------------------------------------------

@st.composite
def mixed_programs(draw):
    opset = draw(st.sampled_from(["iOS17", "iOS18"]))
    w_scale = F32(draw(st.sampled_from([0.5, 0.125, 1.0])))
    drop = draw(st.booleans())

    @program(inputs={"x": TensorSpec((2, 3), "int8"), "y": TensorSpec((3, 2), "int8")}, opset=opset)
    def net(b, x, y):
        z, fc = _mixed(b, x, y, w_scale)
        return z if drop else (z, fc)
    return net


@given(prog=mixed_programs(), data=st.data())
def test_property_outputs_kept_within_the_normalization_step(prog, data):
    # only the distributive normalization rounds differently: z within 1 step, and
    # fc = z @ w within one step of z times the largest column sum of |w| (15 * w_scale <= 15)
    after = assert_equivalent(prog, canonicalize_quantization, data.draw(inputs_for(prog)), atol=15,
                              why="scale normalization: one quantization step of z, propagated through fc")
    assert canonicalize_quantization(after) is after


# ---- fixed point and per-pattern counts (ir.fixpoint, stats["patterns"]) -------------------

def _pair_chain():
    """q1 -> dq1 -> q2 (same params: a pair) -> dq2 -> q3 (other scale: no pair) -> dq3."""
    @program(inputs={"x": TensorSpec((2, 3))})
    def net(b, x):
        q1 = b.quantize(input=x, scale=F32(0.5), output_dtype="int8")
        q2 = b.quantize(input=b.dequantize(input=q1, scale=F32(0.5)), scale=F32(0.5), output_dtype="int8")
        q3 = b.quantize(input=b.dequantize(input=q2, scale=F32(0.5)), scale=F32(0.25), output_dtype="int8")
        return b.dequantize(input=q3, scale=F32(0.25))
    return net


def test_a_seed_stage_reports_its_pattern_counts():
    from stages.quantization import dequantize_quantize_pair_elimination as pairs
    net = _pair_chain()
    res = pairs.run(net)
    # dq1 -> q2 cancels (matched, rewritten); dq2 -> q3 differs in scale (no match); the
    # last dequantize is the block output (no match); sweep 2 finds nothing new
    assert dict(res.stats["patterns"]) == {"dequantize_quantize_pair_elimination": {"matched": 1, "rewritten": 1}}
    assert [op.op_type for op in res.program.main.ops if op.op_type != "const"] == ["quantize", "dequantize",
                                                                                     "quantize", "dequantize"]
    again = pairs.run(res.program)
    assert again.program is res.program
    assert again.stats["patterns"]["dequantize_quantize_pair_elimination"] == {"matched": 0, "rewritten": 0}


def test_the_preset_records_convergence_rounds_and_summed_counts():
    net = _pair_chain()
    res = canonicalize_quantization.run(net)
    assert res.stats["converged"] is True
    # the first cycle changes the program, the second leaves it: two cycles begun
    assert res.stats["rounds"] == 2
    assert res.stats["patterns"]["dequantize_quantize_pair_elimination"]["rewritten"] == 1
    assert res.stats["patterns"]["dead_op"]["rewritten"] >= 1  # the cancelled pair's consts go


def test_the_preset_warns_when_its_round_limit_is_too_small():
    from ir.fixpoint import FixedPointNotReached
    with pytest.warns(FixedPointNotReached, match="canonicalize_quantization"):
        res = canonicalize_quantization.bind(max_rounds=1).run(_pair_chain())
    assert res.stats["converged"] is False and res.stats["rounds"] == 1
    assert res.program is not None


@pytest.mark.parametrize("name", sorted(set(SEED_PASS_ORDER) | {"const_deduplication", "decompress_weights"}))
def test_every_stage_on_the_driver_reports_pattern_counts(name):
    res = stages.get(name).run(_pair_chain())
    counts = res.stats["patterns"]
    assert counts and all(set(c) == {"matched", "rewritten"} and 0 <= c["rewritten"] <= c["matched"]
                          for c in counts.values())
