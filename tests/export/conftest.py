"""Session fixtures: a tiny competition and one exported member (see tiny_members.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tiny_members import make_data, make_member  # this folder is on sys.path (pytest's rootdir-less import)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("export") / "competition")


@pytest.fixture(scope="session")
def twin_member(tmp_path_factory, tiny_data) -> Path:
    """A softmax member with flip-as-new-identity (2K logits), exported and run once per session."""
    from kit.export.member import export_member

    member = make_member(tmp_path_factory.mktemp("models") / "twin", tiny_data, head="softmax", flip="twin")
    export_member(member, batch=5, provider="cpu", progress=False, log=lambda s: None)
    return member
