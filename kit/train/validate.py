"""Local validation during training: MAP@5 on the held-out fold, the unknown label inserted at a threshold.

The blender does this with everything else (kit/post) on exported prediction sets; here it is the
plain rule, enough to watch a run and to compare recipes: per image, the known identities sorted
by probability, with the unknown label inserted before the first one whose probability is below
t, t the exact best on these images (kit.ranking, the search the blender uses). The baselines
are what a model that learned nothing would score.
"""
from __future__ import annotations

import numpy as np

from kit.metric import map5
from kit.ranking import best_threshold, position_table, top_k


def evaluate_probs(probs: np.ndarray, targets: np.ndarray) -> dict:
    """MAP@5 of (N, K) probabilities against targets (class index, -1 unknown, any other negative
    code an identity without a column: never a hit), at the best threshold."""
    K = probs.shape[1]
    truth = np.where(targets == -1, K, targets)
    codes, top = top_k(probs)
    table = position_table(codes, top, truth, K)
    threshold, best = best_threshold(table)
    finite = table.scores[np.isfinite(table.scores)]
    never = not len(finite) or threshold < finite.min()  # below every score: it never enters the top 5
    return {
        "map5": round(best, 5),
        "threshold": None if never else round(threshold, 5),
        "map5_without_unknown": round(float(table.marks[:, -1].mean()) if len(truth) else 0.0, 5),
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
