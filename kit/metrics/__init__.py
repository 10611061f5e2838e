"""The competition's metric, a plug-in: one file each in this package, registered on import
(`METRICS`, like the blend's steps and calibrations). A blend recipe names its own (`metric:`,
default `map5`); blend, tune, the member table, gains.py and the report score by it.

Every metric scores label codes: `top` (N, k) predictions per image, best first (-1: an empty
slot), against `truth` (N,), the unknown label a code like any other (`unknown`), in two steps:
each image's *mark* (`per_image`: MAP@5's AP@5; top-1's and AnimalCLEF's hit, the first label
right), then the marks' `aggregate`, the score. An *additive* metric's aggregate is the marks'
mean (MAP@5, top-1): its paired bootstrap intervals resample the marks' differences and its exact
unknown-label search sums marks (kit.ranking.sweep). A balanced metric (AnimalCLEF's) weighs each
image by its group: its aggregate is a function of a few weighted sums of the marks (`buckets`,
`combine`), which the exact search sweeps just as well, and its intervals resample images and
recompute it (`resampled`). `Scorer` binds a metric to a set of images (truth, unknown label,
groups): what the pipeline carries.

- `map5`: Kaggle's MAP@5 (2018, 2019, Happywhale 2022), five labels per image.
- `top1`: the share of images whose first label is right (the unknown label included).
- `animalclef`: AnimalCLEF 2025's score, one label per image (kit/metrics/animalclef.py).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from kit.config import Registry, did_you_mean
from kit.data.competition import LAYOUTS, new_identity
from kit.errors import KitError
from kit.io import read_csv
from kit.metric import encode, read_labelled

METRICS = Registry("metric")
DEFAULT = "map5"
UNKNOWN_LABELS = ("new_whale", "new_individual")  # the unknown label of the 2019 layout, and Happywhale's and AnimalCLEF's


@dataclass(frozen=True)
class Groups:
    """What a balanced metric groups images by (both optional; additive metrics ignore them).

    individual: (N,) int, for an image whose truth is the unknown label, which unknown individual
        it shows (AnimalCLEF's solution keeps them apart); -1 or None: all unknown images one group.
    dataset: (N,) int, each image's dataset; the score is the mean of the datasets' scores.
    """

    individual: np.ndarray | None = None
    dataset: np.ndarray | None = None

    @classmethod
    def of_names(cls, individuals, unknown: np.ndarray, datasets) -> "Groups | None":
        """From names: each image's individual (counted only where `unknown`: the truth is the unknown
        label) and dataset, either None; None when both are."""
        individual = None if individuals is None else np.where(unknown, _codes(individuals), -1)
        dataset = None if datasets is None else _codes(datasets)
        return None if individual is None and dataset is None else cls(individual, dataset)

    def rows(self, idx: np.ndarray) -> "Groups":
        return Groups(None if self.individual is None else self.individual[idx],
                      None if self.dataset is None else self.dataset[idx])


def _codes(names) -> np.ndarray:
    """Each name's index among the sorted distinct names."""
    return np.unique(np.asarray(names, dtype=object), return_inverse=True)[1].astype(np.int64).ravel()


