"""Gathering, scattering, slicing, padding and the tensors built from shapes.

Index inputs may be negative (counted from the end of their axis) wherever
ONNX allows it; an index outside [-n, n) is a ValueError naming the input.
Scatter reductions (add / mul / max / min) apply duplicates in order; with
reduction "none" the last duplicate wins (ONNX leaves it unspecified)."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import (Unsupported, arg, ints, need, norm_axes, norm_axis, prod,
                                           scalar)


def _fix_indices(idx, n: int, what: str) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64, copy=False)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ValueError(f"{what}: index out of range [{-n}, {n}) "
                         f"(min {int(idx.min())}, max {int(idx.max())})")
    return np.where(idx < 0, idx + n, idx)


def gather(ins, attrs, node):
    x, idx = need(ins, 0, "data"), need(ins, 1, "indices")
    axis = norm_axis(attrs.get("axis", 0), x.ndim)
    return [np.take(x, _fix_indices(idx, x.shape[axis], "Gather indices"), axis=axis)]


def _element_index(indices: np.ndarray, axis: int) -> tuple:
    """A full index tuple addressing data[..., indices[i], ...] at every position i of
    `indices` (whose shape may be smaller than data's in any dimension)."""
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = indices
    return tuple(grid)


def gather_elements(ins, attrs, node):
    x, idx = need(ins, 0, "data"), need(ins, 1, "indices")
    if x.ndim != np.ndim(idx):
        raise ValueError(f"GatherElements: data has rank {x.ndim}, indices rank {np.ndim(idx)}")
    axis = norm_axis(attrs.get("axis", 0), x.ndim)
    idx = _fix_indices(idx, x.shape[axis], "GatherElements indices")
    for d, (n, m) in enumerate(zip(x.shape, idx.shape)):
        if d != axis and m > n:
            raise ValueError(f"GatherElements: indices dim {d} is {m}, data's is only {n}")
    return [x[_element_index(idx, axis)]]


def gather_nd(ins, attrs, node):
    x, idx = need(ins, 0, "data"), need(ins, 1, "indices")
    b = int(attrs.get("batch_dims", 0))
    idx = np.asarray(idx, np.int64)
    k = idx.shape[-1]
    if k > x.ndim - b:
        raise ValueError(f"GatherND: index tuples of {k} exceed data rank {x.ndim} - batch_dims {b}")
    batch = x.shape[:b]
    nb = prod(batch)
    xb = x.reshape((nb,) + x.shape[b:])
    ib = idx.reshape((nb,) + idx.shape[b:-1] + (k,))
    dims = np.array(x.shape[b:b + k], np.int64)
    ib = np.where(ib < 0, ib + dims, ib)
    if ib.size and (np.any(ib < 0) or np.any(ib >= dims)):
        raise ValueError("GatherND: index out of range")
    bsel = np.arange(nb).reshape((nb,) + (1,) * (ib.ndim - 2))
    res = xb[(bsel,) + tuple(np.moveaxis(ib, -1, 0))]
    return [res.reshape(batch + idx.shape[b:-1] + x.shape[b + k:])]


_REDUCE_AT = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(attrs) -> str:
    r = attrs.get("reduction", "none")
    if r != "none" and r not in _REDUCE_AT:
        raise ValueError(f"reduction must be none, add, mul, max or min, got {r!r}")
    return r


def scatter_elements(ins, attrs, node):
    x, idx, upd = need(ins, 0, "data"), need(ins, 1, "indices"), need(ins, 2, "updates")
    axis = norm_axis(attrs.get("axis", 0), x.ndim)
    idx = _fix_indices(idx, x.shape[axis], "ScatterElements indices")
    if idx.shape != upd.shape:
        raise ValueError(f"ScatterElements: indices {idx.shape} and updates {upd.shape} differ")
    return [_scattered(x, _element_index(idx, axis), upd, attrs)]


def scatter_nd(ins, attrs, node):
    x, idx, upd = need(ins, 0, "data"), need(ins, 1, "indices"), need(ins, 2, "updates")
    idx = np.asarray(idx, np.int64)
    k = idx.shape[-1]
    dims = np.array(x.shape[:k], np.int64)
    flat = idx.reshape(-1, k)
    flat = np.where(flat < 0, flat + dims, flat)
    if flat.size and (np.any(flat < 0) or np.any(flat >= dims)):
        raise ValueError("ScatterND: index out of range")
    u = np.asarray(upd).reshape((flat.shape[0],) + x.shape[k:])
    return [_scattered(x, tuple(flat.T), u, attrs)]


def _scattered(x, where, values, attrs):
    """A copy of x with `values` written (or reduced, per the `reduction` attr) at `where`."""
    res = np.array(x, copy=True)
    r = _reduction(attrs)
    if r == "none":
        res[where] = values
    else:
        _REDUCE_AT[r].at(res, where, values)
    return res


def expand(ins, attrs, node):
    x, shape = need(ins, 0, "input"), ints(need(ins, 1, "shape"))
    try:
        out = np.broadcast_shapes(x.shape, tuple(shape))
    except ValueError:
        raise ValueError(f"Expand: shape {shape} does not broadcast with input {x.shape}") from None
    return [np.array(np.broadcast_to(x, out))]


def range_(ins, attrs, node):
    start, limit, delta = (need(ins, i, n) for i, n in enumerate(("start", "limit", "delta")))
    dt = np.asarray(start).dtype
    s, l, d = scalar(start), scalar(limit), scalar(delta)
    if d == 0:
        raise ValueError("Range: delta is 0")
    if dt.kind in "iu":
        n = max(-(-(l - s) // d), 0)  # exact ceil division
    else:
        n = max(int(np.ceil((l - s) / d)), 0)
    return [(np.asarray(s, dt) + np.arange(n, dtype=np.int64 if dt.kind in "iu" else dt) * np.asarray(d, dt))
            .astype(dt)]


def constant_of_shape(ins, attrs, node):
    shape = ints(need(ins, 0, "input"))
    if any(d < 0 for d in shape):
        raise ValueError(f"ConstantOfShape: negative dimension in {shape}")
    value = attrs.get("value")
    v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return [np.full(shape, v[0], dtype=v.dtype)]


def non_zero(ins, attrs, node):
    x = need(ins, 0, "X")
    if x.ndim == 0:
        return [np.zeros((0, 1 if bool(x) else 0), np.int64)]
    return [np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)]


def one_hot(ins, attrs, node):
    idx, depth, values = need(ins, 0, "indices"), need(ins, 1, "depth"), need(ins, 2, "values")
    d = int(scalar(depth))
    if d < 1:
        raise ValueError(f"OneHot: depth {d} must be positive")
    values = np.asarray(values).reshape(-1)
    axis = norm_axis(attrs.get("axis", -1), np.ndim(idx) + 1)
    i = np.asarray(idx).astype(np.int64)
    i = np.where(i < 0, i + d, i)
    hot = np.expand_dims(i, axis) == np.arange(d).reshape((-1,) + (1,) * (np.ndim(idx) - axis))
    return [np.where(hot, values[1], values[0]).astype(values.dtype)]


def tile(ins, attrs, node):
    x, reps = need(ins, 0, "input"), ints(need(ins, 1, "repeats"))
    if len(reps) != x.ndim:
        raise ValueError(f"Tile: {len(reps)} repeats for an input of rank {x.ndim}")
    return [np.tile(x, reps)]


def _slice_params(ins, attrs, node):
    if node.opset < 10:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = attrs.get("axes")
        steps = None
    else:
        starts, ends = ints(need(ins, 1, "starts")), ints(need(ins, 2, "ends"))
        axes, steps = arg(ins, 3), arg(ins, 4)
        axes = None if axes is None else ints(axes)
        steps = None if steps is None else ints(steps)
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("Slice: starts, ends, axes and steps differ in length")
    return starts, ends, axes, steps


_END_OF_AXIS = (2 ** 31 - 1, 2 ** 63 - 1)  # an end that means "through the end", either way


def _clamp_slice(start: int, end: int, step: int, n: int) -> slice:
    """onnxruntime's clamping: negatives count from the end; a start clamps to [0, n]
    (positive step) or [0, n - 1] (negative step); an end of INT32_MAX / INT64_MAX runs
    through the end in the step's direction, other ends clamp to [0, n] or [-1, n - 1]
    (-1: 'before the first element'). The spec clamps a negative step's start to
    [-1, n - 1]; onnxruntime, the arbiter, takes element 0 there."""
    if step == 0:
        raise ValueError("Slice: a step is 0")
    start = start + n if start < 0 else start
    if step > 0:
        start = min(max(start, 0), n)
        end = n if end in _END_OF_AXIS else min(max(end + n if end < 0 else end, 0), n)
        return slice(start, end, step)
    start = min(max(start, 0), n - 1)
    end = -1 if end in _END_OF_AXIS else min(max(end + n if end < 0 else end, -1), n - 1)
    if start < 0:
        return slice(0, 0, step)  # an empty axis
    return slice(start, end if end >= 0 else None, step)


def slice_(ins, attrs, node):
    x = need(ins, 0, "data")
    starts, ends, axes, steps = _slice_params(ins, attrs, node)
    axes = norm_axes(axes, x.ndim)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[a] = _clamp_slice(int(s), int(e), int(st), x.shape[a])
    return [np.array(x[tuple(sl)])]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def pad(ins, attrs, node):
    x = need(ins, 0, "data")
    mode = attrs.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise ValueError(f"Pad: mode {mode!r} is not constant, reflect, edge or wrap")
    if node.opset < 11:
        pads, value, axes = list(attrs.get("pads", attrs.get("paddings", ()))), float(attrs.get("value", 0.0)), None
    else:
        pads = ints(need(ins, 1, "pads"))
        value = scalar(arg(ins, 2), 0)
        axes = arg(ins, 3)
        axes = None if axes is None else ints(axes)
    axes = list(range(x.ndim)) if axes is None else list(norm_axes(axes, x.ndim))
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    before, after = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[len(axes) + i]
    bad = [d for d in range(x.ndim) if x.shape[d] + before[d] + after[d] < 0]
    if bad:
        raise ValueError(f"Pad: pads {pads} crop axis {bad[0]} of {x.shape} below zero length")
    # negative pads crop first; numpy pads the rest
    crop = tuple(slice(max(-b, 0), x.shape[d] - max(-e, 0)) for d, (b, e) in enumerate(zip(before, after)))
    y = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
    if mode == "constant":
        if x.dtype == object:
            res = np.pad(y, widths, mode="constant", constant_values=value if value != 0 else "")
        else:
            res = np.pad(y, widths, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    else:
        if any(w != (0, 0) for w, n in zip(widths, y.shape) if n == 0):
            raise ValueError(f"Pad: mode {mode} needs a non-empty axis to pad")
        res = np.pad(y, widths, mode=_PAD_MODES[mode])
    return [res]


def split(ins, attrs, node):
    x = need(ins, 0, "input")
    axis = norm_axis(attrs.get("axis", 0), x.ndim)
    n = x.shape[axis]
    sizes = attrs.get("split") if node.opset < 13 else arg(ins, 1)
    if sizes is not None and len(ints(sizes)):
        sizes = ints(sizes)
    elif "num_outputs" in attrs:  # 18+: ceil-sized chunks, the last one smaller
        k = int(attrs["num_outputs"])
        chunk = -(-n // k)
        sizes = [min(chunk, n - i * chunk) for i in range(k)]
    else:
        k = node.n_out
        if n % k:
            raise ValueError(f"Split: axis of {n} does not split into {k} equal parts")
        sizes = [n // k] * k
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(f"Split: sizes {sizes} do not add up to the axis length {n}")
    return [np.array(p) for p in np.split(x, np.cumsum(sizes)[:-1], axis=axis)]


def concat(ins, attrs, node):
    xs = [x for x in ins if x is not None]
    if not xs:
        raise ValueError("Concat: no inputs")
    axis = norm_axis(attrs["axis"], xs[0].ndim)
    return [np.concatenate(xs, axis=axis)]


def compress(ins, attrs, node):
    x, cond = need(ins, 0, "input"), need(ins, 1, "condition")
    cond = np.asarray(cond, bool).reshape(-1)
    if "axis" in attrs:
        axis = norm_axis(attrs["axis"], x.ndim)
        return [np.compress(cond, x, axis=axis)]
    return [np.compress(cond, x.reshape(-1))]


def trilu(ins, attrs, node):
    x = need(ins, 0, "input")
    k = int(scalar(arg(ins, 1), 0))
    if x.ndim < 2:
        raise ValueError(f"Trilu: input of rank {x.ndim}, needs at least 2")
    return [np.triu(x, k) if int(attrs.get("upper", 1)) else np.tril(x, k)]


def unique(ins, attrs, node):
    x = need(ins, 0, "X")
    axis = attrs.get("axis")
    if axis is not None:
        axis = norm_axis(axis, x.ndim)
    if x.dtype == object:
        raise Unsupported("Unique of strings")
    y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not int(attrs.get("sorted", 1)):  # order of first occurrence instead
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y = np.take(y, order, axis=axis if axis is not None else 0)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return [y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)]


def reverse_sequence(ins, attrs, node):
    x, lens = need(ins, 0, "input"), ints(need(ins, 1, "sequence_lens"))
    batch_axis, time_axis = int(attrs.get("batch_axis", 1)), int(attrs.get("time_axis", 0))
    res = np.array(x, copy=True)
    for b, n in enumerate(lens):
        src = [slice(None)] * x.ndim
        src[batch_axis], src[time_axis] = b, slice(0, n)
        dst = list(src)
        dst[time_axis] = slice(n - 1, None, -1) if n > 0 else slice(0, 0)
        res[tuple(dst)] = x[tuple(src)]
    return [res]


def eye_like(ins, attrs, node):
    x = need(ins, 0, "input")
    if x.ndim != 2:
        raise ValueError(f"EyeLike: input of rank {x.ndim}, needs 2")
    from ir.formats.onnx.kernels._util import np_dtype

    dt = np_dtype(attrs["dtype"]) if "dtype" in attrs else x.dtype
    return [np.eye(x.shape[0], x.shape[1], k=int(attrs.get("k", 0)), dtype=dt)]


def center_crop_pad(ins, attrs, node):
    x, shape = need(ins, 0, "input_data"), ints(need(ins, 1, "shape"))
    axes = attrs.get("axes")
    axes = list(range(x.ndim)) if axes is None else list(norm_axes(axes, x.ndim))
    if len(axes) != len(shape):
        raise ValueError(f"CenterCropPad: {len(shape)} sizes for {len(axes)} axes")
    res = x
    for a, size in zip(axes, shape):
        n = res.shape[a]
        if size < n:  # crop: the larger half of the excess goes from the end
            start = (n - size) // 2
            res = np.take(res, np.arange(start, start + size), axis=a)
        elif size > n:  # pad: the larger half of the extra goes at the end
            before = (size - n) // 2
            w = [(0, 0)] * res.ndim
            w[a] = (before, size - n - before)
            res = np.pad(res, w)
    return [np.array(res)]


def scatter_deprecated(ins, attrs, node):
    """Scatter (opsets 9-10): ScatterElements without a reduction."""
    return scatter_elements(ins, {k: v for k, v in attrs.items() if k != "reduction"}, node)


KERNELS = {
    "Gather": gather, "GatherElements": gather_elements, "GatherND": gather_nd,
    "Scatter": scatter_deprecated, "ScatterElements": scatter_elements, "ScatterND": scatter_nd,
    "Expand": expand, "Range": range_, "ConstantOfShape": constant_of_shape, "NonZero": non_zero,
    "OneHot": one_hot, "Tile": tile, "Slice": slice_, "Pad": pad, "Split": split, "Concat": concat,
    "Compress": compress, "Trilu": trilu, "Unique": unique, "ReverseSequence": reverse_sequence,
    "EyeLike": eye_like, "CenterCropPad": center_crop_pad,
}
