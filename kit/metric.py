"""MAP@5 with Kaggle's definition, and reading/checking submissions.

One true label per image; an image scores 1/rank of the first correct label among its first
five, else 0. The unknown label is scored like any other; a repeated label still uses up its
rank. This is the one scorer: blend, tune and scripts/score.py all call `map5`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kit.data.competition import LAYOUTS
from kit.errors import KitError
from kit.io import read_csv

K = 5
_RANK_WEIGHT = np.array([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])


def average_precision(top: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image AP@5. `top` is (N, k<=5) int label codes (-1 for an empty slot), `truth` (N,)."""
    top = np.asarray(top)[:, :K]
    hit = top == np.asarray(truth)[:, None]
    first = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), _RANK_WEIGHT[first], 0.0)


def map5(top: np.ndarray, truth: np.ndarray) -> float:
    """MAP@5 over N images: one vectorised pass, no loop per image."""
    if len(truth) == 0:
        return 0.0
    return float(average_precision(top, truth).mean())


def encode(label_lists: Sequence[Sequence[str]], vocab: dict[str, int], width: int = K) -> np.ndarray:
    """Label strings → (N, width) int codes; labels absent from vocab get -2 (never a hit), empty slots -1."""
    out = np.full((len(label_lists), width), -1, dtype=np.int64)
    for i, labels in enumerate(label_lists):
        for j, lab in enumerate(labels[:width]):
            out[i, j] = vocab.get(lab, -2)
    return out


def read_labelled(path: str | Path, what: str) -> pd.DataFrame:
    """A two-column CSV (image, space-separated labels) in any layout's names → image, labels."""
    frame = read_csv(path, (), what)
    if frame.shape[1] < 2:
        raise KitError(f"{path}: expected two columns (image, labels), found {','.join(frame.columns)}")
    image_col, label_col = frame.columns[0], frame.columns[1]
    dup = frame[image_col][frame[image_col].duplicated()]
    if len(dup):
        raise KitError(f"{path}: image {dup.iloc[0]!r} appears more than once")
    return pd.DataFrame({"image": frame[image_col], "labels": frame[label_col].str.split()})


def score_files(submission: str | Path, truth: str | Path, strict: bool = False) -> tuple[float, int]:
    """MAP@5 of a submission CSV against a truth CSV (one label per image). Returns (map5, n), n the
    truth's images. A header no layout uses, images the truth lacks, and truth images the
    submission lacks (each scoring 0, as on Kaggle's board) are warnings on stderr; `strict`
    refuses them, in one line. `score.py --check --data DIR` checks a submission fully."""
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
    long = int((sub["labels"].map(len) > K).sum())
    if long:
        problems.append(f"{long} row(s) have more than {K} labels; only the first {K} count")
    if strict and problems:
        raise KitError(f"{submission}: " + "; ".join(problems) + " (--strict)")
    for problem in problems:
        print(f"warning: {submission}: {problem}", file=sys.stderr)
    truth_labels = [l[0] for l in tru["labels"]]
    vocab = {lab: i for i, lab in enumerate(sorted(set(truth_labels)))}
    top = encode([by_image.get(im, []) for im in tru["image"]], vocab)
    codes = np.array([vocab[l] for l in truth_labels])
    return map5(top, codes), len(codes)


def check_submission(submission: str | Path, competition) -> list[str]:
    """Everything wrong with a submission for `competition` (a kit.data.Competition); [] if valid."""
    path = Path(submission)
    frame = read_csv(path, (), "submission")
    problems: list[str] = []
    expected = list(competition.layout.submission_columns)
    if list(frame.columns) != expected:
        problems.append(f"header is {','.join(frame.columns)}, expected {','.join(expected)}")
        if frame.shape[1] < 2:
            return problems
    image_col, label_col = frame.columns[0], frame.columns[1]
    test = set(competition.test_images)
    counts = frame[image_col].value_counts()
    if (counts > 1).any():
        problems.append(f"{int((counts > 1).sum())} image(s) listed more than once, e.g. {counts[counts > 1].index[0]!r}")
    unknown_images = sorted(set(frame[image_col]) - test)
    if unknown_images:
        problems.append(f"{len(unknown_images)} image(s) not in the test set, e.g. {unknown_images[0]!r}")
    absent = sorted(test - set(frame[image_col]))
    if absent:
        problems.append(f"{len(absent)} test image(s) missing, e.g. {absent[0]!r}")
    labels = frame[label_col].str.split()
    n = labels.map(len)
    if ((n < 1) | (n > K)).any():
        bad = frame[image_col][(n < 1) | (n > K)]
        problems.append(f"{len(bad)} row(s) without 1-{K} labels, e.g. {bad.iloc[0]!r}")
    valid = set(competition.train["label"]) | {competition.unknown}
    strange = sorted({lab for ls in labels for lab in ls} - valid)
    if strange:
        problems.append(f"{len(strange)} label(s) neither in train nor {competition.unknown!r}, e.g. {strange[0]!r}")
    return problems
