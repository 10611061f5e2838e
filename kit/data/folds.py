"""Local validation folds, the winners' scheme scaled to the dataset.

On the real 2019 data the top teams held out one image each of 512 identities (chosen among those
with two or more images, so the identity stays findable in train) plus 230 new_whale images, and
kept identities with a single image in train. `make_folds` builds `n_folds` such sets with disjoint
identities; `folds.csv` has columns `Image,Id,fold` where `fold` is the fold an image is held out
in, or -1 for images that always train.

Happywhale 2022's train.csv has no unknown rows at all: there the unknown images of a fold are the
only images of identities seen once (the 2022 winners' validation). Held out, such an identity is
new to the members that did not train on that fold, as a new individual is to the test set:
`fold_truth` scores it as the unknown label. folds.csv keeps its true identity, so every other fold
and a member trained on everything still learn it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.io import Outputs, read_csv, write_csv

# The real 2019 validation: 512 of the 2,931 ids with >= 2 images, and 230 new_whale images.
# `fold: all` in a recipe: every fold (an out-of-fold member; a blend of out-of-fold members)
ALL_FOLDS = "all"
HELD_OUT_ID_SHARE = 512 / 2931
UNKNOWN_PER_ID = 230 / 512
MIN_IDS_PER_FOLD = 100  # below this a fold's MAP@5 is too noisy to tune on


def make_folds(train: pd.DataFrame, unknown: str, n_folds: int = 3, seed: int = 0,
               unknown_share: float | None = None) -> pd.DataFrame:
    """Assign a validation fold to held-out images of `train` (columns image, label) → image, label, fold.
    `unknown_share`: the unknown label's share of each fold (default 2019's, 230 / 742 = 0.31): set it to
    the share you expect in the test set (Happywhale's differs), since thresholds fitted by share follow it."""
    if n_folds < 1:
        raise KitError(f"n_folds must be >= 1, got {n_folds}")
    if unknown_share is not None and not 0 <= unknown_share < 1:
        raise KitError(f"--unknown-share must be in [0, 1), got {unknown_share:g}")
    rng = np.random.default_rng(seed)
    counts = train["label"].value_counts()
    eligible = np.array(sorted(counts[(counts >= 2) & (counts.index != unknown)].index))
    per_fold = max(round(HELD_OUT_ID_SHARE * len(eligible)), MIN_IDS_PER_FOLD)
    per_fold = min(per_fold, len(eligible) // n_folds)
    if per_fold < 1:
        raise KitError(f"too few identities with two or more images ({len(eligible)}) for {n_folds} fold(s)")
    unknown_idx = np.flatnonzero(train["label"].to_numpy() == unknown)
    per_id = UNKNOWN_PER_ID if unknown_share is None else unknown_share / (1 - unknown_share)
    wanted = round(per_id * per_fold)
    per_fold_unknown = min(wanted, len(unknown_idx) // n_folds)

    fold = np.full(len(train), -1, dtype=np.int64)
    ids = rng.permutation(eligible)
    rows_by_label = train.groupby("label").indices
    unknown_perm = rng.permutation(unknown_idx)
    for f in range(n_folds):
        for label in ids[f * per_fold:(f + 1) * per_fold]:
            fold[rng.choice(rows_by_label[label])] = f
        fold[unknown_perm[f * per_fold_unknown:(f + 1) * per_fold_unknown]] = f
    if per_fold_unknown < wanted:  # too few unknown rows (Happywhale: none): identities seen once, new to their fold
        singles = np.array(sorted(counts[(counts == 1) & (counts.index != unknown)].index))
        per_fold_new = min(wanted - per_fold_unknown, len(singles) // n_folds)
        chosen = rng.permutation(singles)
        for f in range(n_folds):
            for label in chosen[f * per_fold_new:(f + 1) * per_fold_new]:
                fold[rows_by_label[label][0]] = f
    return pd.DataFrame({"image": train["image"].to_numpy(), "label": train["label"].to_numpy(), "fold": fold})


def fold_truth(folds: pd.DataFrame, held: pd.DataFrame, unknown: str) -> list[str]:
    """What each held-out row (of `folds`) should be answered: its identity, or `unknown` where that
    identity has no image outside the row's fold (new to the members that did not train on it)."""
    folds_of = folds.groupby("label")["fold"].agg(frozenset).to_dict()
    return [label if label == unknown or folds_of[label] - {f} else unknown
            for label, f in zip(held["label"], held["fold"])]


def held_unknown_share(folds: pd.DataFrame, held: pd.DataFrame, unknown: str) -> float:
    """The share of `held` rows validation answers with the unknown label (fold_truth); 0 for none."""
    truth = fold_truth(folds, held, unknown)
    return sum(label == unknown for label in truth) / len(truth) if truth else 0.0


def write_folds(path: str | Path, folds: pd.DataFrame, out: Outputs | None = None) -> None:
    """folds.csv in Kaggle's column names: Image,Id,fold (staged to `out` when given)."""
    write_csv(path, folds.rename(columns={"image": "Image", "label": "Id"}), out)


def read_folds(path: str | Path, train: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read folds.csv → image, label, fold; if `train` is given, check it covers the same images."""
    frame = read_csv(path, ("Image", "Id", "fold"), "validation folds")
    try:
        fold = frame["fold"].astype(int)
    except ValueError:
        raise KitError(f"{path}: column fold must hold integers") from None
    out = pd.DataFrame({"image": frame["Image"], "label": frame["Id"], "fold": fold.to_numpy()})
    if train is not None and set(out["image"]) != set(train["image"]):
        raise KitError(f"{path}: does not cover the images of train.csv; run `python scripts/prepare.py DIR` again")
    return out


def split(folds: pd.DataFrame, fold: int, path: str | Path = "folds.csv") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) for one fold; fold -1 means train on everything. `path`: the
    folds file, for the message."""
    if fold != -1 and fold not in set(folds["fold"]):
        raise KitError(f"{path}: the recipe's fold {fold} does not exist; it has folds {sorted(set(folds['fold']) - {-1})}")
    held = folds["fold"].to_numpy() == fold
    return folds[~held].reset_index(drop=True), folds[held].reset_index(drop=True)
