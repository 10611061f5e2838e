"""P(new): a calibrated probability that an image's animal is new, and the unknown label where it
maximises the expected mark under the recipe's metric (`steps.new_whale: {fit: probability}`):
AP@5 under MAP@5, a hit at rank 1 under top-1 and AnimalCLEF.

The threshold rule uses one feature, the blended top-1 score. Whether an animal is new shows in
more: how far the top-1 stands above the second (margin), how flat the top-K is (entropy), and
whether the members agree on the top-1 (the weighted share whose own top-1 it is). A logistic
regression on those four, fitted on validation images (new or known), gives q = P(new).

The identities get calibrated probabilities too: a second logistic regression, fitted on the known
validation images' top-K, gives pi_r = P(the identity at rank r is the animal | known) from its
blended score, its share of the top-K's scores and log(r + 1). So P(label at r) = (1 - q) pi_r, and
the expected mark of a top-5 is the sum over ranks of P(label there) x the metric's credit there
(`Metric.credit`: 1 / (rank + 1) for MAP@5; 1 at rank 1, else 0, for a one-label metric): `positions`
puts the unknown label where that is largest, exactly, among the six places it can take (MAP@5,
pi decreasing: before the first identity with (1 - q) pi_r < q; one label: first when q > (1 - q) pi_0).
AnimalCLEF weighs images by their groups; the expected hit leaves those weights out (they are not
known for a test image): its threshold rules are exact under that metric, P(new) is not. Measured on the demo's blend against
one fitted threshold: README, "What each method gains here".

Fitted on validation like a threshold and carried to test as numbers in the recipe
(`new_whale: {model: {bias: ..., top1: ..., id_bias: ..., ...}}`); scored on validation
cross-fitted (`cross_fit`): each part by a model fitted on the other parts only.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from kit.metrics import METRICS

FEATURES = ("top1", "margin", "entropy", "agreement")  # of an image: P(new)
ID_FEATURES = ("id_score", "id_share", "id_rank")  # of an identity at a rank: P(it is the animal | known)
KEYS = ("bias", *FEATURES, "id_bias", *ID_FEATURES)  # what a fitted model holds
MAP5_CREDIT = METRICS["map5"].credit  # the default: what the 2019 and 2022 competitions score
L2 = 1.0  # ridge on the standardised coefficients: a few hundred images, a handful of features


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


def identity_features(scores: np.ndarray) -> np.ndarray:
    """(N, K, 3): each ranked identity's blended score, its share of the top-K's scores, log(rank + 1)."""
    s = np.maximum(scores.astype(np.float64), 0.0)
    total = s.sum(axis=1, keepdims=True)
    share = np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    rank = np.broadcast_to(np.log(np.arange(s.shape[1]) + 1.0), s.shape)
    return np.stack([s, share, rank], axis=-1)


def identity_probabilities(model: dict[str, float], scores: np.ndarray) -> np.ndarray:
    """(N, K): pi_r = P(the identity at rank r is the image's animal | the animal is known)."""
    z = model["id_bias"] + identity_features(scores) @ np.array([model[f] for f in ID_FEATURES])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def probability_new(model: dict[str, float], x: np.ndarray) -> np.ndarray:
    """q = P(new) per image from its features (N, 4)."""
    z = model["bias"] + x @ np.array([model[f] for f in FEATURES])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def place(q: np.ndarray, pi: np.ndarray, credit: tuple[float, ...] = MAP5_CREDIT) -> np.ndarray:
    """Per image, the place (0-5, 5: not in the top-5) of the unknown label that maximises the
    expected mark (`credit[r]`: the mark of the right label at rank r) when it is the answer with
    probability q and the identity at rank r with (1 - q) pi_r, the identities kept in their order;
    ties: the earlier place."""
    p = (1.0 - q)[:, None] * pi[:, :5]
    if p.shape[1] < 5:
        p = np.pad(p, ((0, 0), (0, 5 - p.shape[1])))
    c = np.append(np.asarray(credit, np.float64)[:5], 0.0)  # rank 5: out of the list
    before = np.cumsum(np.c_[np.zeros(len(p)), p * c[:5]], axis=1)  # ranks < r as they are
    shifted = p * c[1:]  # rank j pushed one down (from rank 4: out)
    after = np.c_[np.cumsum(shifted[:, ::-1], axis=1)[:, ::-1], np.zeros(len(p))]  # ranks r..4 pushed down
    expected = before + np.c_[q[:, None] * c[:5], np.zeros(len(p))] + after
    return expected.argmax(axis=1).astype(np.int64)


def positions(model: dict[str, float], x: np.ndarray, scores: np.ndarray,
              credit: tuple[float, ...] = MAP5_CREDIT) -> np.ndarray:
    """Per image, how many ranked identities go before the unknown label (`place`)."""
    return place(probability_new(model, x), identity_probabilities(model, scores), credit)


def fit(x: np.ndarray, is_new: np.ndarray, scores: np.ndarray, truth_column: np.ndarray) -> dict[str, float]:
    """The model from validation images: features x (N, 4), whether each image's animal is new, the
    blended top-K scores (N, K), and the top-K column of each image's true identity (-1: not in the
    top-K, or new). The model is the same whatever the metric (`positions` places by its credit)."""
    is_new = np.asarray(is_new, bool)
    model = dict(zip(("bias", *FEATURES), _logistic(x, is_new)))
    known = ~is_new
    f = identity_features(scores[known])
    right = truth_column[known][:, None] == np.arange(scores.shape[1])[None, :]
    model.update(zip(("id_bias", *ID_FEATURES), _logistic(f.reshape(-1, f.shape[-1]), right.reshape(-1))))
    return {k: float(v) for k, v in model.items()}


def cross_fit(x: np.ndarray, is_new: np.ndarray, scores: np.ndarray, truth_column: np.ndarray,
              part: np.ndarray, n_parts: int, credit: tuple[float, ...] = MAP5_CREDIT) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the unknown label's position and P(new), by a model fitted on the other parts only."""
    at, q = np.zeros(len(x), np.int64), np.zeros(len(x))
    for k in range(n_parts):
        rows, rest = part == k, part != k
        if not rows.any():
            continue
        model = fit(x[rest], is_new[rest], scores[rest], truth_column[rest])
        at[rows] = positions(model, x[rows], scores[rows], credit)
        q[rows] = probability_new(model, x[rows])
    return at, q


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
