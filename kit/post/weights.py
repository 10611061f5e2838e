"""Automatic member weights: each member's skill, shared with its near-copies.

A recipe without weights (every `weight:` omitted) blends with

    w_i  proportional to  sqrt(q_i) / sum_j s_ij

- s_ij in [0, 1], s_ii = 1: how alike members i and j fail.
  * With truth (the validation split): the correlation r of their per-image AP@5, each member alone
    ranking the known identities, over the n images whose truth is a known identity, less the noise
    a correlation of n values carries: s = (r - f) / (1 - f), f = 2 / sqrt(n), clipped to [0, 1].
  * Without truth (test only, e.g. teammates' CSVs with no validation twin): how often their first
    labels agree on the images where the members do not all agree.
- q_i: with truth, member i's MAP@5 on those images (its identification skill); without, 1. Its
  square root: skill measured on a few hundred images is a noisy guide, and a vote gains from its
  weaker voters too.
- The weights are then rounded to tenths of the largest: finer differences are within the noise of
  a validation set, and near-equal members should tie exactly, as in the plain vote, where a tie
  lets the rest of each member's ranking decide.

So six near-copies of one model (s close to 1 among them) share about one member's weight and
cannot drown a different member, independent members are weighted by skill, and a member that
identifies nothing gets 0. The unknown label is left out of both: where it goes is the new_whale
step's business (a threshold), not a matter of which member ranks identities best.

With truth, `kit.post.pipeline.weight_report` keeps these weights only if they score at least as
well on the validation images as equal weights (the plain vote); one bit chosen on hundreds of
images, so it hardly overfits, and a recipe never starts below the plain vote it would replace.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.metric import average_precision


@dataclass
class WeightReport:
    """The weights and why: the skills, the similarity matrix, what they were measured on."""

    names: list[str]
    weights: np.ndarray  # (m,) summing to 1
    skill: np.ndarray  # (m,)
    similarity: np.ndarray  # (m, m)
    basis: str  # what s and q were measured on, in words
    choice: str = "correlation-aware"  # or "equal": the plain vote scored higher on validation; or "selected"
    picks: np.ndarray | None = None  # ensemble selection: (bags, m) the copies of each member each bag kept

    @property
    def copies(self) -> np.ndarray:
        """sum_j s_ij: each member's soft count of members like it (itself included)."""
        return self.similarity.sum(axis=1)

    def lines(self) -> list[str]:
        width = max(len(n) for n in self.names)
        if self.picks is not None:
            bags, total = self.picks.shape[0], int(self.picks[0].sum())
            rows = [f"weights (select, {self.basis}): ensemble selection, {bags} bootstrap resamples of the "
                    f"validation images, each a multiset of members picked greedily on MAP@5 after the steps"]
            for n, w, q, k in zip(self.names, self.weights, self.skill, self.picks.mean(axis=0)):
                rows.append(f"  {n:<{width}}  weight {w:.3f}  skill {q:.3f}  picked {k:4.1f} times a resample")
            return rows
        rows = [f"weights (auto, {self.basis}): {self.choice}" +
                (": weight ~ sqrt(skill) / near-copies" if self.choice == "correlation-aware" else "")]
        for n, w, q, c in zip(self.names, self.weights, self.skill, self.copies):
            rows.append(f"  {n:<{width}}  weight {w:.3f}  skill {q:.3f}  near-copies {c:.2f}")
        return rows


def _similarity_of_errors(ap: np.ndarray) -> np.ndarray:
    """Correlation of the rows of `ap` (m, n) above the noise floor 2 / sqrt(n), scaled to [0, 1];
    a constant row is 1 with an identical row, else 0."""
    m, n = ap.shape
    floor = min(2 / np.sqrt(max(n, 1)), 0.5)
    sd = ap.std(axis=1)
    out = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            if sd[i] > 0 and sd[j] > 0:
                r = (float(np.corrcoef(ap[i], ap[j])[0, 1]) - floor) / (1 - floor)
            else:
                r = float(np.array_equal(ap[i], ap[j]))
            out[i, j] = out[j, i] = min(max(r, 0.0), 1.0)
    return out


def _similarity_of_answers(first: np.ndarray) -> np.ndarray:
    """Agreement of the columns of `first` (n, m) on the rows where they are not all equal."""
    m = first.shape[1]
    contested = (first != first[:, :1]).any(axis=1)
    if not contested.any():
        return np.ones((m, m))
    f = first[contested]
    return np.array([[float((f[:, i] == f[:, j]).mean()) for j in range(m)] for i in range(m)])


def auto_weights(names: list[str], tops: list[np.ndarray], firsts: np.ndarray, truth: np.ndarray | None,
                 unknown_code: int) -> WeightReport:
    """Weights for m members from what each ranks alone.

    tops: per member, its (n, >=5) top codes of known identities alone; firsts: (n, m) each member's
    first label, the unknown label included (a CSV's vote); truth: (n,) codes, or None.
    """
    m = len(names)
    known = None if truth is None else truth != unknown_code
    if known is not None and known.any():
        ap = np.stack([average_precision(t[known, :5], truth[known]) for t in tops])
        skill = ap.mean(axis=1)
        similarity = _similarity_of_errors(ap)
        basis = f"validation errors on {int(known.sum())} images of known identities"
        if not (skill > 0).any():
            skill = np.ones(m)
    else:
        skill = np.ones(m)
        similarity = _similarity_of_answers(firsts)
        basis = f"agreement of first labels on {len(firsts)} images, no truth"
    raw = np.sqrt(skill) / similarity.sum(axis=1)
    raw = np.round(raw / raw.max(), 1) + 0.1 * ((raw > 0) & (np.round(raw / raw.max(), 1) == 0))
    return WeightReport(list(names), raw / raw.sum(), skill, similarity, basis)


def equal(report: WeightReport) -> WeightReport:
    """The same report with equal weights (the plain vote) chosen instead."""
    m = len(report.names)
    return WeightReport(report.names, np.full(m, 1 / m), report.skill, report.similarity, report.basis,
                        "equal (they scored higher on validation than the correlation-aware weights)")
