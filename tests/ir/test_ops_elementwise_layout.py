"""Elementwise ops, activations, cast and the layout ops: hand-checked values and
type errors."""
import math

import numpy as np
import pytest

from ir.ops import OpError
from tests.ir.op_harness import out_types, run

f32 = np.float32


@pytest.mark.parametrize("op_type, expected", [
    ("add", [[11, 22], [13, 24]]), ("sub", [[-9, -18], [-7, -16]]), ("mul", [[10, 40], [30, 80]]),
    ("real_div", [[0.1, 0.1], [0.3, 0.2]]), ("maximum", [[10, 20], [10, 20]]),
    ("minimum", [[1, 2], [3, 4]]),
])
def test_binary_ops_broadcast(op_type, expected):
    x = np.array([[1, 2], [3, 4]], f32)
    y = np.array([10, 20], f32)
    got = run(op_type, x=x, y=y)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_binary_errors():
    with pytest.raises(OpError, match="^add 'out': x is fp32 but y is fp16"):
        out_types("add", x=np.ones(2, f32), y=np.ones(2, np.float16))
    with pytest.raises(OpError, match=r"shapes \(2,\) and \(3,\) do not broadcast"):
        out_types("mul", x=np.ones(2, f32), y=np.ones(3, f32))


@pytest.mark.parametrize("op_type, expected", [
    ("equal", [[False, True], [False, False]]), ("not_equal", [[True, False], [True, True]]),
    ("greater", [[False, False], [True, True]]), ("greater_equal", [[False, True], [True, True]]),
    ("less", [[True, False], [False, False]]), ("less_equal", [[True, True], [False, False]]),
])
def test_comparisons_give_bools_with_broadcasting(op_type, expected):
    x = np.array([[1, 2], [3, 4]], np.int32)
    y = np.array([2, 2], np.int32)  # column 0 against 2 is 1 / 3, column 1 is 2 / 4
    got = run(op_type, x=x, y=y)
    assert got.dtype == np.bool_ and got.tolist() == expected
    with pytest.raises(OpError, match="x is int32 but y is fp32"):
        out_types(op_type, x=x, y=np.ones(2, f32))


def test_ordering_comparisons_refuse_bools_and_equality_takes_them():
    t = np.array([True, False])
    for op_type in ("greater", "greater_equal", "less", "less_equal"):
        with pytest.raises(OpError, match="must be numbers, got bool"):
            out_types(op_type, x=t, y=t)
    assert run("equal", x=t, y=np.array([True, True])).tolist() == [True, False]
    assert run("not_equal", x=t, y=np.array([True, True])).tolist() == [False, True]


def test_sigmoid_hard_and_thresholded_relu_by_hand():
    x = np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 4.0], f32)
    # min(max(x / 6 + 0.5, 0), 1): 0 below -3, 1 above 3
    np.testing.assert_allclose(run("sigmoid_hard", x=x, alpha=f32(1 / 6), beta=f32(0.5)),
                               [0.0, 0.0, 1 / 3, 0.5, 2 / 3, 1.0], rtol=1e-6)
    # x where x >= -3 (the threshold itself passes), else 0
    assert run("thresholded_relu", x=x, alpha=f32(-3.0)).tolist() == [0.0, -3.0, -1.0, 0.0, 1.0, 4.0]
    assert math.isnan(run("thresholded_relu", x=np.array([np.nan], f32), alpha=f32(0.0))[0])


def test_unary_ops():
    x = np.array([-2.0, -0.5, 0.0, 1.5], f32)
    assert run("relu", x=x).tolist() == [0, 0, 0, 1.5]
    assert run("abs", x=x).tolist() == [2, 0.5, 0, 1.5]
    assert run("neg", x=x).tolist() == [2, 0.5, 0, -1.5]
    assert run("floor", x=x).tolist() == [-2, -1, 0, 1]
    assert run("ceil", x=x).tolist() == [-2, 0, 0, 2]
    assert run("sign", x=x).tolist() == [-1, -1, 0, 1]
    assert run("sigmoid", x=np.array([0.0], f32)).tolist() == [0.5]
    assert run("sqrt", x=np.array([4.0, 9.0], f32)).tolist() == [2, 3]
    assert run("rsqrt", x=np.array([4.0, 0.25], f32)).tolist() == [0.5, 2]
    np.testing.assert_allclose(run("erf", x=np.array([0.5], f32)), [math.erf(0.5)], rtol=1e-6)
    assert run("clip", x=x, alpha=f32(-1), beta=f32(1)).tolist() == [-1, -0.5, 0, 1]


