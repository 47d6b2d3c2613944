import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import Builder, TensorSpec, program
from stages.quantization import dequantize_quantize_pair_elimination as elim
from tests.stages.equivalence import assert_equivalent, assert_idempotent, find_op, inputs_for, op_types

S, ZP = np.float32(0.5), np.int8(3)
Q = {"q": (np.arange(12, dtype=np.int8) * 21 - 120).reshape(2, 6)}


def _pair(b, q, scale=S, zp=ZP, axis=None, out_dtype="int8", qzp="same"):
    d = b.dequantize(input=q, scale=scale, zero_point=zp, axis=axis, name="dq")
    return d, b.quantize(input=d, scale=scale, zero_point=zp if qzp == "same" else qzp, axis=axis,
                         output_dtype=out_dtype, name="qz")


# ---- the seed's graphs ------------------------------------------------------------------

@program(inputs={"q": TensorSpec((2, 6), "int8")})
def straight(b, q):
    _, z = _pair(b, q)
    return b.reshape(x=z, shape=[12], name="out")


def test_pair_is_eliminated():
    out = elim(straight)
    assert op_types(out) == ["reshape"]
    assert find_op(out, "out").x.name == "q"
    assert_equivalent(straight, elim, Q)


@program(inputs={"q": TensorSpec((2, 6), "int8")})
def branched(b, q):
    d, z = _pair(b, q)
    return b.reshape(x=z, shape=[12], name="op2"), b.relu(x=d, name="other")


def test_with_branches_only_the_path_is_shortened():
    out = elim(branched)
    assert op_types(out) == ["dequantize", "reshape", "relu"]
    assert find_op(out, "op2").x.name == "q" and find_op(out, "other").x.name == "dq"
    assert_equivalent(branched, elim, Q)


def test_per_channel_pair_and_several_quantize_readers():
    @program(inputs={"q": TensorSpec((2, 6), "int8")})
    def prog(b, q):
        sc, zp = np.array([0.5, 0.25], np.float32), np.array([1, -2], np.int8)
        d = b.dequantize(input=q, scale=sc, zero_point=zp, axis=0)
        z1 = b.quantize(input=d, scale=sc, zero_point=zp, axis=0, output_dtype="int8")
        z2 = b.quantize(input=d, scale=sc, zero_point=zp, axis=0, output_dtype="int8")
        return b.reshape(x=z1, shape=[12]), b.reshape(x=z2, shape=[3, 4])

    out = elim(prog)
    assert op_types(out) == ["reshape", "reshape"]
    assert_equivalent(prog, elim, Q)


def test_without_zero_points():
    @program(inputs={"q": TensorSpec((2, 6), "uint8")})
    def prog(b, q):
        return b.relu(x=b.dequantize(input=_pair(b, q, zp=None, out_dtype="uint8")[1], scale=S))

    out = elim(prog)
    assert op_types(out) == ["dequantize", "relu"]
    assert_equivalent(prog, elim, {"q": np.arange(12, dtype=np.uint8).reshape(2, 6) * 20})


# ---- what is refused ---------------------------------------------------------------------

def _mk(**kw):
    @program(inputs={"q": TensorSpec((2, 6), kw.pop("in_dtype", "int8"))})
    def prog(b, q):
        return b.reshape(x=_pair(b, q, **kw)[1], shape=[12])
    return prog


@program(inputs={"q": TensorSpec((2, 6), "int8")})
def dequantize_is_output(b, q):
    d, z = _pair(b, q)
    return b.reshape(x=z, shape=[12]), d


@program(inputs={"q": TensorSpec((2, 6), "int8")})
def quantize_is_output(b, q):
    return _pair(b, q)[1]


@program(inputs={"q": TensorSpec((2, 6), "int8")})
def reversed_order(b, q):  # quantize -> dequantize records a float's quantization: kept
    d = b.dequantize(input=q, scale=S, zero_point=ZP)
    z = b.quantize(input=b.relu(x=d), scale=S, zero_point=ZP, output_dtype="int8")
    return b.dequantize(input=z, scale=S, zero_point=ZP)


@program(inputs={"q": TensorSpec((2, 6), "int8")})
def different_axes(b, q):
    d = b.dequantize(input=q, scale=np.float32(0.5), zero_point=np.int8(0), axis=0)
    return b.quantize(input=d, scale=np.float32(0.5), zero_point=np.int8(0), axis=1, output_dtype="int8")


@pytest.mark.parametrize("prog", [
    _mk(scale=np.float32(0.5), qzp=np.int8(4)),
    _mk(qzp=None),
    _mk(in_dtype="uint8", zp=None, out_dtype="int8"),
    dequantize_is_output, quantize_is_output, reversed_order, different_axes,
], ids=["other-zero-point", "zero-point-on-one-side", "uint8-to-int8", "dequantize-is-output",
        "quantize-is-output", "reversed-order", "different-axes"])
