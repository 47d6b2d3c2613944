import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import Builder, TensorSpec, program
from stages.quantization import int_op_canonicalization as canon
from stages.quantization.int_op_canonicalization import op_version
from tests.stages.equivalence import assert_equivalent, assert_idempotent, find_op, inputs_for, op_types

S, ZP = np.float32(0.5), np.int8(3)


def quantized_reshape(opset="iOS17", q_scale=S, q_zp=ZP, out_dtype="int8"):
    @program(inputs={"q": TensorSpec((2, 6), "int8")}, opset=opset)
    def prog(b, q):
        d = b.dequantize(input=q, scale=S, zero_point=ZP, name="dq")
        r = b.reshape(x=d, shape=[3, 4], name="r")
        return b.quantize(input=r, scale=q_scale, zero_point=q_zp, output_dtype=out_dtype, name="out")
    return prog


Q = {"q": np.arange(-6, 6, dtype=np.int8).reshape(2, 6) * 10}


# ---- the seed's graph -------------------------------------------------------------------

@pytest.mark.parametrize("opset", ["iOS17", "iOS18"])
def test_dequantize_reshape_quantize_becomes_an_int_reshape(opset):
    prog = quantized_reshape(opset)
    out = canon(prog)
    # the dequantize stays (it may feed other ops); dead_code_elimination removes it
    assert op_types(out) == ["dequantize", "reshape"]
    r = find_op(out, "out")  # the int reshape takes the quantize's name
    assert r.op_type == "reshape" and r.x.name == "q" and r.output.dtype == "int8"
    assert [v.name for v in out.main.outputs] == ["out"]
    assert_equivalent(prog, canon, Q)


def test_opset_rule():
    # The seed allows reshape when the op's version is iOS17. Reshape was last redefined in
    # iOS17, so iOS17, iOS18 and iOS26 functions run it; iOS16 and older run the iOS15 reshape.
    assert [op_version("reshape", o) for o in ("iOS15", "iOS16", "iOS17", "iOS18", "iOS26")] == \
        ["iOS15", "iOS15", "iOS17", "iOS17", "iOS17"]
    assert op_version("reshape", "macOS14") is None
    for opset in ("iOS15", "iOS16", "not-an-opset"):
        prog = quantized_reshape(opset)
        assert canon(prog) is prog


# ---- what is refused -----------------------------------------------------------------------

@program(inputs={"q": TensorSpec((2, 6), "int8")}, opset="iOS17")
def reshape_read_twice(b, q):
    r = b.reshape(x=b.dequantize(input=q, scale=S, zero_point=ZP), shape=[3, 4])
    return b.quantize(input=r, scale=S, zero_point=ZP, output_dtype="int8"), b.relu(x=r)


@program(inputs={"q": TensorSpec((2, 6), "int8")}, opset="iOS17")
def reshape_is_output(b, q):
    r = b.reshape(x=b.dequantize(input=q, scale=S, zero_point=ZP), shape=[3, 4])
    return b.quantize(input=r, scale=S, zero_point=ZP, output_dtype="int8"), r


@program(inputs={"x": TensorSpec((2, 6))}, opset="iOS17")
def float_input(b, x):
    return b.quantize(input=b.reshape(x=b.relu(x=x), shape=[3, 4]), scale=S, output_dtype="int8")


@program(inputs={"q": TensorSpec((2, 6), "int8")}, opset="iOS17")
def not_a_reshape(b, q):
    t = b.transpose(x=b.dequantize(input=q, scale=S, zero_point=ZP), perm=[1, 0])
    return b.quantize(input=t, scale=S, zero_point=ZP, output_dtype="int8")


@pytest.mark.parametrize("prog", [reshape_read_twice, reshape_is_output, float_input, not_a_reshape,
                                  quantized_reshape(out_dtype="uint8", q_zp=np.uint8(3))],
                         ids=["two-readers", "block-output", "no-dequantize", "transpose", "int8-to-uint8"])
def test_refused_patterns_return_the_input_object(prog):
    # int8 -> uint8: the seed would swap an int8 value in for a uint8 one; we refuse instead
    assert canon(prog) is prog


