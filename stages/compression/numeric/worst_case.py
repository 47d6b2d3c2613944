"""Choosing one configuration per weight so that the worst sample's estimated error is least.

The mean objective (allocation.allocate) minimises sum_i d_ij: the error summed over weights,
averaged over the calibration samples. What a user of a sentence encoder sees is the worst
sentence, and the weights do not hurt every sample alike: on all-MiniLM-L6-v2 the last layers'
FFN down-projections put 10-15x their mean error on a few sentences, the embedding table ~2x.
With per-sample rates g_is (calibrate's ``sensitivity_per_batch``: end-to-end error per unit
of the weight's proxy, for sample s) the estimated error of sample s is

    T_s(choice) = sum_i p_i,choice(i) * g_is

(p the candidates' proxies), and this module minimises max_s T_s under the size budget.

Solved by multiplicative weights over the samples (the standard scheme for a min-max over a
finite set): start from equal sample weights l (round 0 is the mean objective, so the result
is never worse than it on the calibration samples), solve the weighted problem
min sum_s l_s T_s with allocation.allocate, multiply each l_s by exp(eta T_s / max T), repeat,
and keep the round whose max_s T_s is least.

A lower bound comes for free: for any sample weights l on the simplex,
min_choice sum_s l_s T_s <= min_choice max_s T_s, and allocate's Lagrangian dual bound is below
the former. So ``bound`` = the largest dual bound over the rounds is below the min-max optimum,
and ``gap`` = worst - bound says how far from optimal the choice can be (for the estimate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stages.compression.numeric.allocation import allocate

ROUNDS = 40
ETA = 1.0


@dataclass(frozen=True)
class WorstCaseAllocation:
    choice: tuple           # per item, the index of its chosen option
    size: int               # total size of the chosen options
    worst: float            # max over samples of the estimated error T_s of the choice
    mean: float             # mean over samples of T_s
    per_sample: tuple       # T_s of the choice
    bound: float            # below min over choices of max_s T_s (module docstring)
    gap: float              # worst - bound (>= 0)
    rounds: int
    best_round: int         # 0: the mean objective's choice was already the best


def sample_errors(proxies: Sequence, rates: np.ndarray, choice: Sequence) -> np.ndarray:
    """T_s = sum_i proxies[i][choice[i]] * rates[i, s]."""
    chosen = np.array([float(p[j]) for p, j in zip(proxies, choice)])
    return chosen @ np.asarray(rates, np.float64)


def allocate_worst_case(sizes: Sequence, proxies: Sequence, rates: np.ndarray, budget: int,
                        rounds: int = ROUNDS, eta: float = ETA, node_limit: int = 2000) -> WorstCaseAllocation:
    """sizes[i], proxies[i]: the options of item i; rates [items, samples] >= 0 (module
    docstring). Raises allocation.InfeasibleBudget when nothing fits."""
    rates = np.asarray(rates, np.float64)
    errors = [np.outer(np.asarray(p, np.float64), r) for p, r in zip(proxies, rates)]
    return allocate_worst_case_of(sizes, errors, budget, rounds, eta, node_limit)


def allocate_worst_case_of(sizes: Sequence, errors: Sequence, budget: int, rounds: int = ROUNDS,
                           eta: float = ETA, node_limit: int = 2000) -> WorstCaseAllocation:
    """The same for any per-sample errors: errors[i] [options, samples], option j's error on
    each sample (not necessarily a proxy times a rate: measured errors will do)."""
    errors = [np.asarray(e, np.float64) for e in errors]
    n = errors[0].shape[1]
    weights = np.full(n, 1.0 / n)
    best, best_round, bound = None, 0, 0.0
    for r in range(rounds):
        a = allocate(sizes, [e @ weights for e in errors], budget, node_limit=node_limit)
        bound = max(bound, a.dual_bound)
        t = sum(e[j] for e, j in zip(errors, a.choice))
        if best is None or t.max() < best[1].max():
            best, best_round = (a, t), r
        top = t.max()
        if not top > 0:
            break
        weights = weights * np.exp(eta * t / top)
        weights /= weights.sum()
    a, t = best
    worst = float(t.max())
    return WorstCaseAllocation(tuple(a.choice), a.size, worst, float(t.mean()), tuple(float(v) for v in t),
                               bound, max(0.0, worst - bound), r + 1, best_round)
