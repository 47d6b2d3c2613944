"""palettize_weights' promise about each weight: nearest entries, sorted LUTs in range,
the mode's LUT (uniform, unique, k-means optimum), per-channel scales, group sizes."""
from __future__ import annotations

import numpy as np

from ir import oracle
from stages.contracts.blocks import _blocked, _largest_divisor, _ulp
from stages.contracts.graph import _LUT_OPS, _consumers, consumer_axes, find_form
from stages.contracts.weights import WeightCase, _input


def _group_values(values, valid, lut_blocks) -> list:
    """Per LUT block: the valid values it serves (flat, float64)."""
    b = _blocked(np.asarray(values, np.float64), lut_blocks)
    vb = _blocked(np.asarray(valid, bool), lut_blocks)
    rank = len(lut_blocks)
    order = tuple(range(0, 2 * rank, 2)) + tuple(range(1, 2 * rank, 2))
    flat = np.transpose(b, order).reshape(int(np.prod(lut_blocks)), -1)
    vflat = np.transpose(vb, order).reshape(flat.shape)
    return [row[m] for row, m in zip(flat, vflat)]


def palettize_bound(case: WeightCase) -> list:
    """palettize_weights' promise about one weight: every value (per-channel-scaled where
    enable_per_channel_scale) reads its nearest LUT entry; kmeans / uniform / unique LUTs are
    sorted and within [min, max] of the values they serve; uniform LUTs run evenly from min
    to max; unique LUTs reproduce every value; k-means entries are the means of the values
    that read them (Lloyd's optimality condition), and the reported error is the actual one."""
    where = f"weight {case.name!r}"
    op = find_form(case.after, case.after_name, _LUT_OPS)
    if op is None:
        return [f"{where}: reported palettized, but no LUT op produces it"]
    mode = case.params.get("mode", "kmeans")
    lut = np.asarray(_input(case, op, "lut"))
    w = np.asarray(case.original)
    if op.op_type == "constexpr_lut_to_sparse":
        mask = _input(case, op, "indices_mask") != 0
        idx = oracle.scatter(_input(case, op, "indices_nonzero_data"), mask)
    else:
        mask, idx = np.ones(w.shape, bool), np.asarray(_input(case, op, "indices"))
    if lut.ndim == 1:  # iOS16 flat form: one LUT for the whole tensor
        lut, idx = lut.reshape([1] * w.ndim + [-1, 1]), idx.reshape(w.shape)
    target = w.astype(np.float64)
    pcs_op = None
    consumers = _consumers(case.after).get(op.outputs[0].name, [])
    if len(consumers) == 1 and consumers[0].op_type == "constexpr_blockwise_shift_scale":
        pcs_op = consumers[0]
        pcs = oracle.per_element(_input(case, pcs_op, "scale"), w.shape, None)
        target = (w.astype(np.float64) / pcs).astype(w.dtype).astype(np.float64)
        problems_pcs = _pcs_problems(w, _input(case, pcs_op, "scale"), where)
    else:
        problems_pcs = []
    if lut.shape[-1] != 1:
        if op.op_type != "constexpr_lut_to_dense":
            return problems_pcs + _vector_problems(case, lut, where)
        return problems_pcs + _vector_axis_problems(case, _input(case, op, "vector_axis"), where) + \
            _lut_layout_problems(case, lut.shape[:-2], where) + \
            _group_size_problems(case, lut.shape[:-2], where) + _vector_nearest_problems(
            target, idx, lut, _input(case, op, "vector_axis"), w.dtype, where)
    blocks = lut.shape[:-2]
    problems = list(problems_pcs) + _lut_layout_problems(case, blocks, where) + \
        _group_size_problems(case, blocks, where)
    entries = lut[..., 0].astype(np.float64)  # [blocks..., k]
    got = oracle.lut_lookup(idx, lut).astype(np.float64)
    dist = np.abs(target - got)
    nearest = _nearest_distance(target, entries.reshape(-1, entries.shape[-1]), _block_ids(w.shape, blocks))
    slack = _ulp(target, w.dtype)
    far = mask & (dist > nearest + slack)
    if far.any():
        i = np.flatnonzero(far)[0]
        problems.append(f"{where}: {int(far.sum())} value(s) do not read their nearest LUT entry, e.g. "
                        f"{target.reshape(-1)[i]!r} reads {got.reshape(-1)[i]!r}, nearest is "
                        f"{nearest.reshape(-1)[i]:.6g} away")
    if mode == "custom":
        return problems
    groups = _group_values(target, mask, blocks)
    luts = entries.reshape(-1, entries.shape[-1])
    for g, (vals, row) in enumerate(zip(groups, luts)):
        if vals.size == 0:
            continue
        problems += _lut_row_problems(vals, row, mode, w.dtype, f"{where} LUT {g}",
                                      exact_kmeans=case.params.get("kmeans_method") != "fast")
        if len(problems) > 8:
            break
    if mode == "kmeans" and pcs_op is None:
        problems += _reported_error(case, w, where)
    return problems


