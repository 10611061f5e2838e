"""kit.ranking: the one top-5 builder train, export and post share."""
import numpy as np

from kit.metric import map5
from kit.ranking import top5_with_unknown, top_k
from kit.train.validate import evaluate_probs


def test_top5_inserts_the_unknown_at_the_threshold():
    scores = np.array([[0.9, 0.1, 0.6, 0.3, 0.2, 0.05], [0.2, 0.1, 0.3, 0.0, 0.0, 0.0]], np.float32)
    assert top5_with_unknown(scores, 0.5, 6).tolist() == [[0, 2, 6, 3, 4], [6, 2, 0, 1, 3]]  # ties: lower column first


def test_top_k_pads_a_short_ranking():
    codes, top = top_k(np.array([[0.2, 0.7, 0.1]], np.float32))
    assert codes.tolist() == [[1, 0, 2, -1, -1]] and np.isneginf(top[0, 3:]).all()
    assert top5_with_unknown(np.array([[0.2, 0.7, 0.1]], np.float32), 0.15, 3).tolist() == [[1, 0, 3, 2, -1]]


def test_the_validation_threshold_is_at_least_as_good_as_any_grid_point():
    rng = np.random.default_rng(0)
    n, k = 400, 30
    targets = np.where(rng.random(n) < 0.3, -1, rng.integers(0, k, n))
    logits = rng.normal(size=(n, k)) + 3.0 * np.eye(k)[np.clip(targets, 0, None)] * (targets >= 0)[:, None]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = evaluate_probs(probs.astype(np.float32), targets)
    truth = np.where(targets >= 0, targets, k)
    grid = [map5(top5_with_unknown(probs.astype(np.float32), t, k), truth) for t in np.quantile(probs.max(1), np.linspace(0, 1, 41))]
    assert got["map5"] >= round(max(grid), 5)
    assert got["map5"] == round(map5(top5_with_unknown(probs.astype(np.float32), got["threshold"], k), truth), 5)
    assert got["map5_without_unknown"] == round(map5(top_k(probs)[0], truth), 5)


def test_an_identity_without_a_column_is_never_a_hit():
    """-1 is the unknown label; another negative code (export's truth for an identity the member lacks) is a miss."""
    probs = np.array([[0.9, 0.1]] * 3 + [[0.2, 0.8]] * 3, np.float32)
    targets = np.array([0, 0, 0, -2, -2, -2])
    got = evaluate_probs(probs, targets)
    assert got["map5"] == 0.5 and got["map5_without_unknown"] == 0.5  # the -2 images score 0 however it is set
