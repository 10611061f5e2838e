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

By precision (`pseudo: {precision: 0.9}`) the cut is measured, not guessed: `gate` applies the same
rule to the validation images, counts how many of those it keeps are right, and takes the loosest
cut whose share right reaches the target at the lower end of its 95% (Wilson) interval. Where no
cut does, no pseudo-labels are written, and rounds.py stops rather than train on noise. A round at
confidence 0.8 on the Happywhale layout kept pseudo-labels of which 47% were right, and cost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.post.plugins import CALIBRATIONS

Z = 1.959964  # the normal quantile of a 95% interval

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


@dataclass
class Gate:
    """A confidence cut measured on validation: what it keeps and how many of those are right."""

    target: float
    threshold: float | None  # keep confidence > threshold; None: no cut reaches the target
    kept: int  # validation images it keeps
    right: int
    low: float  # the 95% Wilson interval of right / kept
    high: float
    best: tuple[int, int] = (0, 0)  # where no cut reaches it: (right, kept) of the cut with the highest lower end

    @property
    def precision(self) -> float:
        return self.right / self.kept if self.kept else float("nan")

    def line(self) -> str:
        if self.threshold is None:
            right, kept = self.best
            said = f"the best: {right} of {kept}" if kept else "no validation image passes the rule at all"
            return (f"pseudo-labels: none written: no confidence cut reaches precision {self.target:g} on validation "
                    f"(the lower end of its 95% interval; {said})")
        return (f"pseudo gate: confidence > {self.threshold:.4g}, measured on validation: {self.right} of the {self.kept} "
                f"images it keeps are right, precision {self.precision:.0%} [{self.low:.0%}, {self.high:.0%}] "
                f"(target {self.target:g})")


def wilson(right: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% Wilson score interval of right / n (n > 0)."""
    n = np.asarray(n, np.float64)
    p = np.asarray(right, np.float64) / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * np.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def cuts(confidence: np.ndarray, eligible: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cut the rule can make on validation: (the eligible confidences, most confident first;
    for each cut, how many it keeps and how many of those are right). A cut keeps a whole tie group."""
    idx = np.flatnonzero(eligible)
    order = idx[np.argsort(-confidence[idx], kind="stable")]
    conf = confidence[order]
    ends = np.flatnonzero(np.r_[conf[1:] < conf[:-1], True]) + 1 if len(conf) else np.zeros(0, np.int64)
    return conf, ends, np.cumsum(correct[order].astype(np.int64))[ends - 1]


def gate(confidence: np.ndarray, eligible: np.ndarray, correct: np.ndarray, target: float) -> Gate:
    """The loosest cut `confidence > t` whose kept eligible validation images (top-1 first: `select`'s
    rule) are right in a share whose 95% lower bound reaches `target`."""
    conf, ends, right = cuts(confidence, eligible, correct)
    if not len(conf):
        return Gate(target, None, 0, 0, 0.0, 1.0)
    low, high = wilson(right, ends)
    reach = np.flatnonzero(low >= target)
    if not len(reach):
        b = int(np.argmax(low))
        return Gate(target, None, 0, 0, 0.0, 1.0, best=(int(right[b]), int(ends[b])))
    k = reach[-1]
    n = int(ends[k])
    # midway to the first confidence it leaves out; keeping them all, just below the last kept
    t = (conf[n - 1] + conf[n]) / 2 if n < len(conf) else np.nextafter(conf[n - 1], -np.inf)
    return Gate(target, float(t), n, int(right[k]), float(low[k]), float(high[k]))
