"""Top-5 lists with the unknown label: the one place they are built, for train, export and post.

`assemble` makes the top-5 from a ranking: leak labels pinned first, the ranking (top-1/2 swapped
where asked) with the unknown label inserted at its position, no label twice. A threshold t puts
the unknown label before the first candidate scoring below t (`insert_positions`; the 3rd place's
rule); `top5_with_unknown` is that on raw scores, what training's validation and export's parity
check score.

Choosing t: a threshold only decides, per image, the unknown label's position among the first five
(0 to 5, 5 = not in it), and the images' marks under the metric for each position can be listed
once (`PositionTable`; AP@5 under MAP@5, kit/metrics). Lowering t from above every score moves one
image one position at a time, at the image's top-5 scores; one sorted sweep over those 5N events
gives the metric at every distinct threshold (`sweep`: MAP@5's sums of marks; `scores_by_threshold`:
any metric, a balanced one through its weighted sums, `Metric.buckets`), so the best threshold of a
set of images is exact, not a grid point (`best_threshold`), and so is a cross-validated one
(`cross_validated`: fitted on all parts but one, scored on that one, for each part). A chosen t
sits midway between the two scores that bound its interval, so it does not hinge on one image's
exact score. Without a `scorer` these functions score MAP@5 (training's validation and export's check).

Choosing a share instead (`by_share=True`): the best threshold of the fitting images, expressed as
the share of them that get the unknown label first, then applied to other images as that share of
theirs. A share transfers where a threshold does not: an out-of-fold member's test set is the mean
of its fold models, less confident than any one of them, so its top-1 scores sit lower on test
than on the out-of-fold images the threshold was fitted on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from kit.metric import K, average_precision
from kit.metrics import Scorer

POSITIONS = 6  # the unknown label at 0..4 in the top-5, or 5: not in it
# AP@5 is 0, 1, 1/2, 1/3, 1/4 or 1/5 (a hit 0 or 1): in sixtieths every sum of an additive metric's
# marks is a whole number, so equal scores tie exactly and the choice among them does not hang on
# the order of a float sum; a balanced metric's weighted sums are floats: ties within TIE
UNIT = 60
TIE = 1e-9


@njit(cache=True, nogil=True)
def assemble(top, pinned, new_whale_at, swap, unknown):
    """The top-5: the leak's labels, then the ranking (top-1/2 swapped where asked) with the
    unknown label inserted at its position; no label twice."""
    n, k = top.shape
    out = np.full((n, 5), -1, np.int64)
    for i in range(n):
        m = 0
        for p in range(pinned.shape[1]):
            c = pinned[i, p]
            if c < 0 or m == 5:
                break
            out[i, m] = c
            m += 1
        for p in range(k + 1):
            if m == 5:
                break
            if p == new_whale_at[i]:
                dup = False
                for t in range(m):
                    dup |= out[i, t] == unknown
                if not dup:
                    out[i, m] = unknown
                    m += 1
                    if m == 5:
                        break
            if p == k:
                break
            q = 1 - p if (swap[i] and p < 2) else p
            c = top[i, q]
            dup = False
            for t in range(m):
                dup |= out[i, t] == c
            if not dup:
                out[i, m] = c
                m += 1
    return out


def insert_positions(top_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, the number of ranked candidates scoring >= threshold (scores descending)."""
    return (top_scores >= np.float32(threshold)).sum(axis=1).astype(np.int64)


def threshold_for_proportion(top1: np.ndarray, proportion: float, already: int = 0) -> float:
    """The threshold t with round(p * N) images having the unknown label first: `already` of them by
    the vote, the rest by top-1 score < t (fewer if scores tie). `top1`: the other images' top-1."""
    n = len(top1) + already
    if n == 0:
        return 0.0
    m = int(round(proportion * n)) - already
    s = np.sort(np.asarray(top1, dtype=np.float32))
    if m <= 0 or len(s) == 0:
        return float(s[0]) if len(s) else 0.0
    if m >= len(s):
        return float(np.nextafter(s[-1], np.float32(np.inf)))
    return float(s[m])


