"""Fixtures for the training tests: a tiny competition a network can learn, and tiny recipes.

The images are drawn, not random: each identity is a colour and a stripe count, so a loss can
actually go down in a few steps. Models are resnet18 at 1/8 of its width on 32x64 inputs, so a
whole training run takes seconds on two CPU cores.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from kit.data.competition import load_competition
from kit.data.folds import make_folds, write_folds
from kit.train.recipe import Recipe, recipe_from_dict

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_BACKBONE = {"backbone": "resnet18", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


def draw_whale(rng: np.random.Generator, identity: int | None, size=(48, 96)) -> Image.Image:
    """A 'fluke' with an identity-specific colour and stripe count, jittered per photo."""
    h, w = size
    sea = tuple(int(v) for v in rng.integers(20, 90, 3))
    im = Image.new("RGB", (w, h), sea)
    d = ImageDraw.Draw(im)
    ident = identity if identity is not None else int(rng.integers(100, 10_000))
    colour = tuple(int(v) for v in np.random.default_rng(ident).integers(90, 255, 3))
    stripes = 1 + ident % 5
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    d.rectangle([8 + dx, 8 + dy, w - 8 + dx, h - 8 + dy], fill=colour)
    for s in range(stripes):
        x = 12 + dx + s * (w - 24) // stripes
        d.rectangle([x, 10 + dy, x + 3, h - 10 + dy], fill=(0, 0, 0))
    return im


def make_learnable_competition(root: Path, n_ids: int = 8, per_id: int = 4, n_unknown: int = 6, n_test: int = 4,
                               boxes: bool = True, folds: int = 2, seed: int = 0, size=(48, 96), grey: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    labels = [f"w_{i:04d}" for i in range(n_ids) for _ in range(per_id)] + ["new_whale"] * n_unknown
    idents = [i for i in range(n_ids) for _ in range(per_id)] + [None] * n_unknown
    names = [f"tr{i:04d}.jpg" for i in range(len(labels))]
    def draw(ident):
        im = draw_whale(rng, ident, size)
        return im.convert("L") if grey else im

    for name, ident in zip(names, idents):
        draw(ident).save(root / "train" / name)
    tests = [f"te{i:04d}.jpg" for i in range(n_test)]
    for i, name in enumerate(tests):
        draw(i % n_ids).save(root / "test" / name)
    pd.DataFrame({"Image": names, "Id": labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": tests, "Id": "new_whale"}).to_csv(root / "sample_submission.csv", index=False)
    if boxes:
        h, w = size
        pd.DataFrame({"Image": names + tests, "x0": 4, "y0": 4, "x1": w - 4, "y1": h - 4}).to_csv(
            root / "bounding_boxes.csv", index=False)
    if folds:
        comp = load_competition(root)
        write_folds(root / "folds.csv", make_folds(comp.train, comp.unknown, n_folds=folds, seed=seed))
    return root


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_tiny_recipe(data: Path | str, **over) -> Recipe:
    """A recipe that trains in seconds: tiny resnet18, 32x64 input, no augmentation by default."""
    base = {
        "name": "tiny", "data": str(data), "fold": 0, "seed": 0,
        "model": dict(TINY_BACKBONE),
        "head": {"type": "softmax", "embedding_dim": 16, "dropout": 0.0},
        "input": {"size": [32, 64]},
        "augment": {"probability": 0.0, "blur": 0.0, "motion_blur": 0.0, "greyscale": 0.0, "add": 0.0,
                    "multiply": [1.0, 1.0]},
        "sampling": {"batch_size": 8},
        "stages": [{"epochs": 2, "lr": 0.003}],
        "runtime": {"val_batch_size": 16},
    }
    return recipe_from_dict(deep_merge(base, over), source="tiny recipe")


@pytest.fixture(scope="session")
def learnable(tmp_path_factory) -> Path:
    """A shared, read-only learnable competition with folds.csv (tests that modify it make their own)."""
    return make_learnable_competition(tmp_path_factory.mktemp("comp") / "whales")


@pytest.fixture
def tiny_recipe():
    """Factory: tiny_recipe(data_dir, **overrides) -> Recipe (nested dicts merge into the defaults)."""
    return make_tiny_recipe


@pytest.fixture
def new_competition(tmp_path):
    """Factory: a fresh learnable competition this test may modify."""
    count = iter(range(100))
    return lambda **kw: make_learnable_competition(tmp_path / f"whales{next(count)}", **kw)
