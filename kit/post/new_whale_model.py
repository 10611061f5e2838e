"""P(new): a calibrated probability that an image's animal is new, and the unknown label where it
maximises the expected AP@5 (`steps.new_whale: {fit: probability}`).

The threshold rule uses one feature, the blended top-1 score. Whether an animal is new shows in
more: how far the top-1 stands above the second (margin), how flat the top-K is (entropy), and
whether the members agree on the top-1 (the weighted share whose own top-1 it is). A logistic
regression on those four, fitted on validation images (new or known), gives q = P(new).

Where it goes: with q and the identities' probabilities P(j) = (1 - q) * coverage * p_j, where
p_j = s_j^power / sum_k s_k^power over the blended top-K scores (power fitted on the known
validation images by likelihood) and coverage the share of known validation images whose identity
is in the top-K at all, the expected AP@5 of a top-5 is sum over ranks r of P(label at r) / (r + 1).
Sorting all labels by probability maximises it (an exchange argument: swapping two adjacent labels
changes it by (P_a - P_b) (1/r - 1/(r+1))), so the unknown label goes before the first identity
with P(j) < q: `positions`. tests/post/test_new_whale_model.py checks it against every position.

Fitted on validation like a threshold and carried to test as numbers in the recipe
(`new_whale: {model: {bias: ..., top1: ..., power: ..., coverage: ...}}`); scored on validation
cross-fitted (`cross_fit`): each part by a model fitted on the other parts only.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

FEATURES = ("top1", "margin", "entropy", "agreement")
KEYS = ("bias", *FEATURES, "power", "coverage")  # what a fitted model holds
L2 = 1.0  # ridge on the standardised coefficients: a few hundred images, a handful of features
POWERS = np.geomspace(0.25, 16.0, 25)  # candidate sharpenings of the blended scores


def features(scores: np.ndarray, top1: np.ndarray, member_firsts: np.ndarray, member_weights: np.ndarray) -> np.ndarray:
    """(N, 4) float64: the blended top-1 score, its margin over the second, the entropy of the
    top-K scores normalised to a distribution (over log K: 0 sure, 1 flat), and the weighted share of
    the members whose own first label is the blended top-1 (member_firsts (N, M) codes, weights (M,))."""
    s = np.maximum(scores.astype(np.float64), 0.0)
    k = s.shape[1]
    total = s.sum(axis=1, keepdims=True)
    p = np.divide(s, total, out=np.full_like(s, 1.0 / k), where=total > 0)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1) / np.log(k) if k > 1 else np.zeros(len(s))
    margin = s[:, 0] - (s[:, 1] if k > 1 else 0.0)
    w = np.asarray(member_weights, np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / max(len(w), 1))
    agreement = ((member_firsts == top1[:, None]) * w[None, :]).sum(axis=1) if len(w) else np.zeros(len(s))
    return np.stack([s[:, 0], margin, entropy, agreement], axis=1)


def identity_probabilities(scores: np.ndarray, power: float) -> np.ndarray:
    """(N, K): the top-K blended scores sharpened by `power` and normalised per image (0 scores stay 0)."""
    s = np.maximum(scores.astype(np.float64), 0.0)
    s = np.where(s > 0, s ** power, 0.0)
    total = s.sum(axis=1, keepdims=True)
    return np.divide(s, total, out=np.zeros_like(s), where=total > 0)


def probability_new(model: dict[str, float], x: np.ndarray) -> np.ndarray:
    """q = P(new) per image from its features (N, 4)."""
    z = model["bias"] + x @ np.array([model[f] for f in FEATURES])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def positions(model: dict[str, float], x: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per image, how many ranked identities go before the unknown label: those whose probability
    (1 - q) * coverage * p_j exceeds q (the expected-AP@5-optimal place; a tie goes to the identity)."""
    q = probability_new(model, x)
    p = identity_probabilities(scores, model["power"])
    return ((1.0 - q)[:, None] * model["coverage"] * p >= q[:, None]).sum(axis=1).astype(np.int64)


def fit(x: np.ndarray, is_new: np.ndarray, scores: np.ndarray, truth_column: np.ndarray) -> dict[str, float]:
    """The model from validation images: features x (N, 4), whether each image's animal is new, the
    blended top-K scores (N, K), and the top-K column of each image's true identity (-1: not in the
    top-K, or new)."""
    is_new = np.asarray(is_new, bool)
    model = dict(zip(("bias", *FEATURES), _logistic(x, is_new)))
    known = ~is_new
    in_top = known & (truth_column >= 0)
    model["coverage"] = float(in_top.sum() / known.sum()) if known.any() else 1.0
    model["power"] = _power(scores[in_top], truth_column[in_top])
    return model


def cross_fit(x: np.ndarray, is_new: np.ndarray, scores: np.ndarray, truth_column: np.ndarray,
              part: np.ndarray, n_parts: int) -> np.ndarray:
    """Per image, the unknown label's position by a model fitted on the other parts only."""
    at = np.zeros(len(x), np.int64)
    for k in range(n_parts):
        rows, rest = part == k, part != k
        if not rows.any():
            continue
        model = fit(x[rest], is_new[rest], scores[rest], truth_column[rest])
        at[rows] = positions(model, x[rows], scores[rows])
    return at


def _logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(bias, coefficients) of an L2-regularised logistic regression, on the features' own scale."""
    if len(y) == 0 or y.all() or not y.any():  # one class only: its rate, no slope
        rate = (y.sum() + 0.5) / (len(y) + 1.0)
        return np.concatenate([[np.log(rate / (1 - rate))], np.zeros(x.shape[1])])
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    z = (x - mean) / std
    t = y.astype(np.float64)
    n = len(t)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b, w = theta[0], theta[1:]
        logits = b + z @ w
        prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        nll = np.logaddexp(0.0, logits) - t * logits
        value = nll.sum() / n + L2 * (w @ w) / (2 * n)
        g = prob - t
        return value, np.concatenate([[g.sum() / n], z.T @ g / n + L2 * w / n])

    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B").x
    w = theta[1:] / std
    return np.concatenate([[theta[0] - (w * mean).sum()], w])


def _power(scores: np.ndarray, column: np.ndarray) -> float:
    """The sharpening under which the known images' true identities are likeliest (1 without any)."""
    if not len(column):
        return 1.0
    rows = np.arange(len(column))
    loglik = [np.log(np.maximum(identity_probabilities(scores, a)[rows, column], 1e-12)).mean() for a in POWERS]
    return float(POWERS[int(np.argmax(loglik))])