def _group_size_problems(case, blocks, where) -> list:
    """per_grouped_channel: each LUT serves g channels, g the largest size <= group_size that
    divides the channels and is a multiple of cluster_dim (the stage's documented rule)."""
    p, st = case.params, case.stats
    if p.get("granularity") != "per_grouped_channel" or "group_size" not in st:
        return []
    g, groups = int(st["group_size"]), int(np.prod(blocks))
    want = _largest_divisor(g * groups, int(p.get("group_size") or g), int(p.get("cluster_dim") or 1))
    if want != g:
        return [f"{where}: groups of {g} of its {g * groups} channels; group_size {p.get('group_size')} gives {want}"]
    return []


def _block_ids(shape, blocks) -> np.ndarray:
    """The flat index of the LUT block serving each element (row-major over the blocks)."""
    index = oracle.param_index(shape, blocks)
    flat = np.zeros(shape, np.int64)
    for coord, n in zip(index, blocks):
        flat = flat * n + coord
    return flat


def _nearest_distance(values, luts, block_id) -> np.ndarray:
    """For every value, its distance to the nearest entry of its block's LUT (any order):
    the block's entries sorted, the two neighbours of the value's place among them."""
    flat, ids = values.reshape(-1), block_id.reshape(-1)
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(luts.shape[0] + 1))
    out = np.empty(flat.size)
    for g, row in enumerate(luts):
        where = order[bounds[g]:bounds[g + 1]]
        srt, v = np.sort(row), flat[where]
        hi = np.clip(np.searchsorted(srt, v), 0, srt.size - 1)
        lo = np.clip(hi - 1, 0, srt.size - 1)
        out[where] = np.minimum(np.abs(v - srt[lo]), np.abs(v - srt[hi]))
    return out.reshape(values.shape)


def _lut_row_problems(vals, row, mode, wdt, where, exact_kmeans=False) -> list:
    problems = []
    lo, hi = vals.min(), vals.max()
    if np.any(np.diff(row) < 0):
        problems.append(f"{where}: entries not sorted ({mode})")
    tol = _ulp(np.array([lo, hi]), wdt).max()
    if row.min() < lo - tol or row.max() > hi + tol:
        problems.append(f"{where}: entries [{row.min():.6g}, {row.max():.6g}] leave the values' range "
                        f"[{lo:.6g}, {hi:.6g}]")
    if mode == "uniform":
        k = row.size
        want = (lo + (hi - lo) * np.arange(k) / (k - 1)).astype(wdt).astype(np.float64)
        off = np.abs(row - want) > _ulp(want, wdt) * 1.0001
        if off.any():
            j = int(np.flatnonzero(off)[0])
            problems.append(f"{where}: uniform entry {j} is {row[j]!r}, not {want[j]!r} (min + (max - min) * "
                            f"{j} / {k - 1})")
    elif mode == "unique":
        missing = np.setdiff1d(vals, row)
        if missing.size:
            problems.append(f"{where}: {missing.size} distinct value(s) missing from a unique LUT")
    elif mode == "kmeans":
        distinct = np.unique(vals)
        missing = np.setdiff1d(distinct, row) if distinct.size <= row.size else distinct[:0]
        if missing.size:  # as many entries as values: the optimum is every value exactly
            problems.append(f"{where}: {distinct.size} distinct value(s) and {row.size} entries, but "
                            f"{missing.size} value(s) are no entry, e.g. {missing[0]!r}")
        problems += _lloyd_problems(vals, row, wdt, where)
        if exact_kmeans:
            problems += _optimum_problems(vals, row, wdt, where)
    return problems


_DP_DISTINCT = 256  # groups with at most this many distinct values get the optimum computed here