def test_gelu_modes():
    x = np.array([-1.0, 0.0, 2.0], f32)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    tanh = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))) for v in x]
    sigm = [v / (1 + math.exp(-1.702 * v)) for v in x]
    np.testing.assert_allclose(run("gelu", x=x), exact, rtol=1e-6)
    np.testing.assert_allclose(run("gelu", x=x, mode="EXACT"), exact, rtol=1e-6)
    np.testing.assert_allclose(run("gelu", x=x, mode="TANH_APPROXIMATION"), tanh, rtol=1e-6)
    np.testing.assert_allclose(run("gelu", x=x, mode="SIGMOID_APPROXIMATION"), sigm, rtol=1e-6)
    with pytest.raises(OpError, match="mode 'FAST' is not one of"):
        out_types("gelu", x=x, mode="FAST")


def test_cast():
    x = np.array([-1.7, 0.5, 2.9], f32)
    y = run("cast", x=x, dtype="int32")
    assert y.dtype == np.int32 and y.tolist() == [-1, 0, 2]  # truncation toward zero
    y = run("cast", x=x, dtype="fp16")
    assert y.dtype == np.float16
    with pytest.raises(OpError, match="^cast 'out': unknown dtype 'float8'"):
        out_types("cast", x=x, dtype="float8")


def test_transpose():
    x = np.arange(6, dtype=f32).reshape(2, 3)
    assert run("transpose", x=x, perm=[1, 0]).tolist() == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(OpError, match="not a permutation"):
        out_types("transpose", x=x, perm=[0, 0])


@pytest.mark.parametrize("shape, expected", [
    ([3, 2], (3, 2)), ([-1], (6,)), ([0, -1], (2, 3)), ([1, -1, 3], (1, 2, 3)), ([0, 3], (2, 3)),
])
def test_reshape(shape, expected):
    x = np.arange(6, dtype=f32).reshape(2, 3)
    got = run("reshape", x=x, shape=shape)
    assert got.shape == expected and got.reshape(-1).tolist() == list(range(6))


def test_reshape_errors():
    x = np.zeros((2, 3), f32)
    with pytest.raises(OpError, match="more than one -1"):
        out_types("reshape", x=x, shape=[-1, -1])
    with pytest.raises(OpError, match=r"cannot reshape \(2, 3\)"):
        out_types("reshape", x=x, shape=[4, -1])


def test_expand_dims_and_squeeze():
    x = np.arange(3, dtype=f32)
    assert run("expand_dims", x=x, axes=[0]).shape == (1, 3)
    assert run("expand_dims", x=x, axes=[-1]).shape == (3, 1)
    assert run("expand_dims", x=x, axes=[0, 2]).shape == (1, 3, 1)
    y = np.zeros((1, 3, 1, 2), f32)
    assert run("squeeze", x=y).shape == (3, 2)
    assert run("squeeze", x=y, axes=[2]).shape == (1, 3, 2)
    assert run("squeeze", x=y, axes=[0, -2]).shape == (3, 2)
    with pytest.raises(OpError, match=r"axis 1 of \(1, 3, 1, 2\) is not 1"):
        out_types("squeeze", x=y, axes=[1])


def test_concat_and_gather():
    a, b = np.array([[1, 2]], f32), np.array([[3, 4], [5, 6]], f32)
    assert run("concat", values=[a, b], axis=0).tolist() == [[1, 2], [3, 4], [5, 6]]
    assert run("concat", values=[b, b], axis=-1).tolist() == [[3, 4, 3, 4], [5, 6, 5, 6]]
    with pytest.raises(OpError, match="differs from values"):
        out_types("concat", values=[a, b], axis=1)
    x = np.arange(6, dtype=f32).reshape(2, 3)
    assert run("gather", x=x, indices=np.array([2, 0, -1], np.int32), axis=1).tolist() == \
        [[2, 0, 2], [5, 3, 5]]
    assert run("gather", x=x, indices=np.array([[1]], np.int32)).tolist() == [[[3, 4, 5]]]
    with pytest.raises(OpError, match="indices must be integers"):
        out_types("gather", x=x, indices=np.array([0.0], f32))
