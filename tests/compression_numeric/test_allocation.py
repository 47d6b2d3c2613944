"""The mixed-precision allocator (numeric/allocation.py) against exhaustive search."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from stages.compression.numeric.allocation import (InfeasibleBudget, allocate, dual_value, frontier,
                                                   lower_hull, pareto_front)


def brute_force(sizes, distortions, budget):
    """(least total distortion, its size) over every combination; None when none fits."""
    best = None
    for combo in itertools.product(*(range(len(s)) for s in sizes)):
        size = sum(sizes[i][j] for i, j in enumerate(combo))
        if size > budget:
            continue
        d = sum(distortions[i][j] for i, j in enumerate(combo))
        if best is None or d < best[0]:
            best = (d, size)
    return best


@st.composite
def instances(draw):
    n = draw(st.integers(1, 5))
    sizes, distortions = [], []
    for _ in range(n):
        k = draw(st.integers(1, 5))
        sizes.append(draw(st.lists(st.integers(0, 60), min_size=k, max_size=k)))
        distortions.append(draw(st.lists(st.integers(0, 1000).map(lambda x: x / 8), min_size=k, max_size=k)))
    lo = sum(min(s) for s in sizes)
    hi = sum(max(s) for s in sizes)
    budget = draw(st.integers(lo, hi + 5))
    return sizes, distortions, budget


@settings(max_examples=300, deadline=None)
@given(instances(), st.sampled_from([0, 100_000]))
def test_bound_below_optimum_below_primal(case, node_limit):
    sizes, distortions, budget = case
    a = allocate(sizes, distortions, budget, node_limit=node_limit)
    opt, _ = brute_force(sizes, distortions, budget)
    assert a.size <= budget
    assert a.size == sum(sizes[i][j] for i, j in enumerate(a.choice))
    assert a.distortion == pytest.approx(sum(distortions[i][j] for i, j in enumerate(a.choice)))
    assert a.gap >= 0
    assert a.dual_bound <= opt + 1e-9
    assert a.distortion >= opt - 1e-9
    assert a.distortion - a.dual_bound == pytest.approx(a.gap, abs=1e-9)
    if a.gap == 0 or a.proved:  # a zero gap (or an exhausted tree) is a proof of optimality
        assert a.distortion == pytest.approx(opt, abs=1e-9)
    if node_limit:  # small trees are always exhausted: branch and bound finds the optimum
        assert a.proved
        assert a.distortion == pytest.approx(opt, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(instances(), st.floats(0, 50))
def test_dual_bound_is_the_lagrangian_maximum(case, other):
    sizes, distortions, budget = case
    a = allocate(sizes, distortions, budget, node_limit=0)
    # g at the reported multiplier is the reported bound, and no multiplier gives more
    assert dual_value(sizes, distortions, budget, a.multiplier) == pytest.approx(a.dual_bound, abs=1e-7)
    assert dual_value(sizes, distortions, budget, other) <= a.dual_bound + 1e-7


def test_gap_zero_when_the_greedy_is_exact_by_hand():
    # two weights; budget 30 fits item 0's option 2 (size 20, d 1) and item 1's option 1 (10, 2)
    sizes = [[5, 10, 20], [5, 10]]
    distortions = [[100.0, 10.0, 1.0], [50.0, 2.0]]
    a = allocate(sizes, distortions, 30)
    assert a.choice == (2, 1) and a.size == 30 and a.distortion == 3.0
    assert a.gap == 0.0 and a.optimal and a.multiplier == 0.0


def test_positive_gap_by_hand():
    # one item of two options and a budget between them: the LP takes half of the segment
    # (bound 100 - 0.5 * 99 = 50.5) while the only integer solution is the small option (100)
    a = allocate([[0, 10]], [[100.0, 1.0]], 5, node_limit=0)
    assert a.choice == (0,)
    assert a.dual_bound == pytest.approx(50.5)
    assert a.gap == pytest.approx(49.5)
    assert a.multiplier == pytest.approx(9.9)
    b = allocate([[0, 10]], [[100.0, 1.0]], 5)
    assert b.proved and b.optimal and b.gap == pytest.approx(49.5)  # optimal, gap and all


def test_infeasible_budget_names_the_minimum():
    with pytest.raises(InfeasibleBudget, match=r"budget of 9 bytes is below the smallest configuration: 12 bytes"):
        allocate([[5, 10], [7, 9]], [[1.0, 0.0], [1.0, 0.5]], 9)
    assert issubclass(InfeasibleBudget, ValueError)


def test_dominated_options_never_chosen():
    # option 1 is larger and worse than option 0: never on the front
    assert list(pareto_front(np.array([4, 8, 10]), np.array([1.0, 2.0, 0.5]))) == [0, 2]
    # (0,10) (5,4) (10,0): (5,4) is below the chord (5,5): on the hull; (5,6) would not be
    assert list(lower_hull(np.array([0, 5, 10]), np.array([10.0, 4.0, 0.0]), np.array([0, 1, 2]))) == [0, 1, 2]
    assert list(lower_hull(np.array([0, 5, 10]), np.array([10.0, 6.0, 0.0]), np.array([0, 1, 2]))) == [0, 2]


def test_frontier_runs_from_smallest_to_largest_and_decreases():
    sizes = [[5, 10, 20], [5, 10]]
    distortions = [[100.0, 10.0, 1.0], [50.0, 2.0]]
    curve = frontier(sizes, distortions)
    assert curve[0] == (10.0, 150.0) and curve[-1] == (30.0, 3.0)
    assert all(b[0] > a[0] and b[1] < a[1] for a, b in zip(curve, curve[1:]))


@pytest.mark.parametrize("bad, match", [
    (([[1, 2]], [[1.0]], 5), "equal length"),
    (([[1]], [[-1.0]], 5), ">= 0"),
    (([[1.5]], [[1.0]], 5), "integers"),
])
def test_bad_input_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        allocate(*bad)
