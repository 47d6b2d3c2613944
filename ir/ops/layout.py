"""Ops that move data without arithmetic: transpose, reshape, expand_dims,
squeeze, concat, gather."""
from __future__ import annotations

import numpy as np

from ir.ops.registry import In, OpError, op, tt, value
from ir.ops.shape_util import norm_axis, numel


def _transpose_infer(ins, attrs):
    x, perm = ins["x"], [int(p) for p in value(ins, "perm")]
    if sorted(norm_axis(p, x.rank, "perm entry") for p in perm) != list(range(x.rank)):
        raise OpError(f"transpose: perm {perm} is not a permutation of rank {x.rank}")
    return [tt(x.dtype, tuple(x.shape[p] for p in perm))]


@op("transpose", [In("x"), In("perm", const=True)], _transpose_infer)
def _transpose(v, ctx):
    """permute the axes of x"""
    return [np.transpose(v["x"], [int(p) for p in v["perm"]])]


def reshape_target(in_shape: tuple, shape) -> tuple:
    """Resolve -1 (inferred) and 0 (copy the input dim) in a target shape."""
    shape = [int(s) for s in np.asarray(shape).reshape(-1)]
    out = [in_shape[i] if s == 0 and i < len(in_shape) else s for i, s in enumerate(shape)]
    if out.count(-1) > 1:
        raise OpError(f"reshape: more than one -1 in {shape}")
    total = numel(in_shape)
    if -1 in out:
        known = int(np.prod([s for s in out if s != -1]))
        if total is None:
            return tuple("?" if s == -1 else s for s in out)
        if known == 0 or total % known:
            raise OpError(f"reshape: cannot reshape {in_shape} to {shape}")
        out[out.index(-1)] = total // known
    if total is not None and int(np.prod(out)) != total:
        raise OpError(f"reshape: cannot reshape {in_shape} ({total} elements) to {tuple(out)}")
    return tuple(out)


def _reshape_infer(ins, attrs):
    x = ins["x"]
    return [tt(x.dtype, reshape_target(x.shape, value(ins, "shape")))]


@op("reshape", [In("x"), In("shape", const=True)], _reshape_infer)
def _reshape(v, ctx):
    """reshape x; -1 infers one dim, 0 copies the input dim"""
    return [np.reshape(v["x"], reshape_target(v["x"].shape, v["shape"]))]


def _axes(ins, name="axes"):
    a = value(ins, name)
    return None if a is None else [int(i) for i in np.asarray(a).reshape(-1)]


def _expand_dims_infer(ins, attrs):
    x, axes = ins["x"], _axes(ins)
    rank = x.rank + len(axes)
    axes = sorted(norm_axis(a, rank, "expand_dims axis") for a in axes)
    if len(set(axes)) != len(axes):
        raise OpError(f"expand_dims: repeated axes {_axes(ins)}")
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [tt(x.dtype, shape)]


@op("expand_dims", [In("x"), In("axes", const=True)], _expand_dims_infer)
def _expand_dims(v, ctx):
    """insert size-1 axes at the given positions of the output"""
    x, axes = v["x"], [int(a) for a in np.asarray(v["axes"]).reshape(-1)]
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(a + rank if a < 0 else a for a in axes))]


def _squeeze_infer(ins, attrs):
    x, axes = ins["x"], _axes(ins)
    if axes is None:
        keep = [d for d in x.shape if d != 1]
    else:
        drop = {norm_axis(a, x.rank, "squeeze axis") for a in axes}
        for a in drop:
            if x.shape[a] != 1 and not isinstance(x.shape[a], str):
                raise OpError(f"squeeze: axis {a} of {x.shape} is not 1")
        keep = [d for i, d in enumerate(x.shape) if i not in drop]
    return [tt(x.dtype, keep)]


@op("squeeze", [In("x"), In("axes", optional=True, const=True)], _squeeze_infer)
def _squeeze(v, ctx):
    """remove size-1 axes (all of them when axes is absent)"""
    axes = v.get("axes")
    return [np.squeeze(v["x"], None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1)))]


def _concat_infer(ins, attrs):
    xs = ins["values"]
    axis = norm_axis(value(ins, "axis"), xs[0].rank, "concat axis")
    shape = list(xs[0].shape)
    dims = [x.shape[axis] for x in xs]
    shape[axis] = "?" if any(isinstance(d, str) for d in dims) else sum(dims)
    for i, x in enumerate(xs[1:], 1):
        if x.dtype != xs[0].dtype or x.rank != xs[0].rank:
            raise OpError(f"concat: values[{i}] is {x.type}, values[0] is {xs[0].type}")
        for a, (d0, d) in enumerate(zip(xs[0].shape, x.shape)):
            if a != axis and d0 != d and isinstance(d0, int) and isinstance(d, int):
                raise OpError(f"concat: values[{i}] {x.shape} differs from values[0] {xs[0].shape} off axis {axis}")
    return [tt(xs[0].dtype, shape)]


@op("concat", [In("values", variadic=True), In("axis", const=True)], _concat_infer)
def _concat(v, ctx):
    """join values along axis"""
    return [np.concatenate(v["values"], axis=int(v["axis"]))]


def _gather_infer(ins, attrs):
    x, idx = ins["x"], ins["indices"]
    if not idx.type.dt.is_integer:
        raise OpError(f"gather: indices must be integers, got {idx.dtype}")
    axis = norm_axis(value(ins, "axis", 0), x.rank, "gather axis")
    return [tt(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])]


@op("gather", [In("x"), In("indices"), In("axis", optional=True, const=True)], _gather_infer)
def _gather(v, ctx):
    """take slices of x along axis at indices (negative indices count from the end)"""
    axis = int(v.get("axis") if v.get("axis") is not None else 0)
    return [np.take(v["x"], v["indices"].astype(np.int64), axis=axis)]