def _optimum_problems(vals, row, wdt, where) -> list:
    """1-D k-means is solvable exactly: a naive O(k n^2) dynamic program over the group's
    distinct values (n <= _DP_DISTINCT) gives the least sum of squared errors any LUT of k
    entries can reach; the stage's LUT (entries rounded to the weight's dtype) must reach it."""
    v, c = np.unique(vals, return_counts=True)
    k = row.size
    if v.size <= k or v.size > _DP_DISTINCT:
        return []
    s1 = np.concatenate(([0.0], np.cumsum(c * v)))
    s2 = np.concatenate(([0.0], np.cumsum(c * v * v)))
    n0 = np.concatenate(([0.0], np.cumsum(c)))
    i, j = np.meshgrid(np.arange(v.size + 1), np.arange(v.size + 1), indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (s2[j] - s2[i]) - (s1[j] - s1[i]) ** 2 / (n0[j] - n0[i])
    cost = np.where(j > i, np.maximum(cost, 0.0), np.inf)  # cost[i, j]: one entry for v[i:j]
    best = cost[0]
    for _ in range(k - 1):
        best = np.min(best[:, None] + cost, axis=0)
    optimum = float(best[-1])
    order = np.sort(row)
    got = order[np.clip(np.searchsorted((order[:-1] + order[1:]) / 2, v, side="right"), 0, k - 1)]
    actual = float(np.sum(c * (v - got) ** 2))
    slack = float(np.sum(c * _ulp(got, wdt) ** 2)) + 1e-9 * optimum + 1e-300
    if actual > optimum + slack:
        return [f"{where}: k-means LUT error {actual:.9g} is above the optimum {optimum:.9g} of "
                f"{k} entries over its {v.size} distinct values"]
    return []


def _lloyd_problems(vals, row, wdt, where) -> list:
    """Each entry that values read is the mean of those values (rounded to the weight's dtype)."""
    order = np.argsort(row, kind="stable")
    srt = row[order]
    mids = (srt[:-1] + srt[1:]) / 2
    pos = np.searchsorted(mids, vals, side="right")
    sums = np.bincount(pos, weights=vals, minlength=row.size)
    counts = np.bincount(pos, minlength=row.size)
    used = counts > 0
    means = np.where(used, sums / np.maximum(counts, 1), srt)
    spread = max(float(vals.max() - vals.min()), 1e-300)
    room = _ulp(means, wdt) * 2 + spread * 1e-6
    off = used & (np.abs(srt - means) > room)
    if off.any():
        j = int(np.flatnonzero(off)[0])
        return [f"{where}: k-means entry {srt[j]!r} is not the mean {means[j]!r} of the {int(counts[j])} "
                f"value(s) that read it"]
    return []


def _reported_error(case, w, where) -> list:
    """The stage's reported error is what the decoded weight has (so the optimum it reports holds)."""
    mse = case.stats.get("mse")
    if mse is None:
        return []
    err = np.asarray(case.decoded, np.float64) - w.astype(np.float64)
    actual = float(np.mean(err * err)) if err.size else 0.0
    if actual > float(mse) * (1 + 1e-4) + 1e-30:
        return [f"{where}: decoded error (mse {actual:.6g}) is worse than the reported {float(mse):.6g}"]
    return []


def _pcs_problems(w, pcs, where) -> list:
    """enable_per_channel_scale: each output channel's scale is its max |w| (1 for a zero channel)."""
    pcs = np.asarray(pcs)
    axes = tuple(a for a in range(w.ndim) if pcs.shape[a] == 1)
    want = np.max(np.abs(w.astype(np.float64)), axis=axes, keepdims=True)
    want = np.where(want == 0, 1.0, want).astype(pcs.dtype)
    if want.shape != pcs.shape or not np.array_equal(want, pcs):
        return [f"{where}: per-channel scales are not each channel's max |w|"]
    return []


def _vector_problems(case, lut, where) -> list:
    """Vector LUTs: every decoded element is an entry component of its LUT block (no nearest
    check: vector k-means is Lloyd with k-means++ seeding, not an optimum)."""
    flat = np.asarray(lut, np.float64).reshape(-1)
    got = np.asarray(case.decoded, np.float64).reshape(-1)
    stray = ~np.isin(got, flat)
    return [f"{where}: {int(stray.sum())} decoded value(s) are no LUT entry"] if stray.any() else []


def _vectors(values, vector_axis, vs) -> np.ndarray:
    """values with `vs` consecutive elements along vector_axis as one vector: shape
    [... shape[axis] / vs ..., vs] (the layout of the indices, plus the vector)."""
    ax = int(vector_axis) % values.ndim
    moved = np.moveaxis(values, ax, 0)
    v = moved.reshape((moved.shape[0] // vs, vs) + moved.shape[1:])
    return np.moveaxis(np.moveaxis(v, 1, -1), 0, ax)


def _vector_nearest_problems(target, idx, lut, vector_axis, wdt, where) -> list:
    """Vector LUTs (cluster_dim > 1): the vectors are cluster_dim consecutive elements along
    vector_axis, and each reads the entry of its block's LUT nearest to it (Lloyd's assignment
    condition, which k-means ends on), up to the rounding of the entries to the weight's dtype."""
    vs = lut.shape[-1]
    idx = np.asarray(idx).astype(np.int64)
    if vector_axis is None or target.shape[int(vector_axis) % target.ndim] % vs:
        return [f"{where}: a LUT of vectors of {vs} without a vector axis its length divides"]
    vecs = _vectors(target, vector_axis, vs)  # idx.shape + (vs,)
    if vecs.shape[:-1] != idx.shape:
        return [f"{where}: indices of shape {idx.shape} for vectors of shape {vecs.shape[:-1]}"]
    blocks = lut.shape[:-2]
    ids = _block_ids(idx.shape, blocks).reshape(-1)
    flat_v, flat_i = vecs.reshape(-1, vs), idx.reshape(-1)
    luts = np.asarray(lut, np.float64).reshape(-1, lut.shape[-2], vs)
    spread = float(np.max(np.abs(flat_v), initial=0.0)) + float(np.max(np.abs(luts), initial=0.0))
    slack = vs * (4 * float(np.finfo(wdt).eps) * spread ** 2) + 1e-300
    bad, example = 0, None
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(luts.shape[0] + 1))
    for g in range(luts.shape[0]):
        rows = order[bounds[g]:bounds[g + 1]]
        for r0 in range(0, rows.size, 1 << 15):
            r = rows[r0:r0 + (1 << 15)]
            d2 = ((flat_v[r, None, :] - luts[g][None]) ** 2).sum(-1)  # [n, k]
            got = d2[np.arange(r.size), flat_i[r]]
            off = got > d2.min(axis=1) + slack
            if off.any():
                bad += int(off.sum())
                if example is None:
                    j = int(np.flatnonzero(off)[0])
                    example = (flat_v[r[j]], luts[g][flat_i[r[j]]], luts[g][int(np.argmin(d2[j]))])
    if bad:
        v, got, best = example
        return [f"{where}: {bad} vector(s) of {vs} along axis {int(vector_axis)} do not read their nearest "
                f"LUT entry, e.g. {v.tolist()} reads {got.tolist()}, nearest is {best.tolist()}"]
    return []


def _vector_axis_problems(case, vector_axis, where) -> list:
    """Vectors run along the channel axis: channel_axis, else the consumer's output axis."""
    if vector_axis is None or case.params.get("config") is not None:
        return []
    rank = np.ndim(case.original)
    want = case.params.get("channel_axis")
    if want is None:
        axes = consumer_axes(case.before, case.name, rank) if case.before is not None else None
        want = None if axes is None else axes[0]
    if want is None or int(vector_axis) % rank == int(want) % rank:
        return []
    return [f"{where}: vectors along axis {int(vector_axis)}, but its channel axis is {int(want) % rank}"]


def _channel_axis(case, rank):
    """channel_axis when given, else the consumer's output axis (None: the readers do not say)."""
    want = case.params.get("channel_axis")
    if want is not None:
        return int(want) % rank if rank else None
    axes = consumer_axes(case.before, case.name, rank) if case.before is not None else None
    return None if axes is None else axes[0]


def _lut_layout_problems(case, blocks, where) -> list:
    """One LUT for the tensor (per_tensor), or one per group of channels on the channel axis
    (per_grouped_channel): the LUT blocks split no other axis."""
    gran, rank = case.params.get("granularity", "per_tensor"), len(blocks)
    if case.params.get("config") is not None or rank != np.ndim(case.original) or rank == 0:
        return []
    if gran == "per_tensor":
        axis = None
    elif gran == "per_grouped_channel":
        axis = _channel_axis(case, rank)
        if axis is None:
            return []
    else:
        return []
    split = [a for a, n in enumerate(blocks) if n != 1 and a != axis]
    if split:
        return [f"{where}: LUTs of shape {tuple(blocks)} split axis {split[0]}; {gran} splits "
                f"{'nothing' if axis is None else f'only the channel axis {axis}'}"]
    return []
