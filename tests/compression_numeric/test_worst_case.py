"""The worst-sample allocation: a hand-made case where it and the mean objective part ways, and
exhaustive search on small random instances (bound <= optimum <= the choice's worst sample)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from stages.compression.numeric.allocation import InfeasibleBudget, allocate
from stages.compression.numeric.worst_case import allocate_worst_case, sample_errors


def test_it_upgrades_the_weight_that_hurts_one_sample_where_the_mean_upgrades_the_other():
    # two weights, each: 1 byte with proxy 1, or 2 bytes with proxy 0; budget 3 bytes: one upgrade.
    # A hurts sample 0 only (rates 1, 0), B both samples a little (0.6, 0.6).
    sizes = [np.array([1, 2]), np.array([1, 2])]
    proxies = [np.array([1.0, 0.0]), np.array([1.0, 0.0])]
    rates = np.array([[1.0, 0.0], [0.6, 0.6]])
    # mean objective: upgrading A saves 0.5 on average, B 0.6 -> B; its worst sample is A's 1.0
    mean = allocate(sizes, [p * r.mean() for p, r in zip(proxies, rates)], 3)
    assert mean.choice == (0, 1)
    assert sample_errors(proxies, rates, mean.choice).max() == pytest.approx(1.0)
    # worst objective: upgrade A, leaving B's 0.6 on each sample
    w = allocate_worst_case(sizes, proxies, rates, 3)
    assert w.choice == (1, 0)
    assert w.worst == pytest.approx(0.6) and w.per_sample == pytest.approx((0.6, 0.6))
    assert w.size == 3 and w.bound <= w.worst + 1e-12


def _brute(sizes, proxies, rates, budget):
    best = None
    for choice in itertools.product(*[range(len(s)) for s in sizes]):
        if sum(int(s[j]) for s, j in zip(sizes, choice)) > budget:
            continue
        t = sample_errors(proxies, rates, choice).max()
        best = t if best is None or t < best else best
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_against_exhaustive_search(items, samples, seed, slack):
    rng = np.random.default_rng(seed)
    sizes = [np.sort(rng.integers(1, 20, size=rng.integers(1, 4))) for _ in range(items)]
    proxies = [np.sort(rng.random(len(s)))[::-1].copy() for s in sizes]  # bigger is better, mostly
    rates = rng.random((items, samples)) * rng.random((items, 1)) * 4
    lo = sum(int(s.min()) for s in sizes)
    hi = sum(int(s.max()) for s in sizes)
    budget = int(lo + slack * (hi - lo))
    w = allocate_worst_case(sizes, proxies, rates, budget)
    opt = _brute(sizes, proxies, rates, budget)
    assert w.size <= budget
    assert w.worst == pytest.approx(sample_errors(proxies, rates, w.choice).max())
    assert w.bound <= opt + 1e-9 <= w.worst + 2e-9           # the bound is below the optimum, the choice above
    # never worse than the mean objective's choice on the worst sample (round 0 is that choice)
    mean = allocate(sizes, [p * r.mean() for p, r in zip(proxies, rates)], budget)
    assert w.worst <= sample_errors(proxies, rates, mean.choice).max() + 1e-12


def test_an_infeasible_budget_is_refused():
    with pytest.raises(InfeasibleBudget):
        allocate_worst_case([np.array([5, 9])], [np.array([1.0, 0.0])], np.ones((1, 2)), 4)
