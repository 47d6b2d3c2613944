"""The common layers beyond the core set: one hand-checked test each."""
import math

import numpy as np
import pytest

from ir.ops import OpError
from tests.ir.op_harness import out_types, run

f32 = np.float32


def test_sin_cos_silu():
    x = np.array([0.0, math.pi / 2], f32)
    np.testing.assert_allclose(run("sin", x=x), [0, 1], atol=1e-7)
    np.testing.assert_allclose(run("cos", x=x), [1, 0], atol=1e-7)
    np.testing.assert_allclose(run("silu", x=np.array([0.0, 2.0], f32)), [0, 2 / (1 + math.exp(-2))], rtol=1e-6)


def test_leaky_and_clamped_relu():
    x = np.array([-10.0, -1.0, 3.0, 8.0], f32)
    np.testing.assert_allclose(run("leaky_relu", x=x), [-0.1, -0.01, 3, 8], rtol=1e-6)
    assert run("leaky_relu", x=x, alpha=f32(0.5)).tolist() == [-5, -0.5, 3, 8]
    assert run("clamped_relu", x=x).tolist() == [0, 0, 3, 6]
    assert run("clamped_relu", x=x, alpha=f32(0.5), beta=f32(4)).tolist() == [-5, -0.5, 3, 4]


def test_select():
    c = np.array([[True], [False]])
    a, b = np.array([1, 2], f32), np.array([[10, 20], [30, 40]], f32)
    assert run("select", cond=c, a=a, b=b).tolist() == [[1, 2], [30, 40]]
    with pytest.raises(OpError, match="a is fp32 but b is int32"):
        out_types("select", cond=c, a=a, b=np.ones(2, np.int32))


def test_reduce_prod_and_argmax():
    x = np.array([[1, 5, 5], [7, 2, 3]], f32)
    assert run("reduce_prod", x=x, axes=[1]).tolist() == [25, 42]
    am = run("reduce_argmax", x=x, axis=1)
    assert am.dtype == np.int32 and am.tolist() == [1, 0]  # first maximum wins
    assert run("reduce_argmax", x=x, axis=0, keep_dims=True).tolist() == [[1, 0, 0]]


def test_instance_norm():
    x = np.array([[[1, 3], [10, 14]]], f32)  # N=1, C=2, W=2
    y = run("instance_norm", x=x, gamma=np.array([2, 1], f32), beta=np.array([0, 5], f32), epsilon=f32(0))
    assert y.tolist() == [[[-2, 2], [4, 6]]]


def test_slice_by_index():
    x = np.arange(12, dtype=f32).reshape(3, 4)
    assert run("slice_by_index", x=x, begin=[1, 0], end=[3, 4], stride=[1, 2]).tolist() == [[4, 6], [8, 10]]
    assert run("slice_by_index", x=x, begin=[0, -1], end=[0, 0], end_mask=[True, True]).tolist() == [[3], [7], [11]]
    assert run("slice_by_index", x=x, begin=[0, 0], end=[0, 0], stride=[-1, 1], begin_mask=[True, True],
               end_mask=[True, True]).tolist() == x[::-1].tolist()
    got = run("slice_by_index", x=x, begin=[-1, 1], end=[0, 3], squeeze_mask=[True, False])
    assert got.tolist() == [9, 10]
    assert out_types("slice_by_index", x=x, begin=[-1, 1], end=[0, 3], squeeze_mask=[True, False])[0].shape == (2,)


def test_split():
    x = np.arange(6, dtype=f32).reshape(1, 6)
    parts = run("split", x=x, num_splits=3, axis=1)
    assert [p.tolist() for p in parts] == [[[0, 1]], [[2, 3]], [[4, 5]]]
    parts = run("split", x=x, split_sizes=[1, 5], axis=-1)
    assert [p.shape for p in parts] == [(1, 1), (1, 5)]
    with pytest.raises(OpError, match="not divisible by num_splits=4"):
        out_types("split", x=x, num_splits=4, axis=1)


def test_pad_modes():
    x = np.array([[1, 2, 3]], f32)
    assert run("pad", x=x, pad=[1, 2]).tolist() == [[0, 1, 2, 3, 0, 0]]
    assert run("pad", x=x, pad=[1, 0, 0, 1], constant_val=f32(9)).tolist() == [[9, 9, 9, 9], [1, 2, 3, 9]]
    assert run("pad", x=x, pad=[2, 1], mode="reflect").tolist() == [[3, 2, 1, 2, 3, 2]]
    assert run("pad", x=x, pad=[1, 2], mode="replicate").tolist() == [[1, 1, 2, 3, 3, 3]]
    with pytest.raises(OpError, match="mode 'wrap'"):
        out_types("pad", x=x, pad=[1, 1], mode="wrap")


def test_tile():
    x = np.array([[1, 2]], f32)
    assert run("tile", x=x, reps=[2, 2]).tolist() == [[1, 2, 1, 2], [1, 2, 1, 2]]
    with pytest.raises(OpError, match="one entry per axis"):
        out_types("tile", x=x, reps=[2])
