"""dequantize_to_constexpr: const dequantize -> constexpr op (opset decides which)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import TensorSpec, build_function, program
from ir.interpret import evaluate
from stages.quantization import dequantize_to_constexpr
from tests.stages.equivalence import assert_equivalent, assert_idempotent, inputs_for

DATA = np.array([[1, 2, 3], [4, 5, -6]], np.int8)


def _by_name(prog, fn="main"):
    return {op.name: op for op in prog.functions[fn].block.walk()}


def _types(prog, fn="main"):
    return [op.op_type for op in prog.functions[fn].ops if op.op_type != "const"]


def _net(opset, data=DATA, zero_point=None, scale=np.float32(0.5), axis=None, out_dq=False):
    fdt = "fp16" if np.asarray(scale).dtype == np.float16 else "fp32"

    @program(inputs={"x": TensorSpec(data.shape, fdt)}, opset=opset)
    def net(b, x):
        w = b.dequantize(input=b.const(data, name="w"), scale=scale, zero_point=zero_point, axis=axis, name="dq")
        y = b.add(x=x, y=w, name="y")
        return (y, w) if out_dq else y
    return net


# ---- the seed's example, in both opsets -------------------------------------------

def test_ios17_gives_constexpr_affine_dequantize_with_zero_point_and_axis_filled_in():
    before = _net("iOS17")
    after = dequantize_to_constexpr(before)
    assert _types(after) == ["constexpr_affine_dequantize", "add"]
    new = _by_name(after)["dq_affine_dequantized"]
    assert new.quantized_data.val.tolist() == DATA.tolist() and new.quantized_data.dtype == "int8"
    assert new.zero_point.val == 0 and new.zero_point.dtype == "int8"  # missing zp -> 0 in data's dtype
    assert new.scale.val == np.float32(0.5) and new.axis.val == 0  # per-tensor: dummy axis 0
    assert _by_name(after)["y"].y is new.outputs[0]


def test_ios17_uint8_data_gets_a_uint8_zero_point():
    after = dequantize_to_constexpr(_net("iOS17", data=DATA.astype(np.uint8) + 10))
    assert _by_name(after)["dq_affine_dequantized"].zero_point.dtype == "uint8"


def test_ios18_gives_blockwise_shift_scale_narrowed_to_int4_without_offset():
    after = dequantize_to_constexpr(_net("iOS18", zero_point=np.int8(0)))
    assert _types(after) == ["constexpr_blockwise_shift_scale", "add"]
    new = _by_name(after)["dq_affine_dequantized"]
    assert new.data.dtype == "int4" and new.data.val.tolist() == DATA.tolist()
    assert new.scale.shape == (1, 1) and new.scale.val[0, 0] == np.float32(0.5)
    assert new.offset is None  # an all-zero zero point is not passed on


def test_ios18_per_channel_scale_and_offset_take_the_data_rank():
    scale = np.array([0.5, 0.25, 2.0], np.float16)
    zp = np.array([1, 0, -1], np.int8)
    data = np.array([[1, 2, 3], [4, 100, -6]], np.int8)  # 100 does not fit int4: stays int8
    after = dequantize_to_constexpr(_net("iOS18", data=data, zero_point=zp, scale=scale, axis=1))
    new = _by_name(after)["dq_affine_dequantized"]
    assert new.data.dtype == "int8"
    assert new.scale.shape == (1, 3) and new.scale.val.ravel().tolist() == scale.tolist()
    assert new.offset.shape == (1, 3) and new.offset.val.ravel().tolist() == [1, 0, -1]


def test_ios18_data_that_fits_int4_stays_int8_when_its_zero_point_does_not():
    """Narrowing is decided by the data and the offset together: int4 data with an offset of
    20 would be an int4 const holding 20 (Core ML cannot store it)."""
    zp = np.array([20, 0, -9], np.int8)  # 20 and -9 are outside int4 [-8, 7]; the data is inside
    after = dequantize_to_constexpr(_net("iOS18", zero_point=zp, scale=np.array([0.5, 0.25, 2.0], np.float32),
                                         axis=1))
    new = _by_name(after)["dq_affine_dequantized"]
    assert new.data.dtype == "int8" and new.offset.dtype == "int8"
    assert new.offset.val.ravel().tolist() == [20, 0, -9]


def test_ios17_per_channel_keeps_axis_and_vectors():
    scale, zp = np.array([0.5, 0.25], np.float32), np.array([3, -3], np.int8)
    after = dequantize_to_constexpr(_net("iOS17", zero_point=zp, scale=scale, axis=0))
    new = _by_name(after)["dq_affine_dequantized"]
    assert new.axis.val == 0 and new.scale.val.tolist() == [0.5, 0.25] and new.zero_point.val.tolist() == [3, -3]


def test_values_are_identical():
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    for opset in ("iOS17", "iOS18"):
        before = _net(opset, zero_point=np.int8(2))
        after = dequantize_to_constexpr(before)
        want = (DATA.astype(np.float32) - 2) * 0.5 + x
        assert np.array_equal(evaluate(after, {"x": x})["y"], want)
        assert np.array_equal(evaluate(before, {"x": x})["y"], want)


# ---- what it leaves alone ---------------------------------------------------------

def test_dequantize_of_a_runtime_value_is_left_alone():
    @program(inputs={"q": TensorSpec((2, 3), "int8")})
    def net(b, q):
        return b.dequantize(input=q, scale=np.float32(0.5))
    assert dequantize_to_constexpr(net) is net


def test_a_dequantized_block_output_keeps_its_name():
    before = _net("iOS18", out_dq=True)
    after = dequantize_to_constexpr(before)
    assert [v.name for v in after.main.outputs] == ["y", "dq"]
    assert _by_name(after)["dq"].op_type == "constexpr_blockwise_shift_scale"
    x = np.ones((2, 3), np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(evaluate(before, {"x": x}).values(),
                                                     evaluate(after, {"x": x}).values()))


def test_nested_block_and_every_function():
    def body(b, x, p):
        def branch(scale):
            return lambda bb: bb.add(x=x, y=bb.dequantize(input=bb.const(DATA), scale=np.float32(scale)))
        return b.cond(pred=p, true_fn=branch(0.5), false_fn=branch(2.0), name="c")

    specs = {"x": TensorSpec((2, 3)), "p": TensorSpec((), "bool")}
    prog = Program.make([build_function(body, specs, "main", "iOS18"),
                         build_function(body, specs, "other", "iOS17")])
    after = dequantize_to_constexpr(prog)
    kinds = {f: [op.op_type for op in after.functions[f].block.walk()] for f in after.functions}
    assert "dequantize" not in kinds["main"] + kinds["other"]
    assert kinds["main"].count("constexpr_blockwise_shift_scale") == 2
    assert kinds["other"].count("constexpr_affine_dequantize") == 2
    x = np.ones((2, 3), np.float32)
    for f in ("main", "other"):
        for p in (True, False):
            ins = {"x": x, "p": np.array(p)}
            assert np.array_equal(evaluate(prog, ins, f)["c"], evaluate(after, ins, f)["c"])


def test_idempotent_and_pure():
    before = _net("iOS18", zero_point=np.int8(1))
    once = assert_idempotent(before, dequantize_to_constexpr)
    assert dequantize_to_constexpr(once) is once
    with pytest.raises(ValueError):
        _by_name(once)["dq_affine_dequantized"].data.val[0, 0] = 7  # consts are read-only


# ---- property: same outputs, exactly --------------------------------------------

@st.composite
def const_dequantize_programs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    opset = draw(st.sampled_from(["iOS17", "iOS18"]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    data_dtype = draw(st.sampled_from([np.int8, np.uint8]))
    info = np.iinfo(data_dtype)
    lo, hi = draw(st.sampled_from([(info.min, info.max), (0, 7)]))  # small values narrow to 4 bits
    data = rng.integers(lo, hi, shape, endpoint=True).astype(data_dtype)
    scale_dtype = draw(st.sampled_from([np.float16, np.float32]))
    axis = draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    pshape = () if axis is None else (shape[axis],)
    scale = rng.uniform(0.01, 2.0, pshape).astype(scale_dtype)
    zp_kind = draw(st.sampled_from(["none", "zero", "random"]))
    zp = {"none": None, "zero": np.zeros(pshape, data_dtype),
          "random": rng.integers(lo, hi, pshape, endpoint=True).astype(data_dtype)}[zp_kind]
    tail = draw(st.sampled_from(["add", "relu_mul", "two_readers"]))
    fdt = "fp16" if scale_dtype == np.float16 else "fp32"

    @program(inputs={"x": TensorSpec(shape, fdt)}, opset=opset)
    def net(b, x):
        w = b.dequantize(input=b.const(data), scale=scale, zero_point=zp, axis=axis)
        y = b.add(x=x, y=w)
        if tail == "relu_mul":
            y = b.mul(x=b.relu(x=y), y=w)
        if tail == "two_readers":
            return y, b.sub(x=w, y=x)
        return y
    return net


@given(prog=const_dequantize_programs(), data=st.data())
def test_property_outputs_are_bit_identical(prog, data):
    # exact: (q - zp) is an exact small integer in fp16/fp32 and each form rounds the
    # product with the scale once, into the scale's dtype
    after = assert_equivalent(prog, dequantize_to_constexpr, data.draw(inputs_for(prog, low=-4, high=4)))
    assert "dequantize" not in [op.op_type for op in after.main.ops]
    assert dequantize_to_constexpr(after) is after


# ---- cross-check with coremltools ---------------------------------------------------

@pytest.mark.parametrize("opset", ["iOS17", "iOS18"])
def test_same_op_types_as_coremltools(opset):
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    target = {"iOS17": ct.target.iOS17, "iOS18": ct.target.iOS18}[opset]

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=target)
    def theirs(x):
        w = mb.dequantize(input=DATA, scale=np.float32(0.5), zero_point=np.int8(2), name="dq")
        return mb.add(x=x, y=w)

    PASS_REGISTRY["common::dequantize_to_constexpr"](theirs)
    their_types = [op.op_type for op in theirs.functions["main"].operations if op.op_type != "const"]
    their_names = [op.name for op in theirs.functions["main"].operations if op.op_type.startswith("constexpr")]
    ours = dequantize_to_constexpr(_net(opset, zero_point=np.int8(2)))
    assert _types(ours) == their_types
    assert [op.name for op in ours.main.ops if op.op_type.startswith("constexpr")] == their_names
