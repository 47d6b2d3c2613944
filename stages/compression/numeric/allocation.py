"""Choosing one configuration per weight: minimum total distortion under a size budget.

The problem is the multiple-choice knapsack (MCKP): item i (a weight) has options j
(a compressed form) with size s_ij (bytes) and distortion d_ij >= 0; pick exactly one
option per item so that sum s <= B and sum d is least.

Solved in three steps, every one of them pure numpy / Python:

1. **The Lagrangian dual bound.** For a multiplier l >= 0,
   g(l) = sum_i min_j (d_ij + l s_ij) - l B  is below every feasible total distortion
   (each item's min is below the chosen option's d + l s, and l (sum s - B) <= 0).
   g is concave and piecewise linear; its maximum equals the LP relaxation of the MCKP,
   which the greedy over each item's lower convex hull computes exactly: start every
   item at its smallest option, sort all hull segments by distortion saved per byte,
   take them while they fit, and a fraction of the first that does not. The maximising
   l* is that segment's slope (0 when every segment fits). That value is ``dual_bound``.
2. **A primal solution.** The same greedy without the fraction, then every later
   segment that still fits (in order, never skipping a segment of its own item), then
   single-item moves to any Pareto option that fits and lowers the distortion.
3. **Branch and bound** (optional, ``node_limit`` > 0): depth-first over the items,
   each branch bounded below by the LP relaxation of the items not yet fixed
   (prefix sums over their sorted hull segments, so a bound costs one binary search);
   it stops when the tree is exhausted (``proved`` = True: the solution is optimal)
   or after ``node_limit`` nodes (the best found so far is kept).

``gap`` = primal distortion - dual bound >= 0, reported always: the allocation is
within ``gap`` of the optimum. gap == 0 proves optimality by itself; ``proved`` says
branch and bound proved it (the LP bound can stay below an optimum of an integer
problem: a positive gap and ``proved`` together are normal).

Only options on an item's Pareto front (no other option of the item is both no larger
and no worse) are ever needed: replacing a dominated option by the one dominating it
keeps the solution feasible and no worse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from stages.compression.numeric.errors import CompressionError


class InfeasibleBudget(CompressionError):
    """The budget is below the smallest configuration; the message says what the minimum is."""


@dataclass(frozen=True)
class Allocation:
    choice: tuple          # per item, the index of its chosen option (into the item's own arrays)
    size: int              # total size of the chosen options
    distortion: float      # total distortion of the chosen options
    budget: int
    dual_bound: float      # max over l >= 0 of the Lagrangian dual g(l): below every feasible solution
    multiplier: float      # the l where g is largest (distortion saved per byte at the margin)
    gap: float             # distortion - dual_bound (>= 0)
    proved: bool           # branch and bound exhausted its tree: `choice` is optimal
    nodes: int             # branch-and-bound nodes visited
    min_size: int          # the smallest total size any allocation can have

    @property
    def relative_gap(self) -> float:
        return self.gap / self.distortion if self.distortion > 0 else 0.0

    @property
    def optimal(self) -> bool:
        return self.proved or self.gap <= 0.0


def pareto_front(sizes: np.ndarray, distortions: np.ndarray) -> np.ndarray:
    """Indices of the options no other option dominates, by increasing size (strictly
    decreasing distortion). Among equal options the first index stays."""
    order = np.lexsort((np.arange(len(sizes)), distortions, sizes))
    keep, best = [], math.inf
    for j in order:
        if distortions[j] < best:
            keep.append(int(j))
            best = float(distortions[j])
    return np.asarray(keep, np.int64)


def lower_hull(sizes: np.ndarray, distortions: np.ndarray, front: np.ndarray) -> np.ndarray:
    """The Pareto indices on the lower convex hull of (size, distortion), by increasing size:
    the options some multiplier l makes best for d + l s."""
    hull: list = []
    for j in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above (or on) the segment a -> j: never the minimum of d + l s alone
            cross = (sizes[b] - sizes[a]) * (distortions[j] - distortions[a]) \
                - (distortions[b] - distortions[a]) * (sizes[j] - sizes[a])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(int(j))
    return np.asarray(hull, np.int64)


@dataclass(frozen=True)
class _Segments:
    """The hull segments of a set of items sorted by slope (distortion saved per byte)."""
    item: np.ndarray   # owning item
    to: np.ndarray     # the option the segment moves to
    ds: np.ndarray     # bytes added
    dd: np.ndarray     # distortion removed
    cum_ds: np.ndarray
    cum_dd: np.ndarray

    @property
    def slope(self) -> np.ndarray:
        return self.dd / self.ds


def _segments(hulls, sizes, distortions, items) -> _Segments:
    item, to, ds, dd = [], [], [], []
    for i in items:
        h = hulls[i]
        for a, b in zip(h[:-1], h[1:]):
            item.append(i)
            to.append(b)
            ds.append(float(sizes[i][b] - sizes[i][a]))
            dd.append(float(distortions[i][a] - distortions[i][b]))
    item, to = np.asarray(item, np.int64), np.asarray(to, np.int64)
    ds, dd = np.asarray(ds, np.float64), np.asarray(dd, np.float64)
    # steepest first; ties by item then position, so an item's segments keep their order
    order = np.lexsort((np.arange(len(ds)), -dd / np.where(ds > 0, ds, 1.0))) if len(ds) else np.zeros(0, np.int64)
    item, to, ds, dd = item[order], to[order], ds[order], dd[order]
    return _Segments(item, to, ds, dd, np.cumsum(ds), np.cumsum(dd))


def _lp_saving(seg: _Segments, room: float) -> tuple:
    """(distortion the LP relaxation removes with `room` bytes, the marginal slope there)."""
    if len(seg.ds) == 0:
        return 0.0, 0.0
    if room <= 0:  # nothing fits: any l from the steepest slope up gives the same bound
        return 0.0, float(seg.dd[0] / seg.ds[0])
    k = int(np.searchsorted(seg.cum_ds, room, side="right"))  # segments that fit whole
    saved = float(seg.cum_dd[k - 1]) if k else 0.0
    if k == len(seg.ds):
        return saved, 0.0
    used = float(seg.cum_ds[k - 1]) if k else 0.0
    slope = float(seg.dd[k] / seg.ds[k])
    return saved + (room - used) * slope, slope


def dual_value(sizes, distortions, budget: float, multiplier: float) -> float:
    """g(l) = sum_i min_j (d_ij + l s_ij) - l B: a lower bound on every feasible allocation."""
    return float(sum(np.min(np.asarray(d, np.float64) + multiplier * np.asarray(s, np.float64))
                     for s, d in zip(sizes, distortions)) - multiplier * budget)


def _check(sizes, distortions):
    if len(sizes) != len(distortions):
        raise ValueError(f"{len(sizes)} size lists but {len(distortions)} distortion lists")
    out_s, out_d = [], []
    for i, (s, d) in enumerate(zip(sizes, distortions)):
        s, d = np.asarray(s), np.asarray(d, np.float64)
        if s.ndim != 1 or s.shape != d.shape or s.size == 0:
            raise ValueError(f"item {i}: sizes and distortions must be 1-D, non-empty and of equal length")
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise ValueError(f"item {i}: distortions must be finite and >= 0")
        if np.any(s < 0) or not np.all(np.equal(np.floor(s), s)):
            raise ValueError(f"item {i}: sizes must be non-negative integers")
        out_s.append(s.astype(np.int64))
        out_d.append(d)
    return out_s, out_d


def allocate(sizes: Sequence, distortions: Sequence, budget: int, node_limit: int = 100_000,
             names: Optional[Sequence[str]] = None) -> Allocation:
    """The allocation of least total distortion with total size <= budget (see the module
    docstring); raises InfeasibleBudget when even the smallest options exceed the budget."""
    sizes, distortions = _check(sizes, distortions)
    n = len(sizes)
    fronts = [pareto_front(s, d) for s, d in zip(sizes, distortions)]
    min_size = int(sum(int(s[f[0]]) for s, f in zip(sizes, fronts)))
    if budget < min_size:
        raise InfeasibleBudget(f"a budget of {budget} bytes is below the smallest configuration: "
                               f"{min_size} bytes (every weight in its smallest candidate form)")
    hulls = [lower_hull(s, d, f) for s, d, f in zip(sizes, distortions, fronts)]
    start = [int(h[0]) for h in hulls]
    seg = _segments(hulls, sizes, distortions, range(n))
    base_d = float(sum(distortions[i][start[i]] for i in range(n)))
    saved, multiplier = _lp_saving(seg, budget - min_size)
    dual_bound = base_d - saved

    choice = _greedy(seg, start, budget - min_size, sizes)
    choice = _improve(choice, sizes, distortions, fronts, budget)
    nodes, proved = 0, False
    if node_limit > 0:
        choice, nodes, proved = _branch_and_bound(choice, sizes, distortions, fronts, hulls, budget, node_limit)
    size = int(sum(sizes[i][j] for i, j in enumerate(choice)))
    distortion = float(sum(distortions[i][j] for i, j in enumerate(choice)))
    # the bound is an LP value computed in floating point: never report a negative gap
    gap = max(0.0, distortion - dual_bound)
    if gap <= 1e-12 * max(1.0, abs(distortion)):
        gap = 0.0
    return Allocation(tuple(int(j) for j in choice), size, distortion, int(budget), float(dual_bound),
                      float(multiplier), float(gap), proved, nodes, min_size)


def _greedy(seg: _Segments, start: list, room: float, sizes) -> list:
    """Whole segments in slope order while they fit; after the first that does not, every
    later one that fits and is its item's next segment."""
    choice = list(start)
    blocked = set()
    for i, to, ds in zip(seg.item, seg.to, seg.ds):
        if i in blocked:
            continue
        if ds <= room:
            choice[i] = int(to)
            room -= ds
        else:
            blocked.add(int(i))
    return choice


