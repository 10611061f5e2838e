"""Local validation during training: MAP@5 on the held-out fold, the unknown label inserted at a threshold.

The blender does this properly (kit.post.new_whale) on exported prediction sets; here it is the
simple version, enough to watch a run and to compare recipes: per image, the known identities
sorted by probability, with the unknown label inserted before the first one whose probability is
below t; t is the best of a small grid (quantiles of the top-1 probability). The baselines are
what a model that learned nothing would score.
"""
from __future__ import annotations

import numpy as np

from kit.metric import map5

QUANTILES = np.linspace(0.0, 1.0, 21)


def top5_with_unknown(probs: np.ndarray, threshold: float, unknown: int) -> np.ndarray:
    """(N, 5) label codes: the top-5 classes with `unknown` inserted where probability < threshold."""
    k = min(5, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(probs, top, axis=1)
    if k < 5:
        top = np.pad(top, ((0, 0), (0, 5 - k)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, 5 - k)), constant_values=-np.inf)
    position = (scores >= threshold).sum(axis=1, keepdims=True)  # scores are sorted: a count is a rank
    j = np.arange(5)[None, :]
    shifted = np.concatenate([top[:, :1], top[:, :-1]], axis=1)
    return np.where(j < position, top, np.where(j == position, unknown, shifted))


def evaluate_probs(probs: np.ndarray, targets: np.ndarray) -> dict:
    """MAP@5 of (N, K) probabilities against targets (class index, -1 unknown), best threshold."""
    K = probs.shape[1]
    truth = np.where(targets >= 0, targets, K)
    top1 = probs.max(axis=1) if len(probs) else np.zeros(0)
    grid = np.unique(np.concatenate([np.quantile(top1, QUANTILES) if len(top1) else [], [np.inf]]))
    scores = [(map5(top5_with_unknown(probs, t, K), truth), float(t)) for t in grid]
    best_map, best_t = max(scores, key=lambda s: (s[0], -s[1]))
    return {
        "map5": round(best_map, 5),
        "threshold": round(best_t, 5) if np.isfinite(best_t) else None,  # None: never insert it
        "map5_without_unknown": round(map5(top5_with_unknown(probs, -np.inf, K), truth), 5),
        "images": int(len(targets)),
    }


def baselines(val_targets: np.ndarray, train_targets: np.ndarray, num_classes: int) -> dict:
    """MAP@5 of trivial predictions on the validation rows: all unknown; unknown + the 4 commonest ids."""
    truth = np.where(val_targets >= 0, val_targets, num_classes)
    known = train_targets[train_targets >= 0]
    common = np.argsort(-np.bincount(known, minlength=num_classes), kind="stable")[:4]
    all_unknown = np.full((len(truth), 1), num_classes)
    unknown_common = np.tile(np.concatenate([[num_classes], common]), (len(truth), 1))
    return {
        "all_unknown": round(map5(all_unknown, truth), 5),
        "unknown_then_4_commonest": round(map5(unknown_common, truth), 5),
        "unknown_share": round(float((val_targets < 0).mean()) if len(val_targets) else 0.0, 5),
    }