class Metric:
    """A competition's metric: subclass, set the class attributes, define `per_image` (and for a
    metric that is not the marks' mean: `aggregate`, `resampled`, `buckets`, `combine`), register."""

    name: ClassVar[str]
    title: ClassVar[str]  # what tables and messages call it: "MAP@5"
    help: ClassVar[str]  # one line for the docs table
    k: ClassVar[int]  # the labels per image a submission gives: 5 (a ranked list) or 1
    additive: ClassVar[bool] = True  # the score is the mean of the marks
    # an image's mark when its right label sits at rank 0, 1, ... (where P(new) puts the unknown
    # label: kit/post/new_whale_model.py maximises the expected mark)
    credit: ClassVar[tuple[float, ...]]

    @staticmethod
    def per_image(top: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """float64 (N,): each image's mark, a multiple of 1/60 (the exact search sums them as integers)."""
        raise NotImplementedError

    @classmethod
    def aggregate(cls, marks: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None = None) -> float:
        """The metric of N images from their marks."""
        marks = np.asarray(marks, np.float64)
        return float(marks.mean()) if len(marks) else 0.0

    @classmethod
    def score(cls, top: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None = None) -> float:
        """The metric over the N images."""
        truth = np.asarray(truth)
        return cls.aggregate(cls.per_image(np.asarray(top), truth), truth, unknown, groups)

    @classmethod
    def resampled(cls, marks: np.ndarray, truth: np.ndarray, unknown: int, groups: Groups | None,
                  idx: np.ndarray) -> np.ndarray:
        """(R,) the metric on R bootstrap resamples of the images, `idx` (R, N) their indices."""
        return np.asarray(marks, np.float64)[idx].mean(axis=1)

    @classmethod
    def buckets(cls, truth: np.ndarray, unknown: int, groups: Groups | None) -> tuple[np.ndarray, np.ndarray, int]:
        """(bucket (N,), weight (N,), B): the score is `combine` of the B sums of weight * mark by
        bucket. A metric that is not additive defines it (the threshold sweep reads it); an additive
        one is swept on its integer sums of marks (kit.ranking.sweep)."""
        raise NotImplementedError(f"{cls.name} is additive: kit.ranking sweeps its marks' sums")

    @staticmethod
    def combine(sums: np.ndarray) -> np.ndarray:
        """The score of each row of bucket sums (..., B) (see `buckets`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Scorer:
    """A metric bound to a set of images: their truth codes, the unknown label's code, their groups."""

    metric: type[Metric]
    truth: np.ndarray
    unknown: int
    groups: Groups | None = None

    def __len__(self) -> int:
        return len(self.truth)

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def title(self) -> str:
        return self.metric.title

    def marks(self, top: np.ndarray) -> np.ndarray:
        """Each image's mark for the predictions `top` (N, k)."""
        return self.metric.per_image(top, self.truth)

    def unknown_everywhere(self) -> np.ndarray:
        """The marks of the trivial answer, the unknown label alone in every image (the bar a blend must clear)."""
        return self.marks(np.full((len(self.truth), 1), self.unknown, np.int64))

    def score(self, marks: np.ndarray) -> float:
        """The metric of these images from their marks."""
        return self.metric.aggregate(marks, self.truth, self.unknown, self.groups)

    def rows(self, idx: np.ndarray) -> "Scorer":
        idx = np.asarray(idx)
        return Scorer(self.metric, self.truth[idx], self.unknown, None if self.groups is None else self.groups.rows(idx))

    def resampled(self, marks: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return self.metric.resampled(marks, self.truth, self.unknown, self.groups, idx)

    def buckets(self) -> tuple[np.ndarray, np.ndarray, int]:
        return self.metric.buckets(self.truth, self.unknown, self.groups)


def metric(name: str, where: str = "metric") -> type[Metric]:
    """The registered metric `name`; one KitError with "did you mean" otherwise."""
    if name not in METRICS:
        raise KitError(f"{where}: {name!r} is not a metric{did_you_mean(name, METRICS)}; "
                       f"the metrics: {', '.join(METRICS)}")
    return METRICS[name]


def metric_of_truth(truth: str | Path) -> str:
    """The metric a truth file's own columns name: AnimalCLEF's for its solution columns
    (`new_identity`), else MAP@5 (score.py without --metric)."""
    return "animalclef" if "new_identity" in read_csv(truth, (), "truth").columns else DEFAULT


def score_files(submission: str | Path, truth: str | Path, strict: bool = False, name: str = DEFAULT,
                unknown: str | None = None) -> tuple[float, int]:
    """The metric `name` of a submission CSV against a truth CSV (one label per image). Returns
    (score, n), n the truth's images. A header no layout uses, images the truth lacks, and truth
    images the submission lacks (each scoring 0, as on Kaggle's board) are warnings on stderr;
    `strict` refuses them, in one line. `unknown`: the unknown label (a balanced metric needs it;
    default: new_whale or new_individual, whichever the truth, else the submission, holds). `score.py --check --data DIR`
    checks a submission fully."""
    chosen = metric(name, "--metric")
    sub = read_labelled(submission, "submission")
    tru = read_labelled(truth, "truth")
    multi = tru[tru["labels"].map(len) != 1]
    if len(multi):
        raise KitError(f"{truth}: image {multi['image'].iloc[0]!r} has {len(multi['labels'].iloc[0])} labels; truth needs exactly one")
    problems = []
    header = tuple(read_csv(submission, (), "submission").columns[:2])
    if header not in {layout.submission_columns for layout in LAYOUTS}:
        known = " or ".join(",".join(layout.submission_columns) for layout in LAYOUTS)
        problems.append(f"header is {','.join(header)}, expected {known}")
    truth_images = set(tru["image"])
    if len(tru) and truth_images.isdisjoint(sub["image"]):  # not a score of 0: files that do not go together
        columns = lambda path, what: ",".join(read_csv(path, (), what).columns[:2])  # noqa: E731
        raise KitError(f"{truth}: none of its {len(truth_images):,} images is in {submission} (truth header "
                       f"{columns(truth, 'truth')}, submission header {columns(submission, 'submission')}): the "
                       f"truth of another competition, or its columns in another order?")
    extra = [im for im in sub["image"] if im not in truth_images]
    if extra:
        problems.append(f"{len(extra)} image(s) not in {truth} (not scored), e.g. {extra[0]!r}")
    by_image = dict(zip(sub["image"], sub["labels"]))
    missing = [im for im in tru["image"] if im not in by_image]
    if missing:
        problems.append(f"{len(missing)} image(s) of {truth} missing (scored 0), e.g. {missing[0]!r}")
    long = int((sub["labels"].map(len) > chosen.k).sum())
    if long:
        labels = f"{chosen.k} label" + ("s" if chosen.k > 1 else "")
        problems.append(f"{long} row(s) have more than {labels}; only the first {chosen.k} count ({chosen.name})")
    if strict and problems:
        raise KitError(f"{submission}: " + "; ".join(problems) + " (--strict)")
    for problem in problems:
        print(f"warning: {submission}: {problem}", file=sys.stderr)
    truth_labels = [l[0] for l in tru["labels"]]
    if unknown is None:  # the one the files use: the truth's, else the submission's (AnimalCLEF's truth names individuals)
        used = set(truth_labels) | {lab for labels in sub["labels"] for lab in labels[:1]}
        unknown = next((u for u in UNKNOWN_LABELS if u in used), UNKNOWN_LABELS[0])
    truth_labels, groups = _solution_groups(truth, truth_labels, unknown)
    vocab = {lab: i for i, lab in enumerate(sorted(set(truth_labels) | {unknown}))}
    top = encode([by_image.get(im, []) for im in tru["image"]], vocab, width=chosen.k)
    codes = np.array([vocab[l] for l in truth_labels], dtype=np.int64)
    return chosen.score(top, codes, vocab[unknown], groups), len(codes)


def _solution_groups(truth: str | Path, labels: list[str], unknown: str) -> tuple[list[str], Groups | None]:
    """AnimalCLEF's solution columns, when the truth CSV has them: `new_identity` (true: an animal new
    to the gallery, its `identity` the individual's own label, scored as the unknown label) and
    `dataset` (the score is the mean over datasets). Without them: the labels as they are, every
    unknown image one individual, one dataset."""
    frame = read_csv(truth, (), "truth")
    has_new = "new_identity" in frame.columns
    new = new_identity(frame["new_identity"], Path(truth)).to_numpy() if has_new else np.zeros(len(labels), bool)
    groups = Groups.of_names(labels if has_new else None, new,
                             frame["dataset"].astype(str).tolist() if "dataset" in frame.columns else None)
    return [unknown if n else lab for lab, n in zip(labels, new)], groups


def _load() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_load()
