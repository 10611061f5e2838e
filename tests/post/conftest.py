"""Fixtures for the post-processor tests; the fabricators live in kit/testing.py."""
from __future__ import annotations

import pytest

from kit.testing import make_label_competition, write_blend_recipe, write_predictions


@pytest.fixture
def project(tmp_path):
    """A competition, two logit members and a cosine member, and a recipe using them all."""
    comp = make_label_competition(tmp_path / "data")
    m1 = write_predictions(tmp_path / "models" / "a", comp, "logit", signal=3.0, seed=1)
    m2 = write_predictions(tmp_path / "models" / "b", comp, "logit", signal=2.0, seed=2, activation="sigmoid")
    m3 = write_predictions(tmp_path / "models" / "c", comp, "cosine", signal=2.0, seed=3)
    members = [
        {"model": str(m1), "view": "logit", "weight": 1.0, "calibration": {"method": "softmax", "temperature": 1.0}},
        {"model": str(m2), "view": "logit", "weight": 0.5},
        {"model": str(m3), "view": "cosine", "weight": 0.5, "calibration": {"method": "affine", "scale": 8.0, "shift": -2.0}},
    ]
    recipe = write_blend_recipe(tmp_path / "blends" / "final.yaml", comp.root, members)
    return {"root": tmp_path, "comp": comp, "recipe": recipe, "members": members}
