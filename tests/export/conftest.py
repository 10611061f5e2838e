"""Session fixtures: a tiny competition and one exported member (kit/testing.py makes both)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kit.testing import make_competition, make_member


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """8 identities x 3 images + 4 new_whale, 7 test images, boxes; folds.csv with 2 folds."""
    return make_competition(tmp_path_factory.mktemp("export") / "competition", n_ids=8, per_id=3, n_unknown=4,
                            n_test=7, boxes=True, folds=2, seed=1)


@pytest.fixture(scope="session")
def twin_member(tmp_path_factory, tiny_data) -> Path:
    """A softmax member with flip-as-new-identity (2K logits), exported and run once per session."""
    from kit.export.member import export_member

    member = make_member(tmp_path_factory.mktemp("models") / "twin", tiny_data, head="softmax", flip="twin")
    export_member(member, batch=5, provider="cpu", progress=False, log=lambda s: None)
    return member
