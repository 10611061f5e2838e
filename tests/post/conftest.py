"""Fixtures for the post-processor tests; the helpers they use live in fabricate.py (a module of its own
name: `from conftest import ...` would pick whichever folder's conftest pytest loaded last)."""
from __future__ import annotations

import pytest

from fabricate import make_competition, write_member, write_recipe


@pytest.fixture
def project(tmp_path):
    """A competition, two logit members and a cosine member, and a recipe using them all."""
    comp = make_competition(tmp_path / "data")
    m1 = write_member(tmp_path / "models" / "a", comp, "logit", signal=3.0, seed=1)
    m2 = write_member(tmp_path / "models" / "b", comp, "logit", signal=2.0, seed=2, activation="sigmoid")
    m3 = write_member(tmp_path / "models" / "c", comp, "cosine", signal=2.0, seed=3)
    members = [
        {"model": str(m1), "view": "logit", "weight": 1.0, "calibration": {"method": "softmax", "temperature": 1.0}},
        {"model": str(m2), "view": "logit", "weight": 0.5},
        {"model": str(m3), "view": "cosine", "weight": 0.5, "calibration": {"method": "affine", "scale": 8.0, "shift": -2.0}},
    ]
    recipe = write_recipe(tmp_path / "blends" / "final.yaml", comp.root, members)
    return {"root": tmp_path, "comp": comp, "recipe": recipe, "members": members}