def _improve(choice, sizes, distortions, fronts, budget) -> list:
    """Single-item moves to any Pareto option that fits and lowers the total, best first."""
    choice = list(choice)
    used = sum(int(sizes[i][j]) for i, j in enumerate(choice))
    while True:
        best = None
        for i, front in enumerate(fronts):
            cur_s, cur_d = int(sizes[i][choice[i]]), float(distortions[i][choice[i]])
            for j in front:
                gain = cur_d - float(distortions[i][j])
                if gain > 0 and used - cur_s + int(sizes[i][j]) <= budget and (best is None or gain > best[0]):
                    best = (gain, i, int(j))
        if best is None:
            return choice
        _, i, j = best
        used += int(sizes[i][j]) - int(sizes[i][choice[i]])
        choice[i] = j


def _branch_and_bound(incumbent, sizes, distortions, fronts, hulls, budget, node_limit):
    """(best choice, nodes visited, whether the tree was exhausted)."""
    n = len(sizes)
    # items with the widest distortion range first: their choice moves the bound most
    spread = [float(distortions[i][f[0]] - distortions[i][f[-1]]) for i, f in enumerate(fronts)]
    order = sorted(range(n), key=lambda i: -spread[i])
    suffix = [_segments(hulls, sizes, distortions, order[k:]) for k in range(n + 1)]
    base_s = [sum(int(sizes[i][hulls[i][0]]) for i in order[k:]) for k in range(n + 1)]
    base_d = [sum(float(distortions[i][hulls[i][0]]) for i in order[k:]) for k in range(n + 1)]
    best = list(incumbent)
    best_d = float(sum(distortions[i][j] for i, j in enumerate(best)))
    current = list(incumbent)
    # least distortion first: the first leaf reached is a good incumbent
    options = [sorted((int(j) for j in f), key=lambda j, i=i: float(distortions[i][j])) for i, f in enumerate(fronts)]
    nodes = 0
    tol = 1e-12 * max(1.0, abs(best_d))

    def bound(k, room):
        if room < base_s[k]:
            return math.inf
        return base_d[k] - _lp_saving(suffix[k], room - base_s[k])[0]

    def visit(k, room, acc):
        nonlocal best, best_d, nodes
        nodes += 1
        if nodes > node_limit:
            return False
        if k == n:
            if acc < best_d - tol:
                best, best_d = list(current), acc
            return True
        i = order[k]
        for j in options[i]:
            s = int(sizes[i][j])
            if s > room:
                continue
            d = acc + float(distortions[i][j])
            if d + bound(k + 1, room - s) >= best_d - tol:
                continue
            current[i] = int(j)
            if not visit(k + 1, room - s, d):
                return False
        return True

    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, n + 100))
    try:
        exhausted = visit(0, budget, 0.0)
    finally:
        sys.setrecursionlimit(limit)
    return best, min(nodes, node_limit), exhausted


def frontier(sizes: Sequence, distortions: Sequence) -> list:
    """The rate-distortion curve of the LP relaxation's vertices: (total size, total
    distortion) from every item at its smallest option through every hull segment in slope
    order to every item at its largest hull option. Each point is an allocation (one
    option per item) optimal for its own budget among the allocations on the hulls."""
    sizes, distortions = _check(sizes, distortions)
    fronts = [pareto_front(s, d) for s, d in zip(sizes, distortions)]
    hulls = [lower_hull(s, d, f) for s, d, f in zip(sizes, distortions, fronts)]
    seg = _segments(hulls, sizes, distortions, range(len(sizes)))
    s0 = float(sum(int(s[h[0]]) for s, h in zip(sizes, hulls)))
    d0 = float(sum(float(d[h[0]]) for d, h in zip(distortions, hulls)))
    return [(s0, d0)] + [(s0 + float(a), d0 - float(b)) for a, b in zip(seg.cum_ds, seg.cum_dd)]