def test_refused_patterns_return_the_input_object(prog):
    assert elim(prog) is prog


def test_different_scales_are_refused():
    @program(inputs={"q": TensorSpec((2, 6), "int8")})
    def prog(b, q):
        d = b.dequantize(input=q, scale=S, zero_point=ZP)
        return b.quantize(input=d, scale=np.float32(0.25), zero_point=ZP, output_dtype="int8")
    assert elim(prog) is prog


# ---- nesting, functions, idempotence ---------------------------------------------------------

def test_pattern_inside_cond_and_in_every_function():
    @program(inputs={"q": TensorSpec((2, 6), "int8"), "p": TensorSpec((), "bool")})
    def prog(b, q, p):
        return b.cond(pred=p, true_fn=lambda bb: bb.relu(x=bb.reshape(x=_pair(bb, q)[1], shape=[12])),
                      false_fn=lambda bb: bb.reshape(x=q, shape=[12]))

    two = Program.make({"main": prog.main, "g": straight.main.replace(name="g")})
    out = elim(two)
    assert [o.op_type for o in find_op(out, "cond_0").blocks[0].ops if o.op_type != "const"] == ["reshape", "relu"]
    assert op_types(out, "g") == ["reshape"]
    for pred in (True, False):
        assert_equivalent(two, elim, {"main": {**Q, "p": np.array(pred)}, "g": Q})


def test_quantize_reading_an_outer_dequantize_from_a_branch_is_left():
    # the quantize sits in another block than its dequantize: the rewrite would have to edit
    # two blocks at once; like the seed's block-local replacement, it is not done
    @program(inputs={"q": TensorSpec((2, 6), "int8"), "p": TensorSpec((), "bool")})
    def prog(b, q, p):
        d = b.dequantize(input=q, scale=S, zero_point=ZP)
        return b.cond(pred=p, true_fn=lambda bb: bb.quantize(input=d, scale=S, zero_point=ZP, output_dtype="int8"),
                      false_fn=lambda bb: bb.reshape(x=q, shape=[2, 6]))
    assert elim(prog) is prog


def test_idempotent():
    for prog in (straight, branched):
        once = assert_idempotent(prog, elim)
        assert elim(once) is once


# ---- property --------------------------------------------------------------------------------

@st.composite
def random_programs(draw):
    """Quantized chains: dequantize -> (float op) -> quantize, with some dequantize ->
    quantize pairs of identical or different parameters, extra readers, relu / add / linear."""
    dtype = draw(st.sampled_from(["int8", "uint8"]))
    b = Builder()
    q = b.input("q", TensorSpec((2, 6), dtype))
    outs = []
    for _ in range(draw(st.integers(1, 5))):
        per_channel = draw(st.booleans())
        scale = np.array([0.5, 0.1], np.float32) if per_channel else np.float32(draw(st.sampled_from([0.5, 0.1])))
        zp = None if draw(st.integers(0, 3)) == 0 else (
            np.asarray([1, 2] if per_channel else 2, dtype))
        axis = 0 if per_channel else None
        d = b.dequantize(input=q, scale=scale, zero_point=zp, axis=axis)
        kind = draw(st.sampled_from(["pair", "pair", "relu", "add", "linear"]))
        if kind == "relu":
            f = b.relu(x=d)
        elif kind == "add":
            f = b.add(x=d, y=d)
        elif kind == "linear":
            f = b.linear(x=d, weight=np.eye(6, dtype=np.float32) * 0.5)
        else:
            f = d
        if draw(st.integers(0, 3)) == 0:
            outs.append(b.relu(x=d))  # a second reader of the dequantize
        same = draw(st.integers(0, 4)) > 0
        q_scale = scale if same else scale * np.float32(2)
        q = b.quantize(input=f, scale=q_scale, zero_point=zp, axis=axis, output_dtype=dtype)
    outs.append(q)
    return Program.make([b.function("main", outs)])


@given(data=st.data())
def test_random_programs_keep_their_outputs_exactly(data):
    # exact: with identical parameters quantize(dequantize(q)) == q (the float error of
    # scale * (q - zp) / scale is far below the 0.5 that rounding absorbs)
    prog = data.draw(random_programs())
    out = assert_equivalent(prog, elim, data.draw(inputs_for(prog)))
    assert elim(out) is out


# ---- cross-check with coremltools -------------------------------------------------------------

def test_same_op_types_as_coremltools():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 6), dtype=types.int8)], opset_version=ct.target.iOS17)
    def ref(q):
        d = mb.dequantize(input=q, scale=S, zero_point=ZP)
        z = mb.quantize(input=d, scale=S, zero_point=ZP, output_dtype="int8")
        return mb.reshape(x=z, shape=[12]), mb.relu(x=d)

    PASS_REGISTRY["common::dequantize_quantize_pair_elimination"](ref)
    theirs = [op.op_type for op in ref.functions["main"].operations if op.op_type != "const"]
    assert theirs == op_types(elim(branched))
