"""AnimalCLEF 2025's score (LifeCLEF, on Kaggle: lynxes, salamanders, sea turtles), as the
organisers' scorer computes it (wildlife-datasets `wildlife_datasets/metrics`: BAKS, BAUS; the
Kaggle scorer `score`), for one label per image, an identity or the unknown label
(`new_individual`):

- BAKS, balanced accuracy on known samples: over the images whose animal is in the gallery, the
  share predicted with exactly that identity, per identity, averaged over identities (the
  unknown label for a known animal is wrong like any other);
- BAUS, balanced accuracy on unknown samples: over the images of animals new to the gallery, the
  share predicted as the unknown label, per unknown individual, averaged over individuals;
- per dataset sqrt(BAKS * BAUS) (a dataset without known, or without unknown, images scores 0:
  the scorer turns the NaN into 0), and the score is the mean over the datasets.

Labelling every image unknown gives BAKS 0 and scores 0 (an arithmetic mean would give 0.5).
Not additive: its bootstrap intervals resample images and recompute it; its unknown-label
threshold is found by an exact sweep (`best_threshold`).
"""
from __future__ import annotations

import numpy as np

from kit.metrics import METRICS, Groups, Metric


@METRICS.register
class AnimalCLEF(Metric):
    name = "animalclef"
    help = ("AnimalCLEF 2025: per dataset sqrt(BAKS x BAUS), balanced accuracies on known identities and on "
            "unknown individuals, averaged over datasets; one label per image")
    k = 1
    additive = False

    @classmethod
    def score(cls, top: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None = None) -> float:
        truth = np.asarray(truth)
        if not len(truth):
            return 0.0
        return float(cls.resampled(top, truth, unknown, groups, np.arange(len(truth))[None, :])[0])

    @classmethod
    def resampled(cls, top: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None,
                  idx: np.ndarray) -> np.ndarray:
        parts = _Parts.of(_first(top), np.asarray(truth), unknown, groups)
        return parts.scores(idx)


def _first(top: np.ndarray) -> np.ndarray:
    top = np.asarray(top)
    return top[:, 0] if top.shape[1] else np.full(len(top), -1, np.int64)