def top_k(scores: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scores) of each row's k best columns, descending (ties: the lower column first);
    rows with fewer than k columns are padded with -1 / -inf."""
    n, c = scores.shape
    width = min(k, c)
    part = np.argpartition(-scores, width - 1, axis=1)[:, :width] if width < c else np.tile(np.arange(c), (n, 1))
    order = np.take_along_axis(part, np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1), 1)
    top = np.take_along_axis(scores, order, 1)
    if width < k:
        order = np.pad(order, ((0, 0), (0, k - width)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - width)), constant_values=-np.inf)
    return order.astype(np.int64), top


def top5_with_unknown(scores: np.ndarray, threshold: float, unknown: int) -> np.ndarray:
    """(N, 5) codes: each row's top-5 columns, the unknown label inserted before the first scoring below `threshold`."""
    codes, top = top_k(scores)
    n = len(codes)
    return assemble(codes, np.empty((n, 0), np.int64), insert_positions(top, threshold), np.zeros(n, np.bool_), unknown)


def position_table(codes: np.ndarray, top: np.ndarray, truth: np.ndarray, unknown: int,
                   pinned: np.ndarray | None = None, swap: np.ndarray | None = None,
                   cap: np.ndarray | None = None, per_image=average_precision) -> "PositionTable":
    """The PositionTable of a ranking (`codes`, `top` its scores, descending): each image's mark
    (`per_image`, a metric's; AP@5 by default) with the unknown label at each position. `pinned`,
    `swap`: the leak's labels and the balance swaps, kept as they are; `cap`: where a vote already
    put it (default: nowhere)."""
    n = len(codes)
    pinned = np.empty((n, 0), np.int64) if pinned is None else pinned
    swap = np.zeros(n, np.bool_) if swap is None else swap
    marks = np.stack([per_image(assemble(codes, pinned, np.full(n, p, np.int64), swap, unknown), truth)
                      for p in range(POSITIONS)], axis=1)
    scores = np.full((n, K), -np.inf, np.float32)  # fewer than 5 identities: the rest never rank
    scores[:, :min(K, top.shape[1])] = top[:, :K]
    cap = np.full(n, POSITIONS - 1, np.int64) if cap is None else cap
    return PositionTable(marks, scores, cap)


@dataclass
class PositionTable:
    """What a threshold decides, image by image: its mark with the unknown label at each position
    0..5 (`marks`), the blended top-5 scores that set its position (`scores`), and the position the
    vote already gives it (`cap`, 5 without a vote)."""

    marks: np.ndarray  # float64 (N, 6)
    scores: np.ndarray  # float32 (N, 5), descending
    cap: np.ndarray  # int64 (N,)

    def rows(self, idx: np.ndarray) -> "PositionTable":
        return PositionTable(self.marks[idx], self.scores[idx], self.cap[idx])

    def marks_at(self, threshold: float) -> np.ndarray:
        """Each image's mark with the step at `threshold`."""
        at = np.minimum(insert_positions(self.scores, threshold), self.cap)
        return self.marks[np.arange(len(at)), np.minimum(at, POSITIONS - 1)]

    def share_at(self, threshold: float) -> float:
        """The share of images with the unknown label first at `threshold` (the vote's included)."""
        return float(_shares(self, np.array([threshold]))[0])

    def threshold_for_share(self, share: float) -> float:
        """The threshold that puts the unknown label first in `share` of these images (see
        threshold_for_proportion)."""
        voted = self.cap == 0
        return threshold_for_proportion(self.scores[~voted, 0], share, int(voted.sum()))


def _caps(table: PositionTable) -> np.ndarray:
    return np.minimum(np.where(table.cap < 0, POSITIONS - 1, table.cap), POSITIONS - 1).astype(np.int64)


