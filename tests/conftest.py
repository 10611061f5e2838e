"""Shared fixtures: small competition directories made on the spot, in each Kaggle layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data.competition import LAYOUTS

LAYOUT = {layout.name: layout for layout in LAYOUTS}


def make_competition(root: Path, layout: str = "humpback", n_ids: int = 6, per_id: int = 3, n_unknown: int = 4,
                     n_test: int = 5, boxes: bool = False, seed: int = 0) -> Path:
    """A valid competition directory with tiny images: `n_ids` identities of `per_id` images each."""
    spec = LAYOUT[layout]
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / spec.train_dir).mkdir(exist_ok=True)
    (root / spec.test_dir).mkdir(exist_ok=True)
    labels = [f"w_{i:07x}" for i in range(n_ids) for _ in range(per_id)] + [spec.unknown] * n_unknown
    train_images = [f"tr{i:05d}.jpg" for i in range(len(labels))]
    test_images = [f"te{i:05d}.jpg" for i in range(n_test)]
    for folder, names in ((spec.train_dir, train_images), (spec.test_dir, test_images)):
        for name in names:
            pixels = rng.integers(0, 255, (24, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / name)
    image_col, label_col = spec.train_columns
    train = pd.DataFrame({image_col: train_images, label_col: labels})
    if layout == "happywhale":
        train.insert(1, "species", "humpback_whale")
    train.to_csv(root / "train.csv", index=False)
    sub_image, sub_pred = spec.submission_columns
    pd.DataFrame({sub_image: test_images, sub_pred: spec.unknown}).to_csv(root / "sample_submission.csv", index=False)
    if boxes:
        names = train_images + test_images
        pd.DataFrame({"Image": names, "x0": 2, "y0": 3, "x1": 40, "y1": 20}).to_csv(root / "bounding_boxes.csv", index=False)
    return root


@pytest.fixture
def competition(tmp_path):
    """Factory: competition(layout="humpback", **kw) -> a fresh directory."""
    count = iter(range(1000))
    return lambda layout="humpback", **kw: make_competition(tmp_path / f"{layout}{next(count)}", layout, **kw)
