"""Fixtures for the training tests: a tiny competition a network can learn, and tiny recipes
(kit/testing.py's `LEARNABLE` competition and `make_tiny_recipe`).

The images are drawn, not random: each identity is a colour and a stripe count, so a loss can
actually go down in a few steps. Models are resnet18 at 1/8 of its width on 32x64 inputs, so a
whole training run takes seconds on two CPU cores.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kit.testing import LEARNABLE, make_competition, make_tiny_recipe

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_learnable_competition(root: Path, **kw) -> Path:
    return make_competition(root, **{**LEARNABLE, **kw})


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