@njit(cache=True, nogil=True)
def _sweep(scores, marks, cap, bucket, weight, n_buckets):
    """(values, sums): the states of a threshold lowered over every top-5 score, sums[g, b] the sum
    of weight * mark over bucket b's images in state g (integers for sixtieths, exact; floats for a
    balanced metric's weights); state g holds for t in (values[g + 1], values[g]]."""
    n, width = scores.shape
    flat = scores.ravel()
    order = np.argsort(-flat, kind="mergesort")
    values = np.empty(n * width + 1, np.float64)
    sums = np.zeros((n * width + 1, n_buckets), marks.dtype)
    pos = np.zeros(n, np.int64)
    for i in range(n):
        sums[0, bucket[i]] += weight[i] * marks[i, min(cap[i], 0)]
    values[0] = np.inf
    g, e = 1, 0
    while e < len(order):
        s = flat[order[e]]
        if s == -np.inf:  # padding of a ranking shorter than 5: never ahead of any threshold
            break
        sums[g] = sums[g - 1]
        while e < len(order) and flat[order[e]] == s:
            i = order[e] // width
            old = min(cap[i], pos[i])
            pos[i] += 1
            sums[g, bucket[i]] += weight[i] * (marks[i, min(cap[i], pos[i])] - marks[i, old])
            e += 1
        values[g] = s
        g += 1
    return values[:g], sums[:g]


def sweep(table: PositionTable, part: np.ndarray | None = None, n_parts: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (G,), sums of marks in sixtieths (G, n_parts), int64): every distinct outcome of a
    threshold over the images, from the highest threshold (the unknown label first everywhere) down,
    and its sum of an additive metric's marks in each part (`part`: each image's part, 0..n_parts-1)."""
    n = len(table.cap)
    part = np.zeros(n, np.int64) if part is None else np.asarray(part, np.int64)
    marks = np.rint(table.marks * UNIT).astype(np.int64)
    values, totals = _sweep(np.ascontiguousarray(table.scores, np.float32), marks, _caps(table), part,
                            np.ones(n, np.int64), int(n_parts))
    return _midpoints(values), totals


def scores_by_threshold(table: PositionTable, scorer: Scorer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (G,), the metric at each (G,)): every distinct outcome of a threshold, as `sweep`;
    the scorer's metric (MAP@5 without one), a balanced one through its weighted sums."""
    n = len(table.cap)
    if scorer is None or scorer.metric.additive:
        thresholds, totals = sweep(table)
        return thresholds, totals[:, 0] / UNIT / max(n, 1)
    bucket, weight, n_buckets = scorer.buckets()
    values, sums = _sweep(np.ascontiguousarray(table.scores, np.float32), np.ascontiguousarray(table.marks, np.float64),
                          _caps(table), bucket, np.asarray(weight, np.float64), n_buckets)
    return _midpoints(values), scorer.metric.combine(sums)


def _best(scores: np.ndarray, allowed: np.ndarray, scorer: Scorer | None) -> int:
    """The state of the best score among the allowed ones; ties: the first (the highest threshold),
    within TIE for a balanced metric's float sums."""
    score = np.where(allowed, scores, -1.0)
    tie = 0.0 if scorer is None or scorer.metric.additive else TIE
    return int(np.flatnonzero(score >= score.max() - tie)[0])


def _midpoints(values: np.ndarray) -> np.ndarray:
    """A threshold inside each state's interval (values[g + 1], values[g]]: the midpoint, one above
    the highest score for the first state and one below the lowest for the last."""
    if len(values) == 1:
        return np.array([1.0])
    hi = values.copy()
    hi[0] = values[1] + 1.0
    lo = np.append(values[1:], values[-1] - 1.0)
    mid = (hi + lo) / 2
    # float32 comparisons decide at run time: a midpoint that rounds onto the lower score would let
    # it stay ahead, another state; the upper end is in the interval
    mid32 = mid.astype(np.float32)
    return np.where(mid32 > lo.astype(np.float32), mid32.astype(np.float64), hi)


