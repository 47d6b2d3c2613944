"""distributive_quantized_binary_op_scale_normalization: scalar s_y becomes 1."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import TensorSpec, build_function, program
from ir.interpret import evaluate
from stages.quantization import distributive_quantized_binary_op_scale_normalization as normalize
from tests.stages.equivalence import assert_equivalent, assert_idempotent, inputs_for

F32 = np.float32
SHAPE = (2, 3)
INPUTS = {"x": TensorSpec(SHAPE, "int8"), "y": TensorSpec(SHAPE, "int8")}


def _chain(b, x, y, s_x, s_y, s_z, op="add", relu=False, ax_x=None, ax_y=None, zp_x=None):
    dx = b.dequantize(input=x, scale=s_x, axis=ax_x, zero_point=zp_x, name="dx")
    dy = b.dequantize(input=y, scale=s_y, axis=ax_y, name="dy")
    z = getattr(b, op)(x=dx, y=dy, name="op")
    if relu:
        z = b.relu(x=z, name="relu")
    return b.quantize(input=z, scale=s_z, output_dtype="int8", name="z")


def _net(**kw):
    @program(inputs=INPUTS)
    def net(b, x, y):
        return _chain(b, x, y, **kw)
    return net


def _ops(prog):
    return {op.name: op for op in prog.main.block.walk()}


def _live_types(prog):
    """Op types on the path to the outputs, in order (the old dequantizes are left for DCE)."""
    from stages.cleanup import dead_code_elimination
    return [op.op_type for op in dead_code_elimination(prog).main.ops if op.op_type != "const"]


def _run_both(before, after, seed=0):
    rng = np.random.default_rng(seed)
    ins = {k: rng.integers(-128, 128, SHAPE).astype(np.int8) for k in ("x", "y")}
    return evaluate(before, ins)["z"], evaluate(after, ins)["z"]


# ---- the seed's example ---------------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "sub"])
@pytest.mark.parametrize("relu", [False, True])
def test_scalar_s_y_is_normalized_to_one(op, relu):
    before = _net(s_x=F32(0.5), s_y=F32(0.25), s_z=F32(0.75), op=op, relu=relu, zp_x=np.int8(3))
    after = normalize(before)
    ops = _ops(after)
    binop = ops["op"]
    new_x, new_y = (next(o for o in after.main.ops if o.outputs[0] is v) for v in (binop.x, binop.y))
    assert new_x.op_type == new_y.op_type == "dequantize"
    assert new_x.scale.val == F32(2.0) and new_x.zero_point.val == 3  # s_x / s_y, zp kept
    assert new_y.scale.val == F32(1.0) and new_y.zero_point is None
    assert ops["z"].op_type == "quantize" and ops["z"].scale.val == F32(3.0)  # s_z / s_y, name kept
    assert _live_types(after) == ["dequantize", "dequantize", op] + ["relu"] * relu + ["quantize"]
    want, got = _run_both(before, after)
    assert np.abs(want.astype(int) - got.astype(int)).max() <= 1


def test_only_s_x_scalar_swaps_the_roles():
    s_y = np.array([0.5, 0.25, 0.125], F32)
    after = normalize(_net(s_x=F32(0.5), s_y=s_y, s_z=F32(1.0), ax_y=1))
    binop = _ops(after)["op"]
    new_x, new_y = (next(o for o in after.main.ops if o.outputs[0] is v) for v in (binop.x, binop.y))
    assert new_x.scale.val == F32(1.0) and new_x.axis is None  # x now carries scale 1
    assert new_y.scale.val.tolist() == [1.0, 0.5, 0.25] and new_y.axis.val == 1
    assert _ops(after)["z"].scale.val == F32(2.0)


def test_fp16_scales_stay_fp16():
    @program(inputs=INPUTS)
    def net(b, x, y):
        return _chain(b, x, y, s_x=np.float16(0.5), s_y=np.float16(0.25), s_z=np.float16(0.5))
    after = normalize(net)
    assert _ops(after)["z"].scale.dtype == "fp16" and _ops(after)["z"].scale.val == np.float16(2.0)


def _fp16_net(s_x, s_y, s_z):
    @program(inputs=INPUTS)
    def net(b, x, y):
        return _chain(b, x, y, s_x=np.float16(s_x), s_y=np.float16(s_y), s_z=np.float16(s_z))
    return net


def test_fp16_values_that_would_overflow_take_the_other_direction():
    # dividing by s_y = 2^-13 gives s_x' = 0.75 * 8192 = 6144, an fp16 scale, but x = 100
    # then dequantizes to 614400: inf in fp16. Dividing by s_x instead keeps every value finite.
    net = _fp16_net(0.75, 2.0 ** -13, 4.0)
    x = np.full(SHAPE, 100, np.int8)
    y = np.zeros(SHAPE, np.int8)
    (z,) = evaluate(net, {"x": x, "y": y}).values()
    assert np.all(z == 19)  # 100 * 0.75 / 4 = 18.75 -> 19, by hand
    after = assert_equivalent(net, normalize, {"x": x, "y": y})
    assert _ops(after)["dx_normalized"].scale.val == np.float16(1.0)
    assert _ops(after)["dy_normalized"].scale.val == np.float16(2.0 ** -13 / 0.75)


def test_fp16_values_that_would_overflow_either_way_are_refused():
    # by s_y: x * 32768 overflows fp16; by s_x: s_z / s_x = 2^-25 underflows it
    net = _fp16_net(4.0, 2.0 ** -13, 2.0 ** -23)
    assert normalize(net) is net


# ---- refusals: output `is` input ------------------------------------------------------

VEC = np.array([0.5, 0.25, 0.125], F32)


@pytest.mark.parametrize("case", [
    dict(s_x=VEC, s_y=VEC, s_z=F32(1.0), ax_x=1, ax_y=1),  # both vectors
    dict(s_x=VEC, s_y=F32(1e-5), s_z=F32(1.0), ax_x=1),  # s_x/s_y overflows fp16; x cannot divide
    dict(s_x=VEC * F32(1e-6), s_y=F32(10.0), s_z=F32(1.0), ax_x=1),  # s_x/s_y underflows fp16
    dict(s_x=F32(1.0), s_y=F32(1e-5), s_z=F32(1e-12)),  # overflow one way, s_z/s_x underflow the other
    dict(s_x=F32(0.5), s_y=F32(1.0), s_z=F32(1.0)),  # already normalized
], ids=["vector_s_y", "fp16_overflow", "fp16_underflow", "both_ways_unsafe", "already_one"])
def test_refused(case):
    net = _net(**case)
    assert normalize(net) is net


def test_multiple_readers_of_the_binary_op_refused():
    @program(inputs=INPUTS)
    def net(b, x, y):
        s = b.add(x=b.dequantize(input=x, scale=F32(0.5)), y=b.dequantize(input=y, scale=F32(0.25)))
        return b.quantize(input=s, scale=F32(1.0), output_dtype="int8"), b.relu(x=s)
    assert normalize(net) is net


@pytest.mark.parametrize("exposed", ["dx", "op", "relu"])
def test_intermediate_block_output_refused(exposed):
    @program(inputs=INPUTS)
    def net(b, x, y):
        z = _chain(b, x, y, s_x=F32(0.5), s_y=F32(0.25), s_z=F32(1.0), relu=True)
        return z, _ops_of(b)[exposed]
    assert normalize(net) is net


def _ops_of(builder):
    return {op.name: op.outputs[0] for op in builder.ops}


def test_no_quantize_after_refused():
    @program(inputs=INPUTS)
    def net(b, x, y):
        return b.add(x=b.dequantize(input=x, scale=F32(0.5)), y=b.dequantize(input=y, scale=F32(0.25)))
    assert normalize(net) is net


def test_quantize_inside_a_nested_block_is_not_claimed():
    @program(inputs={**INPUTS, "p": TensorSpec((), "bool")})
    def net(b, x, y, p):
        s = b.add(x=b.dequantize(input=x, scale=F32(0.5)), y=b.dequantize(input=y, scale=F32(0.25)))
        q = lambda bb: bb.quantize(input=s, scale=F32(1.0), output_dtype="int8")  # noqa: E731
        return b.cond(pred=p, true_fn=q, false_fn=q)
    assert normalize(net) is net


# ---- nested blocks, several functions, idempotence ------------------------------------

def test_pattern_inside_cond_branches_and_in_every_function():
    def body(b, x, y, p):
        def branch(s_y):
            return lambda bb: _chain(bb, x, y, s_x=F32(0.5), s_y=F32(s_y), s_z=F32(1.0))
        return b.cond(pred=p, true_fn=branch(0.25), false_fn=branch(0.125), name="c")

    specs = {**INPUTS, "p": TensorSpec((), "bool")}
    prog = Program.make([build_function(body, specs, "main"), build_function(body, specs, "second")])
    after = normalize(prog)
    for f in ("main", "second"):
        quantizes = [op for op in after.functions[f].block.walk() if op.op_type == "quantize"]
        assert sorted(float(q.scale.val) for q in quantizes) == [4.0, 8.0]
        ins = {"x": np.arange(6, dtype=np.int8).reshape(SHAPE), "y": -np.arange(6, dtype=np.int8).reshape(SHAPE)}
        for p in (True, False):
            a = evaluate(prog, {**ins, "p": np.array(p)}, f)["c"]
            b = evaluate(after, {**ins, "p": np.array(p)}, f)["c"]
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert normalize(after) is after


def test_idempotent():
    once = assert_idempotent(_net(s_x=F32(0.3), s_y=F32(0.7), s_z=F32(0.9)), normalize)
    assert normalize(once) is once


# ---- property ---------------------------------------------------------------------

@st.composite
def quantized_binary_programs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    fdt = draw(st.sampled_from(["fp32", "fp16"]))
    npf = np.float16 if fdt == "fp16" else np.float32
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    in_dt = {k: draw(st.sampled_from(["int8", "uint8"])) for k in ("x", "y")}

    def params(k):
        axis = draw(st.none() | st.integers(0, len(shape) - 1))
        pshape = () if axis is None else (shape[axis],)
        scale = rng.uniform(0.01, 1.0, pshape).astype(npf)
        zp = draw(st.sampled_from([None, "random"]))
        lo, hi = (-128, 127) if in_dt[k] == "int8" else (0, 255)
        zp = None if zp is None else rng.integers(lo, hi, pshape, endpoint=True).astype(in_dt[k])
        return dict(scale=scale, axis=axis, zero_point=zp)

    px, py = params("x"), params("y")
    s_z = npf(rng.uniform(1.0, 3.0) * max(px["scale"].max(), py["scale"].max()))
    op = draw(st.sampled_from(["add", "sub"]))
    relu, extra = draw(st.booleans()), draw(st.booleans())
    out_dt = draw(st.sampled_from(["int8", "uint8"]))

    @program(inputs={k: TensorSpec(shape, in_dt[k]) for k in ("x", "y")})
    def net(b, x, y):
        dx, dy = b.dequantize(input=x, **px), b.dequantize(input=y, **py)
        v = getattr(b, op)(x=dx, y=dy)
        if relu:
            v = b.relu(x=v)
        z = b.quantize(input=v, scale=s_z, output_dtype=out_dt)
        return (z, b.mul(x=dx, y=dy)) if extra else z  # extra: the dequantizes have other readers
    return net


@given(prog=quantized_binary_programs(), data=st.data())
def test_property_same_outputs_within_one_quantization_step(prog, data):
    # Not bit-exact by design: the seed divides every scale by s_y, and s_x/s_y, s_z/s_y
    # are rounded (to fp32 or fp16) before use, so the value before `round` moves by a
    # few ulps and may cross a .5 boundary: the quantized result may differ by 1 step.
    # The float outputs of the other readers (`extra`) must stay exact.
    after = assert_equivalent(prog, normalize, data.draw(inputs_for(prog)), atol=1,
                              why="s_x/s_y and s_z/s_y are rounded: at most one quantization step")
    assert normalize(after) is after


# ---- cross-check with coremltools ---------------------------------------------------

@pytest.mark.parametrize("relu", [False, True])
def test_same_ops_as_coremltools(relu):
    pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE, dtype=_ct_int8()), mb.TensorSpec(shape=SHAPE, dtype=_ct_int8())])
    def theirs(x, y):
        s = mb.add(x=mb.dequantize(input=x, scale=F32(0.5)), y=mb.dequantize(input=y, scale=F32(0.25)))
        if relu:
            s = mb.relu(x=s)
        return mb.quantize(input=s, scale=F32(0.75), output_dtype="int8")

    PASS_REGISTRY["common::distributive_quantized_binary_op_scale_normalization"](theirs)
    their_ops = [op for op in theirs.functions["main"].operations if op.op_type != "const"]
    ours = normalize(_net(s_x=F32(0.5), s_y=F32(0.25), s_z=F32(0.75), relu=relu))
    our_ops = [op for op in ours.main.ops if op.op_type != "const"]
    assert [o.op_type for o in our_ops] == [o.op_type for o in their_ops]
    scales = lambda ops: [float(o.scale.val) for o in ops if "quantize" in o.op_type]  # noqa: E731
    assert scales(our_ops) == scales(their_ops)


def _ct_int8():
    from coremltools.converters.mil.mil import types
    return types.int8