class _Parts:
    """The images' groups: each known image's (dataset, identity), each unknown image's
    (dataset, individual), and whether its label is right."""

    def __init__(self, known_group, n_known, unknown_group, n_unknown, right, group_dataset_k, group_dataset_u,
                 dataset, n_datasets):
        self.known_group, self.n_known = known_group, n_known
        self.unknown_group, self.n_unknown = unknown_group, n_unknown
        self.right = right
        self.group_dataset_k, self.group_dataset_u = group_dataset_k, group_dataset_u
        self.dataset, self.n_datasets = dataset, n_datasets

    @classmethod
    def of(cls, pred: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None) -> "_Parts":
        n = len(truth)
        dataset = np.zeros(n, np.int64) if groups is None or groups.dataset is None else np.asarray(groups.dataset)
        individual = np.full(n, -1, np.int64) if groups is None or groups.individual is None else np.asarray(groups.individual)
        dataset = np.unique(dataset, return_inverse=True)[1].astype(np.int64)
        is_new = truth == unknown
        right = np.where(is_new, pred == unknown, pred == truth).astype(np.float64)
        known_group, gd_k = _factorise(dataset, truth, ~is_new)
        unknown_group, gd_u = _factorise(dataset, individual, is_new)
        return cls(known_group, len(gd_k), unknown_group, len(gd_u), right, gd_k, gd_u, dataset,
                   int(dataset.max()) + 1 if n else 0)

    def scores(self, idx: np.ndarray) -> np.ndarray:
        """(R,) the score on each resample (`idx`: (R, N) image indices)."""
        baks = _per_dataset(_group_means(idx, self.known_group, self.n_known, self.right), self.group_dataset_k,
                            self.n_datasets)
        baus = _per_dataset(_group_means(idx, self.unknown_group, self.n_unknown, self.right), self.group_dataset_u,
                            self.n_datasets)
        present = _group_means(idx, self.dataset, self.n_datasets, np.ones(len(self.dataset))) > 0  # NaN > 0: False
        normalised = np.sqrt(baks * baus)
        return np.where(present, normalised, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _factorise(dataset: np.ndarray, key: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each image's group among `rows` by (dataset, key), -1 elsewhere; each group's dataset)."""
    group = np.full(len(dataset), -1, np.int64)
    if not rows.any():
        return group, np.zeros(0, np.int64)
    pairs = np.stack([dataset[rows], np.asarray(key)[rows]], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    group[rows] = inverse.ravel()
    return group, uniq[:, 0]


def _group_means(idx: np.ndarray, group: np.ndarray, n_groups: int, value: np.ndarray) -> np.ndarray:
    """(R, G) the mean of `value` over each group's images in each resample; NaN where a resample holds none."""
    r = idx.shape[0]
    out = np.full((r, n_groups), np.nan)
    if n_groups == 0:
        return out
    g = group[idx]
    keep = g >= 0
    keys = (np.arange(r)[:, None] * n_groups + g)[keep]
    count = np.bincount(keys, minlength=r * n_groups).reshape(r, n_groups)
    total = np.bincount(keys, weights=value[idx][keep], minlength=r * n_groups).reshape(r, n_groups)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _per_dataset(means: np.ndarray, group_dataset: np.ndarray, n_datasets: int) -> np.ndarray:
    """(R, D): each dataset's mean over its groups present in the resample; 0 with none (the scorer's NaN -> 0)."""
    present = ~np.isnan(means)
    onehot = np.zeros((len(group_dataset), n_datasets))
    onehot[np.arange(len(group_dataset)), group_dataset] = 1.0
    total, count = np.where(present, means, 0.0) @ onehot, present.astype(np.float64) @ onehot
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def best_threshold(top1_scores: np.ndarray, top1_codes: np.ndarray, truth: np.ndarray, unknown: int,
                   groups: Groups | None = None) -> tuple[float, float]:
    """(threshold, score): the unknown label first on every image whose top-1 score is below the
    threshold, the threshold that maximises the score, found exactly by one sweep over the images
    sorted by score (each step moves one image to the unknown label: one group's count changes).
    Of equal scores, the highest threshold's interval is kept, its midpoint returned."""
    scores = np.asarray(top1_scores, np.float64)
    parts = _Parts.of(np.asarray(top1_codes), np.asarray(truth), unknown, groups)
    n = len(scores)
    if n == 0:
        return 0.0, 0.0
    is_new = np.asarray(truth) == unknown
    hits_k = np.bincount(parts.known_group[~is_new], weights=parts.right[~is_new], minlength=parts.n_known)
    size_k = np.bincount(parts.known_group[~is_new], minlength=parts.n_known).astype(np.float64)
    hits_u = np.bincount(parts.unknown_group[is_new], weights=parts.right[is_new], minlength=parts.n_unknown)
    size_u = np.bincount(parts.unknown_group[is_new], minlength=parts.n_unknown).astype(np.float64)
    d = parts.n_datasets
    groups_k = np.bincount(parts.group_dataset_k, minlength=d).astype(np.float64)
    groups_u = np.bincount(parts.group_dataset_u, minlength=d).astype(np.float64)
    sum_k = np.bincount(parts.group_dataset_k, weights=hits_k / np.maximum(size_k, 1), minlength=d)
    sum_u = np.bincount(parts.group_dataset_u, weights=hits_u / np.maximum(size_u, 1), minlength=d)

    def total() -> float:
        baks = np.divide(sum_k, groups_k, out=np.zeros(d), where=groups_k > 0)
        baus = np.divide(sum_u, groups_u, out=np.zeros(d), where=groups_u > 0)
        return float(np.sqrt(np.maximum(baks * baus, 0.0)).mean())  # a float sum may end a hair below 0

    order = np.argsort(scores, kind="mergesort")
    best, best_at = total(), -np.inf  # threshold at or below every score: no image moves
    i = 0
    while i < n:
        s = scores[order[i]]
        while i < n and scores[order[i]] == s:  # every image of this score moves to the unknown label
            j = order[i]
            now = 1.0 if is_new[j] else 0.0
            if now != parts.right[j]:
                if is_new[j]:
                    g = parts.unknown_group[j]
                    sum_u[parts.group_dataset_u[g]] += (now - parts.right[j]) / size_u[g]
                else:
                    g = parts.known_group[j]
                    sum_k[parts.group_dataset_k[g]] += (now - parts.right[j]) / size_k[g]
            i += 1
        value = total()
        if value >= best - 1e-12:  # of equal scores, the highest threshold (as kit.ranking.best_threshold)
            best, best_at = max(value, best), s
    if best_at == -np.inf:
        return float(scores.min()), best  # at the lowest score: no image below it
    above = scores[scores > best_at]
    return float((best_at + above.min()) / 2 if len(above) else best_at + 1.0), best