def _allowed(thresholds: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """The states whose threshold lies within `bounds` (all when none does: then the nearest)."""
    if bounds is None:
        return np.ones(len(thresholds), bool)
    inside = (thresholds >= bounds[0]) & (thresholds <= bounds[1])
    if inside.any():
        return inside
    gap = np.maximum(bounds[0] - thresholds, thresholds - bounds[1])
    return gap == gap.min()


def best_threshold(table: PositionTable, bounds: tuple[float, float] | None = None,
                   scorer: Scorer | None = None) -> tuple[float, float]:
    """(threshold, score): the best threshold on these images under the scorer's metric (MAP@5
    without one), exactly, within `bounds` if given; ties: the highest."""
    if len(table.cap) == 0:
        return 1.0, 0.0
    thresholds, scores = scores_by_threshold(table, scorer)
    g = _best(scores, _allowed(thresholds, bounds), scorer)
    return float(thresholds[g]), float(scores[g])


def best_share(table: PositionTable, bounds: tuple[float, float] | None = None,
               scorer: Scorer | None = None) -> tuple[float, float]:
    """(share, score): the best threshold on these images as the share of them it puts the unknown
    label first in, within `bounds` (of the share) if given; ties: the highest threshold."""
    if len(table.cap) == 0:
        return 0.0, 0.0
    thresholds, scores = scores_by_threshold(table, scorer)
    shares = _shares(table, thresholds)
    g = _best(scores, _allowed(shares, bounds), scorer)
    return float(shares[g]), float(scores[g])


def _shares(table: PositionTable, thresholds: np.ndarray) -> np.ndarray:
    """The share of `table`'s images with the unknown label first at each threshold."""
    voted = table.cap == 0
    top1 = np.sort(table.scores[~voted, 0].astype(np.float32))
    below = np.searchsorted(top1, thresholds.astype(np.float32), side="left")  # top-1 < t
    return (below + voted.sum()) / max(len(table.cap), 1)


def cv_parts(truth: np.ndarray, unknown: int, n_parts: int, seed: int) -> np.ndarray:
    """Each image's cross-validation part (0..n_parts-1), dealt round-robin after a seeded shuffle,
    unknown and known images apart, so every part holds its share of both."""
    rng = np.random.default_rng([seed, n_parts])
    part = np.zeros(len(truth), np.int64)
    for group in (truth == unknown, truth != unknown):
        idx = rng.permutation(np.flatnonzero(group))
        part[idx] = np.arange(len(idx)) % n_parts
    return part


def cross_validated(table: PositionTable, part: np.ndarray, n_parts: int, bounds: tuple[float, float] | None = None,
                    by_share: bool = False, scorer: Scorer | None = None) -> tuple[float, np.ndarray]:
    """(score, marks): for each part, the best threshold on the other parts (within `bounds`) scored
    on this one, or with `by_share` that threshold's share of the other parts applied as the same
    share of this one; every image is scored by a rule it did not help choose. The scorer's metric
    (MAP@5 without one). Ties: the highest threshold."""
    if scorer is not None and not scorer.metric.additive:
        return _cross_validated_balanced(table, part, n_parts, bounds, by_share, scorer)
    thresholds, totals = sweep(table, part, n_parts)
    whole = totals.sum(axis=1)
    marks = np.empty(len(part))
    for k in range(n_parts):
        here, rest = np.flatnonzero(part == k), np.flatnonzero(part != k)
        fit = whole - totals[:, k]
        if by_share:
            shares = _shares(table.rows(rest), thresholds)
            g = int(np.argmax(np.where(_allowed(shares, bounds), fit, -1)))
            marks[here] = table.rows(here).marks_at(table.rows(here).threshold_for_share(shares[g]))
        else:
            g = int(np.argmax(np.where(_allowed(thresholds, bounds), fit, -1)))
            marks[here] = table.rows(here).marks_at(thresholds[g])
    return float(marks.mean()) if len(marks) else 0.0, marks


def _cross_validated_balanced(table: PositionTable, part: np.ndarray, n_parts: int, bounds, by_share: bool,
                              scorer: Scorer) -> tuple[float, np.ndarray]:
    """cross_validated for a metric that is not a mean of marks: each part's rule fitted on the other
    parts by its own sweep (their groups' weights are theirs), the metric taken over all parts' marks."""
    marks = np.empty(len(part))
    for k in range(n_parts):
        here, rest = np.flatnonzero(part == k), np.flatnonzero(part != k)
        mine = table.rows(here)
        if by_share:
            share, _ = best_share(table.rows(rest), bounds, scorer.rows(rest))
            marks[here] = mine.marks_at(mine.threshold_for_share(share))
        else:
            marks[here] = mine.marks_at(best_threshold(table.rows(rest), bounds, scorer.rows(rest))[0])
    return scorer.score(marks), marks
