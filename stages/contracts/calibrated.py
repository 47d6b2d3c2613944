"""The contracts of the calibrated stages (lossy bounds, checked by verify="each" on each weight).

They promise nothing about how close each element stays to its original value: GPTQ moves
elements off their nearest grid point on purpose, to cancel the output error of the others,
and weighted k-means trades the error of low-importance values for that of important ones.
What they do promise, checked here on the decoded weights (ir.oracle) and the emitted consts:

- gptq_quantize_weights: codes inside the mode's integer range; the grid (each block's scale
  and zero point) exactly the data-free one of the mode (as affine_quantize_weights: the
  scale (max - min) / (hi - lo) of the block up to one ulp, the zero point of the mode), or
  with clip_search each scale that one times a ratio in [0.5, 1], the zero point unchanged;
  the reported error figures are the actual ones.
- gptq_palettize_weights / weighted_palettize_weights: LUTs finite and sorted, every entry
  within [min, max] of the values its LUT serves (a weighted mean, or a grid point inside the
  range, never an extrapolation); the reported figures are the actual ones.
- weighted_palettize_weights also: every value reads its nearest LUT entry (it assigns, it
  does not compensate).

A conv weight is checked in its own shape [C_out, C_in/g, k...] (GPTQ works on it flattened,
the emitted codes, grid and LUT are the weight's): a per-block grid is per output channel and
block of input channels, the whole kernel inside each block, as affine_quantize_weights has it.
"""
from __future__ import annotations

import numpy as np

from stages.contracts.affine import _scale_problems, code_range
from stages.contracts.graph import find_form
from stages.contracts.weights import figure_problems

_AFFINE_OPS = ("constexpr_blockwise_shift_scale",)
_LUT_OPS = ("constexpr_lut_to_dense",)


def _const(case, op, slot):
    v = op.inputs.get(slot)
    return None if v is None else case.values_after.get(v.name)


def gptq_affine_bound(case) -> list:
    where = f"weight {case.name!r}"
    op = find_form(case.after, case.after_name, _AFFINE_OPS)
    if op is None:
        return [f"{where}: reported quantized, but no constexpr_blockwise_shift_scale produces it"]
    mode = case.params.get("mode", "linear_symmetric")
    dtype = case.stats.get("dtype") or str(case.params.get("dtype", "int8")).lower()
    codes = np.asarray(_const(case, op, "data")).astype(np.int64)
    scale = np.asarray(_const(case, op, "scale"))
    offset = _const(case, op, "offset")
    zp = np.zeros(scale.shape, np.int64) if offset is None else np.asarray(offset).astype(np.int64)
    lo, hi = code_range(dtype, mode)
    problems = []
    bad = (codes < lo) | (codes > hi)
    if bad.any():
        problems.append(f"{where}: {int(bad.sum())} code(s) outside [{lo}, {hi}] ({dtype} {mode})")
    w64 = np.asarray(case.original, np.float64)
    if case.params.get("clip_search"):
        problems += _clipped_grid_problems(w64, scale, zp, lo, hi, mode, where)
    else:
        problems += _scale_problems(w64, scale, zp, lo, hi, mode, dtype, where)
    return problems + figure_problems(case)


def _block_range(w64, shape):
    blocked = []
    for d, p in zip(w64.shape, shape):
        blocked += [p, d // p]
    b = w64.reshape(blocked)
    axes = tuple(range(1, b.ndim, 2))
    return np.minimum(b.min(axis=axes), 0.0), np.maximum(b.max(axis=axes), 0.0)


def _clipped_grid_problems(w64, scale, zp, lo, hi, mode, where) -> list:
    """clip_search: each block's scale is the data-free one times a ratio in [0.5, 1] (rounded
    to the scale's dtype), its zero point the data-free one."""
    if scale.ndim != w64.ndim or any(d % p for d, p in zip(w64.shape, scale.shape)):
        return [f"{where}: scale of shape {scale.shape} does not divide the weight's shape {w64.shape}"]
    a, b = _block_range(w64, scale.shape)
    if mode == "linear_symmetric":
        r = np.maximum(-a, b)
        a, b = -r, r
        want_z = np.full(scale.shape, 0 if lo < 0 else (hi - lo) // 2)
        z_ok = zp == want_z
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            want_z = np.clip((lo * b - hi * a) / np.where(b > a, b - a, 1.0), lo, hi)
        z_ok = np.abs(zp - want_z) <= 0.5 + 1e-9
    exact = (b - a) / (hi - lo)
    s = scale.astype(np.float64)
    slack = np.spacing(np.abs(s).astype(scale.dtype)).astype(np.float64) * 2
    ok = ((s >= 0.5 * exact - slack) & (s <= exact + slack)) | ((exact == 0) & (s == 1.0))
    problems = []
    if not ok.all():
        problems.append(f"{where}: {int((~ok).sum())} block scale(s) outside [0.5, 1] x the data-free scale")
    if not np.all(z_ok | (exact == 0)):
        problems.append(f"{where}: zero points differ from the data-free ones ({mode})")
    return problems


def _lut_problems(case, where, nearest: bool) -> list:
    op = find_form(case.after, case.after_name, _LUT_OPS)
    if op is None:
        return [f"{where}: reported palettized, but no constexpr_lut_to_dense produces it"]
    lut = np.asarray(_const(case, op, "lut"), np.float64)
    idx = np.asarray(_const(case, op, "indices")).astype(np.int64)
    w = np.asarray(case.original, np.float64)
    if lut.ndim != w.ndim + 2 or lut.shape[-1] != 1:
        return [f"{where}: LUT of shape {lut.shape} is not a scalar per-block LUT for a {w.ndim}-D weight"]
    blocks = lut.shape[:-2]
    if any(d % b for d, b in zip(w.shape, blocks)):
        return [f"{where}: LUT blocks {blocks} do not divide the weight's shape {w.shape}"]
    problems = []
    entries = lut.shape[-2]
    if not np.all(np.isfinite(lut)):
        problems.append(f"{where}: LUT has NaN or Inf entries")
    if idx.min(initial=0) < 0 or idx.max(initial=0) >= entries:
        problems.append(f"{where}: indices outside [0, {entries})")
        return problems
    reps = [d // b for d, b in zip(w.shape, blocks)]
    block_of = np.zeros(w.shape, np.int64)
    for axis, (b, r) in enumerate(zip(blocks, reps)):
        ids = (np.arange(w.shape[axis]) // r).reshape([-1 if a == axis else 1 for a in range(w.ndim)])
        block_of = block_of * b + ids
    flat_lut = lut.reshape(-1, entries)
    for g in range(flat_lut.shape[0]):
        row = flat_lut[g]
        vals = w[block_of == g]
        if np.any(np.diff(row) < 0):
            problems.append(f"{where}: LUT {g} is not sorted")
        if vals.size and (row.min() < vals.min() or row.max() > vals.max()):
            problems.append(f"{where}: LUT {g} has entries outside [{vals.min()!r}, {vals.max()!r}] of its values")
        if nearest and vals.size:
            got = np.abs(vals - row[idx[block_of == g]])
            best = np.min(np.abs(vals[:, None] - row[None, :]), axis=1)
            far = got > best * (1 + 1e-12) + 1e-300
            if far.any():
                problems.append(f"{where}: {int(far.sum())} value(s) in LUT {g} do not read their nearest entry")
    return problems + figure_problems(case)


def gptq_lut_bound(case) -> list:
    return _lut_problems(case, f"weight {case.name!r}", nearest=False)


def weighted_lut_bound(case) -> list:
    return _lut_problems(case, f"weight {case.name!r}", nearest=True)
