"""affine_quantize_weights' promise about each weight (and about a quantized LUT)."""
from __future__ import annotations

import math

import numpy as np

from ir import oracle
from stages.contracts.blocks import _block_reduce, _full_rank, _largest_divisor, _ulp
from stages.contracts.graph import _AFFINE_OPS, _LUT_OPS, consumer_axes, find_form
from stages.contracts.weights import WeightCase, _input


# dtype -> (signed, bits); the code range per mode is the seed's (symmetric drops one code)
_QDTYPES = {"int8": (True, 8), "uint8": (False, 8), "int4": (True, 4), "uint4": (False, 4)}


def code_range(dtype: str, mode: str) -> tuple:
    signed, bits = _QDTYPES[dtype]
    lo, hi = (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if mode == "linear_symmetric":
        lo, hi = (lo + 1, hi) if signed else (lo, hi - 1)
    return lo, hi


def affine_tensor_problems(original, codes, scale, zero_point, dtype: str, mode: str, where: str,
                           valid=None) -> list:
    """The affine promise on one quantized tensor (dense shape; `valid`: the elements it
    quantized, all by default): codes in the mode's range; every value inside the
    representable range within scale/2 of its reconstruction; the scale and zero point the
    mode defines from each block's range, up to one unit in the last place of the scale."""
    problems = []
    w = np.asarray(original)
    wdt = w.dtype
    s = np.asarray(scale)
    z = np.zeros(s.shape, np.int64) if zero_point is None else np.asarray(zero_point).astype(np.int64)
    lo, hi = code_range(dtype, mode)
    valid = np.ones(w.shape, bool) if valid is None else np.asarray(valid, bool)
    c = np.asarray(codes).astype(np.int64)
    bad = valid & ((c < lo) | (c > hi))
    if bad.any():
        i = np.flatnonzero(bad)[0]
        problems.append(f"{where}: {int(bad.sum())} code(s) outside [{lo}, {hi}] ({dtype} {mode}), "
                        f"e.g. {int(c.reshape(-1)[i])}")
    with np.errstate(invalid="ignore"):
        broken = ~np.isfinite(s.astype(np.float64)) | ~(s.astype(np.float64) > 0)
    if broken.any():
        i = np.flatnonzero(broken)[0]
        problems.append(f"{where}: {int(broken.sum())} scale(s) not finite and > 0, e.g. "
                        f"{s.reshape(-1)[i]!r} (an all-zero block still needs a usable scale)")
        return problems
    S = oracle.per_element(s, w.shape, None)
    Z = oracle.per_element(z, w.shape, None)
    recon = (c - Z) * S
    w64 = w.astype(np.float64)
    # every value, the block's range ends included: the codes must reach them (a scale rounded
    # the wrong way leaves an end more than half a step past the last code, where it clips)
    # the stage divides in fp32 (fp64 for fp64 weights, whose codes are then exact): the
    # rounding of w / scale is all the room beyond half a step
    eps = float(np.finfo(np.float64 if wdt == np.float64 else np.float32).eps)
    room = S / 2 * (1 + 2.0 ** -20) + 2 * eps * np.abs(w64)
    big = float(np.finfo(s.dtype).max) if s.dtype.kind == "f" else math.inf
    room = np.where(np.abs(w64) > big - S, S, room)  # the documented edge of fp16's range
    err = np.abs(w64 - recon)
    over = valid & ~(err <= room)
    if over.any():
        i = np.flatnonzero(over)[0]
        problems.append(f"{where}: {int(over.sum())} value(s) farther than scale/2 from their reconstruction, "
                        f"e.g. {w64.reshape(-1)[i]!r} -> {recon.reshape(-1)[i]!r} (scale {S.reshape(-1)[i]!r}, "
                        f"codes [{lo}, {hi}])")
    problems += _scale_problems(np.where(valid, w64, 0.0), s, z, lo, hi, mode, dtype, where)
    return problems


def _scale_problems(w64, s, z, lo, hi, mode, dtype, where) -> list:
    ps = s.shape
    if any(d % p for d, p in zip(w64.shape, ps)) or s.ndim != w64.ndim:
        return [f"{where}: scale of shape {ps} does not divide the tensor's shape {w64.shape} into blocks"]
    a = np.minimum(_block_reduce(w64, ps, np.min), 0.0)
    b = np.maximum(_block_reduce(w64, ps, np.max), 0.0)
    if mode == "linear_symmetric":
        r = np.maximum(-a, b)
        a, b = -r, r
        want_z = np.full(ps, 0 if lo < 0 else (hi - lo) // 2)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            want_z = np.clip((lo * b - hi * a) / np.where(b > a, b - a, 1.0), lo, hi)
    exact_s = (b - a) / (hi - lo)
    stored = s.astype(np.float64)
    tiny = float(np.nextafter(np.zeros((), s.dtype), np.ones((), s.dtype)))
    ok = np.abs(stored - exact_s) <= _ulp(stored, s.dtype) * 1.0001
    ok |= (exact_s == 0) & (stored == 1.0)
    ok |= (exact_s < tiny) & (stored == tiny)
    problems = []
    if not ok.all():
        i = np.flatnonzero(~ok)[0]
        problems.append(f"{where}: {int((~ok).sum())} block scale(s) are not (max - min) / {hi - lo} of the "
                        f"block ({mode}, {dtype}), e.g. {stored.reshape(-1)[i]!r} instead of "
                        f"{exact_s.reshape(-1)[i]!r}")
    zok = np.abs(z - want_z) <= 0.5 + 1e-9
    if mode == "linear_symmetric":
        zok = z == want_z
    zok |= exact_s == 0
    if not np.all(zok):
        i = np.flatnonzero(~np.broadcast_to(zok, ps))[0]
        problems.append(f"{where}: zero point {int(np.broadcast_to(z, ps).reshape(-1)[i])} is not the "
                        f"{mode} one ({float(np.broadcast_to(want_z, ps).reshape(-1)[i]):.3f})")
    return problems


def affine_bound(case: WeightCase) -> list:
    """affine_quantize_weights' promise about one weight (see affine_tensor_problems)."""
    mode, dtype = case.params.get("mode", "linear_symmetric"), case.stats.get("dtype")
    dtype = dtype if dtype in _QDTYPES else str(case.params.get("dtype", "int8")).lower()
    where = f"weight {case.name!r}"
    kind = case.stats.get("kind", "dense")
    if kind == "lut":
        return _affine_lut(case, mode, dtype, where)
    op = find_form(case.after, case.after_name, _AFFINE_OPS)
    if op is None:
        return [f"{where}: reported quantized, but no affine op produces it"]
    if op.op_type == "constexpr_sparse_blockwise_shift_scale":
        mask = _input(case, op, "data_mask")
        codes = oracle.scatter(_input(case, op, "nonzero_data"), mask)
        scale, offset = _input(case, op, "scale"), _input(case, op, "offset")
        return affine_tensor_problems(case.original, codes, scale, offset, dtype, mode, where, valid=mask != 0)
    if op.op_type == "constexpr_affine_dequantize":
        codes = _input(case, op, "quantized_data")
        axis = _input(case, op, "axis")
        rank = np.ndim(codes)
        raw = _input(case, op, "scale")
        layout = _axis_problems(case, np.ndim(raw), axis, where)
        if layout:
            return layout
        scale = _full_rank(raw, rank, axis)
        zp = _full_rank(_input(case, op, "zero_point"), rank, axis)
        return affine_tensor_problems(case.original, codes, scale, zp, dtype, mode, where)
    scale = _input(case, op, "scale")
    layout = _layout_problems(case, np.asarray(case.original), scale, where)
    if layout:
        return layout
    return _block_size_problems(case, np.asarray(case.original), scale, where) + affine_tensor_problems(
        case.original, _input(case, op, "data"), scale, _input(case, op, "offset"), dtype, mode, where)


def _expected_scale_shape(case, shape):
    """The parameter shape the granularity gives a dense weight of `shape` read by ops whose
    layout the contract knows: per_channel one entry per output channel; per_block that, times
    shape[input axis] / block_size blocks along the consumer's input axis (None: no rule
    applies, e.g. readers of unknown layout)."""
    gran = case.params.get("granularity", "per_channel")
    if case.params.get("config") is not None:
        return None  # per-weight parameters from a config: the generic promise only
    if gran == "per_tensor":
        return (1,) * len(shape)
    axes = consumer_axes(case.before, case.name, len(shape)) if case.before is not None else None
    if axes is None:
        return None
    out, inp = axes
    want = [1] * len(shape)
    want[out] = shape[out]
    if gran == "per_block":  # blocks of the largest size <= block_size dividing the input axis
        b = _largest_divisor(shape[inp], int(case.params.get("block_size") or 32))
        if not b:
            return None  # an empty axis: nothing to block
        want[inp] = shape[inp] // b
    return tuple(want)


def _layout_problems(case, w, scale, where) -> list:
    """per_channel / per_block parameters lie along the consumer's output / input axes."""
    if case.stats.get("kind", "dense") != "dense" or np.ndim(scale) != w.ndim:
        return []
    want = _expected_scale_shape(case, w.shape)
    if want is None or tuple(np.shape(scale)) == want:
        return []
    what = case.params.get("granularity")
    if what == "per_block":
        what += f" (block_size {case.params.get('block_size')}, along the input axis)"
    return [f"{where}: scale of shape {tuple(np.shape(scale))}, but {what} over a weight of shape "
            f"{w.shape} read as {_readers_text(case)} gives {want}"]


def _axis_problems(case, scale_ndim, axis, where) -> list:
    """iOS16 per-channel form: the axis is the consumer's output axis."""
    if scale_ndim != 1 or case.params.get("granularity") != "per_channel" or case.before is None \
            or case.params.get("config") is not None:
        return []
    rank = np.ndim(case.original)
    axes = consumer_axes(case.before, case.name, rank)
    if axes is None or int(axis) % max(rank, 1) == axes[0]:
        return []
    return [f"{where}: per-channel axis {int(axis)}, but read as {_readers_text(case)} its output channels "
            f"are on axis {axes[0]}"]


def _readers_text(case) -> str:
    from stages.contracts.graph import _consumers

    readers = _consumers(case.before).get(case.name, [])
    return ", ".join(sorted({r.op_type for r in readers})) or "nothing"


def _affine_lut(case, mode, dtype, where) -> list:
    """A palettized weight whose LUT was quantized: the promise holds on the LUT."""
    lut_after = find_form(case.after, case.after_name, _LUT_OPS)
    lut_before = find_form(case.before, case.name, _LUT_OPS)
    if lut_after is None or lut_before is None:
        return [f"{where}: reported a quantized LUT, but no LUT op produces it"]
    q = find_form(case.after, lut_after.inputs["lut"].name, ("constexpr_blockwise_shift_scale",))
    original = case.values_before.get(lut_before.inputs["lut"].name)
    if q is None or original is None:
        return [f"{where}: reported a quantized LUT, but its LUT is not quantized"]
    return affine_tensor_problems(original, _input(case, q, "data"), _input(case, q, "scale"),
                                  _input(case, q, "offset"), dtype, mode, f"{where} (LUT)")


def _block_size_problems(case, w, scale, where) -> list:
    """per_block: blocks of b along the input axis, b the largest size <= block_size dividing it."""
    p, st = case.params, case.stats
    if p.get("granularity") != "per_block" or "block_size" not in st or np.ndim(scale) != w.ndim:
        return []
    b = int(st["block_size"])
    axes = [a for a in range(w.ndim) if np.shape(scale)[a] and w.shape[a] // np.shape(scale)[a] == b
            and w.shape[a] > 1]
    if b == 1 or not axes:
        return []
    want = _largest_divisor(w.shape[axes[0]], int(p.get("block_size") or b))
    if want != b:
        return [f"{where}: blocks of {b} along an axis of {w.shape[axes[0]]}; block_size "
                f"{p.get('block_size')} gives {want}"]
    return []
