"""Ensemble selection (Caruana, Niculescu-Mizil, Crew and Ksikes, ICML 2004): member weights chosen
on the validation score itself, for `weights: select` in a blend recipe.

Greedy forward selection with replacement: start from nothing, add the member whose extra copy
scores best (MAP@5 after the recipe's steps, the new_whale threshold fitted where the recipe fits
it), ROUNDS times; keep the multiset of the best round. A member picked k times of n weighs k / n.
Picking with replacement lets a strong member take most of the weight (a matcher far ahead of the
networks) and a weak one a twentieth, where the sqrt(skill) rule (kit/post/weights.py) can do
neither. Greedy picks on a few hundred images overfit, so it is bagged: each of BAGS bootstrap
resamples of the validation images selects its own multiset, and the weights are their mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ROUNDS = 20  # copies added per bag: weights in steps of 1/20 within a bag
BAGS = 10  # bootstrap resamples of the validation images, one selection each
SEED = 0


@dataclass
class Selection:
    weights: np.ndarray  # (m,) summing to 1: the bags' mean share of each member
    counts: np.ndarray  # (BAGS, m) the copies each bag kept
    scores: np.ndarray  # (BAGS,) each bag's best score on its own resample (optimistic)


def select(score: Callable[[np.ndarray, np.ndarray], float], m: int, n: int, rounds: int = ROUNDS,
           bags: int = BAGS, seed: int = SEED) -> Selection:
    """Weights for m members. score(weights (m,), rows) -> the blend's score on those rows of the n
    validation images (rows may repeat: a bootstrap resample). One bag with rounds=1 is "the best
    member alone"."""
    rng = np.random.default_rng(seed)
    counts, best_scores = np.zeros((bags, m), np.int64), np.zeros(bags)
    for b in range(bags):
        rows = rng.integers(0, n, n) if bags > 1 else np.arange(n)
        have, best, kept = np.zeros(m, np.int64), -np.inf, None
        for _ in range(rounds):
            trials = [score((have + np.eye(m, dtype=np.int64)[i]) / (have.sum() + 1), rows) for i in range(m)]
            pick = int(np.argmax(trials))  # ties: the earlier member
            have[pick] += 1
            if trials[pick] > best:  # the best round so far, not the last: later picks may only add noise
                best, kept = trials[pick], have.copy()
        counts[b], best_scores[b] = kept, best
    shares = counts / counts.sum(axis=1, keepdims=True)
    return Selection(shares.mean(axis=0), counts, best_scores)
