"""MAP@5 with Kaggle's definition, and reading/checking submissions.

One true label per image; an image scores 1/rank of the first correct label among its first
five, else 0. The unknown label is scored like any other; a repeated label still uses up its
rank. This is the one MAP@5: blend, tune and training's validation all call it; scripts/score.py
scores files by any registered metric (kit/metrics/, `score_files`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

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
    k = competition.layout.labels_per_row  # five for MAP@5, AnimalCLEF's one
    if ((n < 1) | (n > k)).any():
        bad = frame[image_col][(n < 1) | (n > k)]
        wanted = "exactly 1 label" if k == 1 else f"1-{k} labels"
        problems.append(f"{len(bad)} row(s) without {wanted}, e.g. {bad.iloc[0]!r}")
    valid = set(competition.train["label"]) | {competition.unknown}
    strange = sorted({lab for ls in labels for lab in ls} - valid)
    if strange:
        problems.append(f"{len(strange)} label(s) neither in train nor {competition.unknown!r}, e.g. {strange[0]!r}")
    return problems
