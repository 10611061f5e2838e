"""new_whale: where the unknown label goes into each image's ranking.

The 3rd place's rule: the unknown label is inserted before the first candidate whose blended
score is below a threshold t; equivalently, a constant column of value t joins the scores (a
candidate scoring exactly t stays ahead of it). `insert_positions` gives, per image, how many
ranked candidates come before it.

By proportion: t is chosen so that a share p of images has its top-1 score below t, i.e.
new_whale first (3rd place: p = 0.276 on the 2019 test set, found by search over t). With tied
top-1 scores the share can fall short of p; it never exceeds it. The leak runs first and pins its
labels before the model's ranking, so the final new_whale-first share also moves with the leak
(`Result.new_whale_share` reports it).
"""
from __future__ import annotations

import numpy as np


def threshold_for_proportion(top1: np.ndarray, proportion: float) -> float:
    """The threshold t with round(p * N) images having top-1 score < t (fewer if scores tie)."""
    n = len(top1)
    if n == 0:
        return 0.0
    m = int(round(proportion * n))
    s = np.sort(np.asarray(top1, dtype=np.float32))
    if m >= n:
        return float(np.nextafter(s[-1], np.float32(np.inf)))
    return float(s[m])


def insert_positions(top_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, the number of ranked candidates scoring >= threshold (scores descending)."""
    return (top_scores >= np.float32(threshold)).sum(axis=1).astype(np.int64)


def threshold_of(step, top1: np.ndarray) -> float:
    """The threshold a NewWhaleStep asks for: its own, or the one its proportion implies."""
    if step.proportion is not None:
        return threshold_for_proportion(top1, step.proportion)
    return float(step.threshold)
