"""sparsify_weights' promise about each weight: exactly the promised zeros, the rest untouched."""
from __future__ import annotations

import math

import numpy as np

from stages.contracts.graph import consumer_axes, find_form
from stages.contracts.weights import WeightCase, _input


def sparsify_bound(case: WeightCase) -> list:
    """sparsify_weights' promise about one weight: exactly the promised zeros (|w| <= threshold;
    floor(size * target_percentile) smallest magnitudes; n of every m), every other value
    bit-identical."""
    where = f"weight {case.name!r}"
    w = np.asarray(case.original)
    got = np.asarray(case.decoded)
    if got.shape != w.shape or got.dtype != w.dtype:
        return [f"{where}: decoded {got.dtype}{list(got.shape)} instead of {w.dtype}{list(w.shape)}"]
    zero = got == 0
    kept_changed = ~zero & (got.view(np.uint8).reshape(w.shape + (-1,)) != w.view(np.uint8).reshape(w.shape + (-1,))).any(-1)
    problems = []
    if kept_changed.any():
        problems.append(f"{where}: {int(kept_changed.sum())} kept value(s) changed")
    if np.any((w == 0) & ~zero):
        problems.append(f"{where}: a zero of the weight is not zero after")
    op = find_form(case.after, case.after_name, ("constexpr_sparse_to_dense",)) if case.after is not None else None
    stored = None if op is None else _input(case, op, "nonzero_data")
    if stored is not None and np.any(np.asarray(stored) == 0):
        problems.append(f"{where}: {int(np.sum(np.asarray(stored) == 0))} zero(s) stored as nonzero data "
                        "(zeros are never stored)")
    mag = np.abs(w.astype(np.float64))
    mode = str(case.stats.get("mode", case.params.get("mode")))
    p = case.params
    if p.get("config") is not None:
        return problems  # per-weight parameters from a config: the generic promise only
    if mode.startswith("n_m"):
        axes = consumer_axes(case.before, case.name, w.ndim) if case.before is not None else None
        return problems + _nm_problems(w, zero, p.get("n_m_ratio"), where, axes)
    if mode == "percentile_based":
        frac = p.get("target_sparsity") if p.get("target_sparsity") is not None else p.get("target_percentile")
        count = int(math.floor(w.size * float(frac)))
        want = max(count, int(np.count_nonzero(w == 0)))
        if int(zero.sum()) != want:
            problems.append(f"{where}: {int(zero.sum())} zeros, promised floor({w.size} * {frac}) = {count} "
                            f"smallest magnitudes ({want} with the weight's own zeros)")
        if zero.any() and (~zero).any() and mag[zero].max() > mag[~zero].min():
            problems.append(f"{where}: a zeroed magnitude {mag[zero].max():.6g} exceeds a kept one "
                            f"{mag[~zero].min():.6g}")
        return problems
    # |w| <= threshold compared in the weight's dtype (the threshold rounded to it), as the
    # seed's numpy comparison of a weight array with a Python float does
    t = float(p.get("threshold", 1e-3))
    limit = np.asarray(t).astype(w.dtype)
    want = (np.abs(w) <= limit) | (w == 0)
    wrong = zero != want
    if wrong.any():
        i = np.flatnonzero(wrong)[0]
        problems.append(f"{where}: {int(wrong.sum())} value(s) zeroed or kept against |w| <= {t} "
                        f"({limit!r} in {w.dtype}), e.g. {w.reshape(-1)[i]!r} -> {got.reshape(-1)[i]!r}")
    return problems


def _nm_problems(w, zero, nm, where, axes=None) -> list:
    """n:m: along the consumer's input axis (`axes`: (output, input) from the contract's own
    layout table; None when the readers do not say), every run of m consecutive elements has
    exactly its n smallest magnitudes zeroed (more only where the weight had zeros of its
    own; ties in any order), a tail of t < m elements its max(0, n - (m - t)) smallest. With
    no known axis, some axis must satisfy this."""
    if nm is None:
        return []
    n, m = int(nm[0]), int(nm[1])
    if axes is not None:
        why = _nm_axis_problem(w, zero, n, m, axes[1])
        return [] if why is None else [f"{where}: along axis {axes[1]} (its consumer's input axis) {why}"]
    whys = [_nm_axis_problem(w, zero, n, m, axis) for axis in range(w.ndim)]
    if any(why is None for why in whys):
        return []
    return [f"{where}: no axis has exactly the {n} smallest magnitudes of every run of {m} zeroed"]


def _nm_axis_problem(w, zero, n, m, axis):
    """Why the zeros of `zero` are not n:m along `axis` (None when they are)."""
    length = w.shape[axis]
    if length == 0:
        return None
    mag = np.moveaxis(np.abs(w.astype(np.float64)), axis, -1)
    z = np.moveaxis(zero, axis, -1)
    own = np.moveaxis(w == 0, axis, -1)
    full = (length // m) * m
    parts = [(mag[..., :full].reshape(-1, m), z[..., :full].reshape(-1, m), own[..., :full].reshape(-1, m), n)]
    if full < length:  # the tail counts as padded with zeros (the smallest), which take their share
        t = length - full
        parts.append((mag[..., full:].reshape(-1, t), z[..., full:].reshape(-1, t),
                      own[..., full:].reshape(-1, t), max(0, n - (m - t))))
    for mg, zz, ow, want in parts:
        if mg.size == 0:
            continue
        count, need = zz.sum(axis=1), np.maximum(want, ow.sum(axis=1))
        bad = count != need
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return (f"{int(bad.sum())} run(s) of {mg.shape[1]} have the wrong number of zeros, e.g. "
                    f"{int(count[i])} instead of {int(need[i])} ({n}:{m})")
        hi_zero = np.where(zz, mg, -np.inf).max(axis=1)
        lo_kept = np.where(zz, np.inf, mg).min(axis=1)
        bad = hi_zero > lo_kept
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return (f"{int(bad.sum())} run(s) zero a magnitude {hi_zero[i]:.6g} above a kept one "
                    f"{lo_kept[i]:.6g} ({n}:{m})")
    return None
