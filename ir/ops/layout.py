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


# ---- slicing, splitting, padding, tiling ------------------------------------

def _flags(val, rank):
    return [False] * rank if val is None else [bool(f) for f in np.asarray(val).reshape(-1)]


def _slices(shape, get):
    """Python slices (and axes to squeeze) for slice_by_index; masks mean 'whole range'."""
    rank = len(shape)
    begin, end = [int(b) for b in np.asarray(get("begin")).reshape(-1)], [int(e) for e in np.asarray(get("end")).reshape(-1)]
    stride = [1] * rank if get("stride") is None else [int(s) for s in np.asarray(get("stride")).reshape(-1)]
    bmask, emask, smask = (_flags(get(n), rank) for n in ("begin_mask", "end_mask", "squeeze_mask"))
    if not all(len(p) == rank for p in (begin, end, stride, bmask, emask, smask)):
        raise OpError(f"slice_by_index: begin/end/stride/masks must each have {rank} entries")
    if 0 in stride:
        raise OpError("slice_by_index: stride 0")
    sl = []
    for i in range(rank):
        if smask[i]:  # take the single element at begin
            b = begin[i] + shape[i] if begin[i] < 0 and isinstance(shape[i], int) else begin[i]
            sl.append(slice(b, b + 1, 1))
        else:
            sl.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]))
    return sl, [i for i in range(rank) if smask[i]]


def _slice_infer(ins, attrs):
    x = ins["x"]
    sl, squeeze = _slices(x.shape, lambda n: value(ins, n))
    shape = [len(range(*s.indices(d))) if isinstance(d, int) else "?" for s, d in zip(sl, x.shape)]
    return [tt(x.dtype, [d for i, d in enumerate(shape) if i not in squeeze])]


@op("slice_by_index", [In("x"), In("begin", const=True), In("end", const=True),
                       In("stride", optional=True, const=True), In("begin_mask", optional=True, const=True),
                       In("end_mask", optional=True, const=True), In("squeeze_mask", optional=True, const=True)],
    _slice_infer)
def _slice_by_index(v, ctx):
    """x[begin:end:stride] per axis; begin_mask / end_mask take the whole range,
    squeeze_mask takes the element at begin and drops the axis"""
    sl, squeeze = _slices(v["x"].shape, v.get)
    return [np.squeeze(v["x"][tuple(sl)], axis=tuple(squeeze))]


def _split_sizes(dim, get):
    if get("split_sizes") is not None:
        sizes = [int(s) for s in np.asarray(get("split_sizes")).reshape(-1)]
        if isinstance(dim, int) and sum(sizes) != dim:
            raise OpError(f"split: split_sizes {sizes} do not add up to {dim}")
        return sizes
    if get("num_splits") is None:
        raise OpError("split: give num_splits or split_sizes")
    n = int(get("num_splits"))
    if not isinstance(dim, int):
        raise OpError("split: num_splits needs a known axis size")
    if n < 1 or dim % n:
        raise OpError(f"split: axis size {dim} is not divisible by num_splits={n}")
    return [dim // n] * n


def _split_infer(ins, attrs):
    x = ins["x"]
    axis = norm_axis(value(ins, "axis"), x.rank, "split axis")
    sizes = _split_sizes(x.shape[axis], lambda n: value(ins, n))
    return [tt(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


@op("split", [In("x"), In("num_splits", optional=True, const=True), In("split_sizes", optional=True, const=True),
              In("axis", const=True)], _split_infer)
def _split(v, ctx):
    """x cut along axis into num_splits equal parts or parts of split_sizes"""
    x, axis = v["x"], int(v["axis"])
    sizes = _split_sizes(x.shape[axis], v.get)
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _pad_widths(rank, pad):
    pad = [int(p) for p in np.asarray(pad).reshape(-1)]
    if len(pad) % 2 or len(pad) // 2 > rank:
        raise OpError(f"pad: {len(pad)} pad values do not fit rank {rank} (2 per padded trailing axis)")
    n = len(pad) // 2
    return [(0, 0)] * (rank - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]


def _pad_infer(ins, attrs):
    x = ins["x"]
    mode = str(value(ins, "mode", "constant"))
    if mode not in _PAD_MODES:
        raise OpError(f"pad: mode {mode!r} is not one of {', '.join(_PAD_MODES)}")
    widths = _pad_widths(x.rank, value(ins, "pad"))
    return [tt(x.dtype, [d + b + e if isinstance(d, int) else "?" for d, (b, e) in zip(x.shape, widths)])]


@op("pad", [In("x"), In("pad", const=True), In("mode", optional=True, const=True),
            In("constant_val", optional=True, const=True)], _pad_infer)
def _pad(v, ctx):
    """pad the trailing len(pad)/2 axes by pad = [begin, end, ...]; modes constant
    (constant_val, default 0), reflect, replicate"""
    x = v["x"]
    mode = _PAD_MODES[str(v["mode"]) if v.get("mode") is not None else "constant"]
    widths = _pad_widths(x.ndim, v["pad"])
    if mode == "constant":
        c = v["constant_val"] if v.get("constant_val") is not None else 0
        return [np.pad(x, widths, mode="constant", constant_values=c)]
    return [np.pad(x, widths, mode=mode)]


def _tile_infer(ins, attrs):
    x = ins["x"]
    reps = [int(r) for r in np.asarray(value(ins, "reps")).reshape(-1)]
    if len(reps) != x.rank:
        raise OpError(f"tile: reps {reps} must have one entry per axis of {x.shape}")
    return [tt(x.dtype, [d * r if isinstance(d, int) else "?" for d, r in zip(x.shape, reps)])]


@op("tile", [In("x"), In("reps", const=True)], _tile_infer)
def _tile(v, ctx):
    """x repeated reps[i] times along axis i"""
    return [np.tile(v["x"], [int(r) for r in np.asarray(v["reps"]).reshape(-1)])]
