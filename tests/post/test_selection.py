"""Ensemble selection (kit/post/selection.py) and `weights: select` in a blend recipe."""
from __future__ import annotations

import numpy as np
import pytest

from kit.errors import KitError
from kit.post.selection import select


def _ap_score(ap: np.ndarray):
    """A linear stand-in for a blend's score: the weighted mean of the members' per-image AP."""
    def score(w, rows):
        return float((w[:, None] * ap[:, rows]).sum(axis=0).mean())
    return score


def test_one_bag_without_resampling_is_the_greedy_search_by_hand():
    rng = np.random.default_rng(0)
    ap = rng.random((3, 40))
    score = _ap_score(ap)
    out = select(score, 3, 40, rounds=4, bags=1)
    # by hand: greedy with replacement, each round the best extra copy, the best round kept
    have, best, kept = np.zeros(3, int), -1.0, None
    for _ in range(4):
        trials = [score((have + np.eye(3, dtype=int)[i]) / (have.sum() + 1), np.arange(40)) for i in range(3)]
        have[int(np.argmax(trials))] += 1
        if max(trials) > best:
            best, kept = max(trials), have.copy()
    assert out.counts[0].tolist() == kept.tolist()
    assert np.allclose(out.weights, kept / kept.sum())
    # with a linear score the best is the best member alone, found in the first round and kept
    assert out.weights.tolist() == [float(i == int(np.argmax(ap.mean(axis=1)))) for i in range(3)]


def test_a_strong_member_takes_most_of_the_weight_and_a_useless_one_none():
    # member 0 right on 90% of the images, 1 on 50% (others), 2 never: a vote that needs both 0 and 1
    n = 200
    rng = np.random.default_rng(1)
    right0 = rng.random(n) < 0.9
    right1 = rng.random(n) < 0.5

    def score(w, rows):  # the image is right when the members that are right on it hold the majority
        votes = w[0] * right0 + w[1] * right1
        return float((votes[rows] > 0.5).mean())

    out = select(score, 3, n)
    assert out.weights[0] > 0.5 and out.weights[2] == 0.0
    assert np.isclose(out.weights.sum(), 1.0) and out.counts.shape == (10, 3)


def test_bags_resample_and_are_deterministic():
    rng = np.random.default_rng(2)
    ap = rng.random((4, 30))

    def score(w, rows):
        return float(np.sqrt((w[:, None] * ap[:, rows]).sum(axis=0)).mean())  # concave: mixtures win

    a, b = select(score, 4, 30), select(score, 4, 30)
    assert np.array_equal(a.counts, b.counts)
    assert (a.counts > 0).sum(axis=1).max() > 1  # a concave score mixes members


def test_select_in_a_recipe_is_validated(tmp_path):
    from kit.post.recipe import recipe_from_dict
    base = {"name": "x", "data": "data", "members": [{"model": "models/a", "view": "logit"},
                                                     {"model": "models/b", "view": "logit"}]}
    r = recipe_from_dict({**base, "weights": "select"})
    assert r.weights == "select" and r.auto_weights
    assert recipe_from_dict(r.to_dict()) == r
    # weights given: the selection is done, and the recipe says so no more
    done = r.with_params({"members.0.weight": 0.7, "members.1.weight": 0.3})
    assert done.weights == "auto" and not done.auto_weights and "weights" not in done.to_dict()
    with pytest.raises(KitError, match="omit every member's weight"):
        recipe_from_dict({**base, "weights": "select",
                          "members": [{**m, "weight": 1.0} for m in base["members"]]})
    with pytest.raises(KitError, match="weights"):
        recipe_from_dict({**base, "weights": "selct"})
