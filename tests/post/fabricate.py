"""Test-side helpers for the post-processor: a fabricated competition (labels, folds, hashes;
no image files) and members made from noisy copies of the truth.

Until real members exist, a member is the truth one-hot times `signal` plus Gaussian noise:
`signal` high = a good model. Images and classes are shuffled per member so that alignment by
name, never by position, is exercised everywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kit.data.folds import make_folds, split, write_folds
from kit.predset import PredictionSet

UNKNOWN = "new_whale"


@dataclass
class FakeCompetition:
    root: Path
    train: pd.DataFrame  # image, label
    test: pd.DataFrame  # image, label (the truth)
    folds: pd.DataFrame  # image, label, fold
    hashes: dict  # image -> int
    known: list  # known labels, sorted
    leaked: dict  # test or val image -> the train image it duplicates

    def val(self, fold: int = 0) -> pd.DataFrame:
        f = self.folds
        return split(f, fold)[1][["image", "label"]]

    def truth(self, split_name: str, fold: int = 0) -> pd.DataFrame:
        return self.val(fold) if split_name == "val" else self.test


def _flip(h: int, bits, rng) -> int:
    for b in rng.choice(64, size=bits, replace=False):
        h ^= 1 << int(b)
    return h


def make_competition(root: Path, n_ids: int = 40, n_test: int = 60, seed: int = 0, unknown_share: float = 0.3,
                     n_leaks: int = 6, hashes: bool = True) -> FakeCompetition:
    """A humpback-layout competition directory without image files (prepare() never opens them)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    known = [f"w_{i:04d}" for i in range(n_ids)]
    rows = []
    k = 0
    for lab in known:
        for _ in range(int(rng.integers(1, 5))):
            rows.append((f"tr{k:05d}.jpg", lab))
            k += 1
    for _ in range(int(len(rows) * 0.4)):
        rows.append((f"tr{k:05d}.jpg", UNKNOWN))
        k += 1
    train = pd.DataFrame(rows, columns=["image", "label"])
    test_labels = [UNKNOWN if rng.random() < unknown_share else known[int(rng.integers(n_ids))] for _ in range(n_test)]
    test = pd.DataFrame({"image": [f"te{i:05d}.jpg" for i in range(n_test)], "label": test_labels})
    train.rename(columns={"image": "Image", "label": "Id"}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": test["image"], "Id": "new_whale"}).to_csv(root / "sample_submission.csv", index=False)
    test.rename(columns={"image": "Image", "label": "Id"}).to_csv(root / "test_truth.csv", index=False)
    folds = make_folds(train, UNKNOWN, n_folds=2, seed=seed)
    write_folds(root / "folds.csv", folds)

    table = {name: int(rng.integers(0, 2**63)) * 2 + int(rng.integers(2)) for name in list(train["image"]) + list(test["image"])}
    leaked = {}
    # duplicates: some test images (and val images) copy a train image of their identity (+ a few flipped bits)
    by_label = train.groupby("label")["image"].apply(list).to_dict()
    val0 = set(folds["image"][folds["fold"] == 0])
    for i in rng.permutation(n_test)[:n_leaks]:
        name, lab = test["image"].iloc[i], test["label"].iloc[i]
        src = by_label[lab][int(rng.integers(len(by_label[lab])))]
        table[name] = _flip(table[src], int(rng.integers(0, 2)), rng)
        leaked[name] = src
    for name in sorted(val0)[:n_leaks]:
        lab = train["label"][train["image"] == name].iloc[0]
        others = [im for im in by_label[lab] if im != name and im not in val0]
        if others:
            table[name] = table[others[0]]
            leaked[name] = others[0]
    if hashes:
        pd.DataFrame({"Image": list(table), "phash": [f"{h:016x}" for h in table.values()]}).to_csv(root / "hashes.csv", index=False)
    return FakeCompetition(root, train, test, folds, table, known, leaked)


def noisy_scores(truth: list[str], classes: list[str], signal: float, rng, noise: float = 1.0) -> np.ndarray:
    """(N, C) float32: `signal` at each image's true class (none for the unknown) plus N(0, noise)."""
    col = {c: j for j, c in enumerate(classes)}
    s = rng.normal(0.0, noise, (len(truth), len(classes))).astype(np.float32)
    for i, lab in enumerate(truth):
        if lab in col:
            s[i, col[lab]] += signal
    return s


def write_member(model_dir: Path, comp: FakeCompetition, view: str = "logit", signal: float = 3.0, seed: int = 0,
                 activation: str = "softmax", splits=("val", "test"), fold: int = 0, noise: float = 1.0) -> Path:
    """models/<name>/preds/<view>/<split>/ from noisy copies of the truth, rows and columns shuffled."""
    rng = np.random.default_rng(seed)
    classes = [comp.known[j] for j in rng.permutation(len(comp.known))]
    for sp in splits:
        t = comp.truth(sp, fold)
        order = rng.permutation(len(t))
        images = t["image"].iloc[order].tolist()
        labels = t["label"].iloc[order].tolist()
        s = noisy_scores(labels, classes, signal, rng, noise)
        if view == "cosine":
            s = np.tanh(s / 4).astype(np.float32)
        meta = {"kind": view, "model": model_dir.name, "split": sp, "fold": fold}
        if view == "logit":
            meta["activation"] = activation
        PredictionSet(s, images, classes, meta).save(model_dir / "preds" / view / sp)
    return model_dir


def write_recipe(path: Path, data: Path, members: list[dict], **extra) -> Path:
    recipe = {"name": "final", "data": str(data), "fold": 0, "members": members,
              "steps": {"leak": {"max_distance": 1}, "new_whale": {"threshold": 0.5}, "balance": {"margin": 0.3, "min_count": 2}},
              "pseudo": {"threshold": 0.5}, "output": str(path.parent / "submissions")}
    recipe.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
