import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import Builder, TensorSpec, program
from stages.quantization import nullify_redundant_quantization_zero_point as nullify
from tests.stages.equivalence import assert_equivalent, assert_idempotent, find_op, inputs_for, op_types

S = np.float32(0.5)
X = {"x": np.linspace(-70, 70, 12, dtype=np.float32).reshape(2, 6)}


# ---- zero point 0 -----------------------------------------------------------------------

@program(inputs={"x": TensorSpec((2, 6))})
def zero_zp(b, x):
    q = b.quantize(input=x, scale=S, zero_point=np.int8(0), output_dtype="int8", name="q")
    return b.dequantize(input=q, scale=S, zero_point=np.int8(0), name="dq")


def test_zero_point_0_is_dropped_and_names_kept():
    out = nullify(zero_zp)
    q, dq = find_op(out, "q"), find_op(out, "dq")
    assert q.zero_point is None and dq.zero_point is None
    assert q.output.dtype == "int8" and dq.input is q.output
    assert op_types(out) == ["quantize", "dequantize"]
    assert [v.name for v in out.main.outputs] == ["dq"]
    assert_equivalent(zero_zp, nullify, X)


def test_per_channel_zero_point_0_is_dropped():
    @program(inputs={"x": TensorSpec((2, 6))})
    def prog(b, x):
        return b.quantize(input=x, scale=np.array([0.5, 2], np.float32), zero_point=np.zeros(2, np.uint8),
                          axis=0, output_dtype="uint8", name="q")

    out = nullify(prog)
    assert find_op(out, "q").zero_point is None and int(find_op(out, "q").axis.val) == 0
    assert_equivalent(prog, nullify, X)


# ---- const dequantize with zero point +-128 ------------------------------------------------

@pytest.mark.parametrize("dtype, zp, new_dtype", [("int8", -128, "uint8"), ("uint8", 128, "int8")])
def test_const_dequantize_shifts_its_data(dtype, zp, new_dtype):
    data = np.array([[-128, -1, 0, 1, 127, 5]], np.int16) + (0 if dtype == "int8" else 128)

    @program(inputs={"x": TensorSpec((1, 6))})
    def prog(b, x):
        w = b.dequantize(input=b.const(data.astype(dtype), name="wq"), scale=S,
                         zero_point=np.asarray(zp, dtype), name="w")
        return b.add(x=x, y=w, name="out")

    out = nullify(prog)
    w = find_op(out, "w")
    assert w.zero_point is None and w.input.dtype == new_dtype
    assert w.input.name == "wq"  # the shifted data replaces the old const
    np.testing.assert_array_equal(w.input.val, (data - zp).astype(new_dtype))
    assert_equivalent(prog, nullify, {"x": np.ones((1, 6), np.float32)})


# ---- quantize(+-128) -> dequantize(+-128) --------------------------------------------------

@pytest.mark.parametrize("dtype, zp, new_dtype", [("int8", -128, "uint8"), ("uint8", 128, "int8")])
def test_quantize_dequantize_pair_flips_together(dtype, zp, new_dtype):
    @program(inputs={"x": TensorSpec((2, 6))})
    def prog(b, x):
        q = b.quantize(input=x, scale=S, zero_point=np.asarray(zp, dtype), output_dtype=dtype, name="q")
        return b.relu(x=b.dequantize(input=q, scale=S, zero_point=np.asarray(zp, dtype), name="dq"))

    out = nullify(prog)
    q, dq = find_op(out, "q"), find_op(out, "dq")
    assert op_types(out) == ["quantize", "dequantize", "relu"]
    assert q.zero_point is None and dq.zero_point is None
    assert q.output.dtype == new_dtype and str(q.output_dtype.val) == new_dtype and dq.input is q.output
    assert_equivalent(prog, nullify, X)


# ---- what is refused -------------------------------------------------------------------------

@program(inputs={"x": TensorSpec((2, 6))})
def quantize_alone(b, x):  # +-128 without its dequantize: the int8 output would change
    return b.quantize(input=x, scale=S, zero_point=np.int8(-128), output_dtype="int8")


@program(inputs={"x": TensorSpec((2, 6))})
def pair_with_branch(b, x):
    q = b.quantize(input=x, scale=S, zero_point=np.int8(-128), output_dtype="int8")
    return b.dequantize(input=q, scale=S, zero_point=np.int8(-128)), b.reshape(x=q, shape=[12])


@program(inputs={"x": TensorSpec((2, 6))})
def pair_with_other_zp(b, x):
    q = b.quantize(input=x, scale=S, zero_point=np.int8(-128), output_dtype="int8")
    return b.dequantize(input=q, scale=S, zero_point=np.int8(-127))


@program(inputs={"q": TensorSpec((2, 6), "int8")})
def runtime_dequantize(b, q):  # not a const: nothing to fold the shift into
    return b.dequantize(input=q, scale=S, zero_point=np.int8(-128))


@program(inputs={"x": TensorSpec((2, 6))})
def mixed_zero_points(b, x):
    return b.quantize(input=x, scale=np.array([1, 2], np.float32), zero_point=np.array([0, 1], np.int8),
                      axis=0, output_dtype="int8")


@program(inputs={"x": TensorSpec((2, 6))})
def no_zero_point(b, x):
    return b.dequantize(input=b.quantize(input=x, scale=S, output_dtype="int8"), scale=S)


@pytest.mark.parametrize("prog", [quantize_alone, pair_with_branch, pair_with_other_zp, runtime_dequantize,
                                  mixed_zero_points, no_zero_point],
                         ids=["quantize-alone", "branch", "other-zp", "runtime-input", "mixed-zp", "no-zp"])
