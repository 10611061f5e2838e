"""Pseudo-labels: confident test predictions fed back to training (`extra_train` in train.py).

An image is pseudo-labelled with identity c when
- c is the blended top-1 known identity and also the first label of the final list (so neither
  the leak nor new_whale put something else first), and
- its confidence is above the threshold (strictly; 0.96 in the seeds).

The confidence is a probability: the weighted mean, over the members whose calibration yields
probabilities (softmax, sigmoid, affine, or `none` on a `prob` set), of each member's calibrated
probability of c, with the recipe's weights renormalised over those members. Rank-calibrated and
top-5 CSV members are left out of it: their 1 / (1 + rank) is not a probability (a top-1 always
gets 1.0). With no probability member there are no pseudo-labels.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kit.post.plugins import CALIBRATIONS

COLUMNS = ("Image", "Id")


def is_probability(method: str, kind: str) -> bool:
    """Whether a member calibrated with `method` gives probabilities (kind: its meta kind; a top-5
    CSV member's method is "ranked": never)."""
    return method in CALIBRATIONS and CALIBRATIONS[method].yields_probability(kind)


def select(top1: np.ndarray, first: np.ndarray, confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the images to pseudo-label."""
    return np.flatnonzero((top1 == first) & (confidence > threshold))


def right_share(rows: pd.DataFrame, truth: pd.DataFrame | None) -> float | None:
    """The share of pseudo-label `rows` (Image, Id) that `truth` (image, label: a synthetic competition's
    test truth) confirms; None without a truth or rows. What a round's gain follows."""
    if truth is None or not len(rows):
        return None
    label_of = dict(zip(truth["image"], truth["label"]))
    return float(np.mean([label_of.get(image) == label for image, label in zip(rows[COLUMNS[0]], rows[COLUMNS[1]])]))


def frame(images, labels, top1, first, confidence, threshold: float) -> pd.DataFrame:
    """`Image,Id` rows (plus nothing else) for the selected images, in image order."""
    keep = select(top1, first, confidence, threshold)
    vocab = np.asarray(labels, dtype=object)
    return pd.DataFrame({COLUMNS[0]: np.asarray(images, dtype=object)[keep], COLUMNS[1]: vocab[top1[keep]]})

