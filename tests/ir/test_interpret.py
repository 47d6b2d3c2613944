"""The reference interpreter: exact hand-computed results, multiple outputs,
nested blocks, input errors, and it never writes into consts or inputs."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.builder import TensorSpec, program
from ir.interpret import EvaluationError, evaluate

f32 = np.float32


@program(inputs={"x": TensorSpec((1, 3), "fp32")})
def SMALL(b, x):
    w = b.const(np.array([[1, 0, -1], [2, 1, 0]], f32), name="w")
    h = b.linear(x=x, weight=w, bias=np.array([0.5, -10], f32), name="h")
    r = b.relu(x=h, name="r")
    q = b.quantize(input=r, scale=f32(0.5), output_dtype="uint8", name="q")
    return r, b.dequantize(input=q, scale=f32(0.5), name="dq"), b.reduce_sum(x=h, name="s")


def test_small_program_hand_computed_with_multiple_outputs():
    out = evaluate(SMALL, {"x": np.array([[3, 4, 1.25]], f32)})
    # h = [3 - 1.25 + 0.5, 6 + 4 - 10] = [2.25, 0]; q = round([4.5, 0]) = [4, 0] (half to even)
    assert list(out) == ["r", "dq", "s"]
    assert out["r"].tolist() == [[2.25, 0]]
    assert out["dq"].tolist() == [[2.0, 0.0]]
    assert out["s"].tolist() == 2.25 and out["s"].dtype == np.float32


def test_missing_and_misshaped_inputs_name_the_input():
    with pytest.raises(EvaluationError, match="missing input 'x'"):
        evaluate(SMALL, {})
    with pytest.raises(EvaluationError, match=r"input 'x' has shape \(3,\), expected \(1, 3\)"):
        evaluate(SMALL, {"x": np.zeros(3, f32)})
    with pytest.raises(EvaluationError, match=r"input 'x' has shape \(1, 4\)"):
        evaluate(SMALL, {"x": np.zeros((1, 4), f32)})
    with pytest.raises(EvaluationError, match="no function 'other'"):
        evaluate(SMALL, {"x": np.zeros((1, 3), f32)}, function="other")


@program(inputs={"x": TensorSpec((2, 2), "fp32"), "p": TensorSpec((), "bool")})
def BRANCHY(b, x, p):
    s = b.reduce_sum(x=x)
    inner = b.cond(pred=p,
                   true_fn=lambda t: t.mul(x=x, y=s),
                   false_fn=lambda f: f.cond(pred=p, true_fn=lambda g: g.neg(x=x),
                                             false_fn=lambda g: g.sub(x=x, y=s)))
    return inner


@given(st.lists(st.integers(-5, 5), min_size=4, max_size=4), st.booleans())
def test_nested_blocks_run_the_right_branch(vals, p):
    x = np.array(vals, f32).reshape(2, 2)
    got = list(evaluate(BRANCHY, {"x": x, "p": np.array(p)}).values())[0]
    expected = x * x.sum() if p else x - x.sum()
    assert got.tolist() == expected.tolist()


def test_never_writes_into_consts_or_inputs():
    x = np.array([[1.0, -2.0, 3.0]], f32)
    x.flags.writeable = False
    digest = SMALL.digest
    consts = {op.name: op.attrs["val"].copy() for op in SMALL.main.ops if op.op_type == "const"}
    for _ in range(2):
        evaluate(SMALL, {"x": x})
    assert x.tolist() == [[1.0, -2.0, 3.0]]
    assert SMALL.digest == digest
    for op in SMALL.main.ops:
        if op.op_type == "const":
            assert np.array_equal(op.attrs["val"], consts[op.name])
            with pytest.raises(ValueError):
                op.attrs["val"][...] = 0


def test_identity_output_and_const_output():
    @program(inputs={"x": TensorSpec((2,), "int32")})
    def prog(b, x):
        return x, b.const(np.array([7], np.int8), name="seven")

    out = evaluate(prog, {"x": np.array([1, 2])})
    assert out["x"].tolist() == [1, 2] and out["x"].dtype == np.int32
    assert out["seven"].tolist() == [7] and out["seven"].dtype == np.int8


def test_kernel_failures_name_the_op():
    @program(inputs={"x": TensorSpec((2,), "int32")})
    def prog(b, x):
        return b.gather(x=x, indices=np.array([0, 1], np.int32), name="pick")

    out = evaluate(prog, {"x": np.array([5, 6], np.int32)})
    assert out["pick"].tolist() == [5, 6]

    @program(inputs={"i": TensorSpec((1,), "int32")})
    def oob(b, i):
        return b.gather(x=np.array([1.0, 2.0], f32), indices=i, name="pick")

    with pytest.raises(EvaluationError, match="gather 'pick'"):
        evaluate(oob, {"i": np.array([9], np.int32)})
