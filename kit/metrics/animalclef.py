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
An image's mark is whether its label is right (its identity, or the unknown label for a new
animal): the score weighs each mark by 1 / (its group's images x its dataset's groups) into its
dataset's BAKS or BAUS sum (`buckets`), then takes the geometric means (`combine`): so the exact
unknown-label search sweeps it like an additive metric (kit.ranking). Not additive: its bootstrap
intervals resample images and recompute it (a resample changes the groups' sizes).
"""
from __future__ import annotations

import numpy as np

from kit.metrics import METRICS, Groups, Metric


@METRICS.register
class AnimalCLEF(Metric):
    name = "animalclef"
    title = "AnimalCLEF"
    help = ("AnimalCLEF 2025: per dataset sqrt(BAKS x BAUS), balanced accuracies on known identities and on "
            "unknown individuals, averaged over datasets; one label per image")
    k = 1
    additive = False
    credit = (1.0, 0.0, 0.0, 0.0, 0.0)

    @staticmethod
    def per_image(top: np.ndarray, truth: np.ndarray) -> np.ndarray:
        top = np.asarray(top)
        first = top[:, 0] if top.shape[1] else np.full(len(top), -1, np.int64)
        return (first == np.asarray(truth)).astype(np.float64)

    @classmethod
    def aggregate(cls, marks: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None = None) -> float:
        truth = np.asarray(truth)
        if not len(truth):
            return 0.0
        return float(cls.resampled(marks, truth, unknown, groups, np.arange(len(truth))[None, :])[0])

    @classmethod
    def resampled(cls, marks: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None,
                  idx: np.ndarray) -> np.ndarray:
        return _Parts.of(np.asarray(truth), unknown, groups).scores(np.asarray(marks, np.float64), idx)

    @classmethod
    def buckets(cls, truth: np.ndarray, unknown: int, groups: Groups | None) -> tuple[np.ndarray, np.ndarray, int]:
        """Bucket 2d: dataset d's BAKS sum, 2d + 1: its BAUS sum."""
        parts = _Parts.of(np.asarray(truth), unknown, groups)
        n, d = len(truth), parts.n_datasets
        bucket, weight = np.zeros(n, np.int64), np.zeros(n)
        for side, (group, n_groups, group_dataset) in enumerate(
                ((parts.known_group, parts.n_known, parts.group_dataset_k),
                 (parts.unknown_group, parts.n_unknown, parts.group_dataset_u))):
            rows = group >= 0
            size = np.bincount(group[rows], minlength=n_groups).astype(np.float64)
            per_dataset = np.bincount(group_dataset, minlength=d).astype(np.float64)
            g = group[rows]
            bucket[rows] = 2 * group_dataset[g] + side
            weight[rows] = 1.0 / (size[g] * per_dataset[group_dataset[g]])
        return bucket, weight, 2 * d

    @staticmethod
    def combine(sums: np.ndarray) -> np.ndarray:
        """Every dataset of the images is present: the mean of sqrt(BAKS x BAUS) over them (a side
        without images sums to 0, the scorer's NaN -> 0)."""
        return np.sqrt(np.maximum(sums[..., 0::2] * sums[..., 1::2], 0.0)).mean(axis=-1)


class _Parts:
    """The images' groups: each known image's (dataset, identity), each unknown image's
    (dataset, individual)."""

    def __init__(self, known_group, n_known, unknown_group, n_unknown, group_dataset_k, group_dataset_u,
                 dataset, n_datasets):
        self.known_group, self.n_known = known_group, n_known
        self.unknown_group, self.n_unknown = unknown_group, n_unknown
        self.group_dataset_k, self.group_dataset_u = group_dataset_k, group_dataset_u
        self.dataset, self.n_datasets = dataset, n_datasets

    @classmethod
    def of(cls, truth: np.ndarray, unknown: int, groups: Groups | None) -> "_Parts":
        n = len(truth)
        dataset = np.zeros(n, np.int64) if groups is None or groups.dataset is None else np.asarray(groups.dataset)
        individual = np.full(n, -1, np.int64) if groups is None or groups.individual is None else np.asarray(groups.individual)
        dataset = np.unique(dataset, return_inverse=True)[1].astype(np.int64).ravel()
        is_new = truth == unknown
        known_group, gd_k = _factorise(dataset, truth, ~is_new)
        unknown_group, gd_u = _factorise(dataset, individual, is_new)
        return cls(known_group, len(gd_k), unknown_group, len(gd_u), gd_k, gd_u, dataset,
                   int(dataset.max()) + 1 if n else 0)

    def scores(self, right: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(R,) the score on each resample (`idx`: (R, N) image indices), `right` each image's mark."""
        baks = _per_dataset(_group_means(idx, self.known_group, self.n_known, right), self.group_dataset_k,
                            self.n_datasets)
        baus = _per_dataset(_group_means(idx, self.unknown_group, self.n_unknown, right), self.group_dataset_u,
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