def test_refused_patterns_return_the_input_object(prog):
    assert nullify(prog) is prog


# ---- nesting, functions, idempotence --------------------------------------------------------

def test_pattern_inside_cond_and_in_every_function():
    @program(inputs={"x": TensorSpec((2, 6)), "p": TensorSpec((), "bool")})
    def prog(b, x, p):
        def branch(bb):
            q = bb.quantize(input=x, scale=S, zero_point=np.uint8(128), output_dtype="uint8")
            return bb.dequantize(input=q, scale=S, zero_point=np.uint8(128))
        return b.cond(pred=p, true_fn=branch, false_fn=lambda bb: bb.relu(x=x))

    two = Program.make({"main": prog.main, "g": zero_zp.main.replace(name="g")})
    out = nullify(two)
    inner = find_op(out, "cond_0").blocks[0]
    assert all(o.zero_point is None for o in inner.ops if o.op_type in ("quantize", "dequantize"))
    assert [o.output.dtype for o in inner.ops if o.op_type == "quantize"] == ["int8"]
    assert all(o.zero_point is None for o in out.functions["g"].ops if o.op_type != "const")
    for pred in (True, False):
        assert_equivalent(two, nullify, {"main": {**X, "p": np.array(pred)}, "g": X})


def test_idempotent():
    for prog in (zero_zp, pair_with_branch):
        once = assert_idempotent(prog, nullify)
        assert nullify(once) is once


# ---- property ----------------------------------------------------------------------------------

ZPS = {"int8": [0, -128, 3], "uint8": [0, 128, 131]}


@st.composite
def random_programs(draw):
    """quantize -> dequantize pairs and const dequantizes with zero points 0 / +-128 / other,
    per tensor or per channel, sometimes branching, feeding adds and relus."""
    b = Builder()
    x = b.input("x", TensorSpec((2, 6)))
    outs, acc = [], x
    for i in range(draw(st.integers(1, 5))):
        dtype = draw(st.sampled_from(["int8", "uint8"]))
        per_channel = draw(st.booleans())
        scale = np.array([0.5, 2.0], np.float32) if per_channel else np.float32(draw(st.sampled_from([0.5, 0.3])))
        zp_val = draw(st.sampled_from(ZPS[dtype]))
        zp = np.full(2, zp_val, dtype) if per_channel else np.asarray(zp_val, dtype)
        axis = 0 if per_channel else None
        if draw(st.booleans()):
            q = b.quantize(input=acc, scale=scale, zero_point=zp, axis=axis, output_dtype=dtype)
            dq_zp = zp if draw(st.integers(0, 3)) else np.asarray(zp, dtype) * 0
            acc = b.dequantize(input=q, scale=scale, zero_point=dq_zp, axis=axis)
            if draw(st.integers(0, 3)) == 0:
                outs.append(b.reshape(x=q, shape=[12]))
        else:
            lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
            data = np.asarray(draw(st.lists(st.integers(lo, hi), min_size=12, max_size=12)), dtype).reshape(2, 6)
            w = b.dequantize(input=b.const(data, name=f"w{i}"), scale=scale, zero_point=zp, axis=axis)
            acc = b.add(x=acc, y=w)
        acc = b.relu(x=acc) if draw(st.booleans()) else acc
    return Program.make([b.function("main", outs + [acc])])


@given(data=st.data())
def test_random_programs_keep_their_outputs_exactly(data):
    # exact: quantize rounds x / scale before adding the zero point, so moving the zero point
    # +-128 into the integer type shifts the rounded value and its clip range by the same 128;
    # dequantize subtracts integers exactly before scaling
    prog = data.draw(random_programs())
    out = assert_equivalent(prog, nullify, data.draw(inputs_for(prog, low=-300, high=300)))
    assert nullify(out) is out


# ---- cross-check with coremltools ----------------------------------------------------------

def test_same_result_as_coremltools():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 6))], opset_version=ct.target.iOS17)
    def ref(x):
        q = mb.quantize(input=x, scale=S, zero_point=np.int8(-128), output_dtype="int8")
        d = mb.dequantize(input=q, scale=S, zero_point=np.int8(-128))
        w = mb.dequantize(input=np.full((2, 6), 3, np.uint8), scale=S, zero_point=np.uint8(128))
        return mb.add(x=d, y=w)

    @program(inputs={"x": TensorSpec((2, 6))}, opset="iOS17")
    def ours(b, x):
        q = b.quantize(input=x, scale=S, zero_point=np.int8(-128), output_dtype="int8")
        d = b.dequantize(input=q, scale=S, zero_point=np.int8(-128))
        w = b.dequantize(input=np.full((2, 6), 3, np.uint8), scale=S, zero_point=np.uint8(128))
        return b.add(x=d, y=w)

    PASS_REGISTRY["common::nullify_redundant_quantization_zero_point"](ref)
    theirs = [op for op in ref.functions["main"].operations if op.op_type not in ("const", "add")]
    mine = [op for op in nullify(ours).main.ops if op.op_type not in ("const", "add")]
    assert [o.op_type for o in theirs] == [o.op_type for o in mine]
    assert [o.zero_point is None for o in theirs] == [o.zero_point is None for o in mine]
    assert [types.builtin_to_string(o.outputs[0].dtype) for o in theirs if o.op_type == "quantize"] == ["uint8"]
    assert [o.output.dtype for o in mine if o.op_type == "quantize"] == ["uint8"]
    np.testing.assert_array_equal([o for o in theirs if o.op_type == "dequantize"][1].input.val,
                                  [o for o in mine if o.op_type == "dequantize"][1].input.val)