def test_the_seed_does_not_compare_the_quantize_parameters():
    # As in the seed, the quantize is assumed to re-quantize the same tensor: its scale is
    # not checked, so outputs change when it differs. The property test below keeps them equal.
    prog = quantized_reshape(q_scale=np.float32(0.25))
    out = canon(prog)
    assert op_types(out) == ["dequantize", "reshape"]


# ---- nesting, functions, idempotence ------------------------------------------------------

def test_pattern_inside_cond_and_in_every_function():
    @program(inputs={"q": TensorSpec((2, 6), "int8"), "p": TensorSpec((), "bool")}, opset="iOS18")
    def prog(b, q, p):
        def branch(bb):
            r = bb.reshape(x=bb.dequantize(input=q, scale=S, zero_point=ZP), shape=[3, 4])
            return bb.quantize(input=r, scale=S, zero_point=ZP, output_dtype="int8")
        return b.cond(pred=p, true_fn=branch, false_fn=lambda bb: bb.reshape(x=q, shape=[3, 4]))

    two = Program.make({"main": prog.main, "g": quantized_reshape("iOS17").main.replace(name="g")})
    out = canon(two)
    inner = find_op(out, "cond_0").blocks[0]
    assert [o.op_type for o in inner.ops if o.op_type != "const"] == ["dequantize", "reshape"]
    assert op_types(out, "g") == ["dequantize", "reshape"]
    for pred in (True, False):
        assert_equivalent(two, canon, {"main": {**Q, "p": np.array(pred)}, "g": Q})


def test_idempotent():
    once = assert_idempotent(quantized_reshape(), canon)
    assert canon(once) is once


# ---- property ---------------------------------------------------------------------------

@st.composite
def random_programs(draw):
    """Chains of quantized ops on an int8/uint8 input: quantized reshapes (sometimes read
    twice), quantized relus, dequantize/quantize round trips, with one set of parameters per
    quantized tensor (the seed's premise)."""
    dtype = draw(st.sampled_from(["int8", "uint8"]))
    shape = (2, 6)
    b = Builder()
    q = b.input("q", TensorSpec(shape, dtype))
    outs = []
    for _ in range(draw(st.integers(1, 5))):
        scale = np.float32(draw(st.sampled_from([0.5, 0.1, 3.0])))
        zp = np.asarray(draw(st.integers(-5, 5)) + (0 if dtype == "int8" else 128), dtype)
        d = b.dequantize(input=q, scale=scale, zero_point=zp)
        kind = draw(st.sampled_from(["reshape", "reshape", "relu", "branch"]))
        if kind == "relu":
            f = b.relu(x=d)
        else:
            shape = draw(st.sampled_from([(3, 4), (12,), (4, 3), (2, 6)]))
            f = b.reshape(x=d, shape=list(shape))
            if kind == "branch":
                outs.append(b.relu(x=f))
        q = b.quantize(input=f, scale=scale, zero_point=zp, output_dtype=dtype)
        if draw(st.booleans()):
            outs.append(b.dequantize(input=q, scale=scale, zero_point=zp))
    outs.append(q)
    return Program.make([b.function("main", outs, opset=draw(st.sampled_from(["iOS17", "iOS18"])))])


@given(data=st.data())
def test_random_programs_keep_their_outputs_exactly(data):
    # exact: with the same parameters, quantize(dequantize(q)) == q (the float error of
    # scale * (q - zp) / scale is far below the 0.5 that rounding absorbs), and reshape
    # moves elements without arithmetic
    prog = data.draw(random_programs())
    out = assert_equivalent(prog, canon, data.draw(inputs_for(prog)))
    assert canon(out) is out


# ---- cross-check with coremltools -------------------------------------------------------

@pytest.mark.parametrize("target, opset", [("iOS17", "iOS17"), ("iOS18", "iOS18")])
def test_same_op_types_as_coremltools(target, opset):
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 6), dtype=types.int8)],
                opset_version=getattr(ct.target, target))
    def ref(q):
        r = mb.reshape(x=mb.dequantize(input=q, scale=S, zero_point=ZP), shape=[3, 4])
        return mb.quantize(input=r, scale=S, zero_point=ZP, output_dtype="int8")

    PASS_REGISTRY["common::int_op_canonicalization"](ref)
    theirs = [op.op_type for op in ref.functions["main"].operations if op.op_type != "const"]
    assert theirs == op_types(canon(quantized_reshape(opset)))
