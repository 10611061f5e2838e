"""The tuner's fixtures; the helpers live in tune_project.py."""
import pytest
from tune_project import TuneProject


@pytest.fixture
def project(tmp_path) -> TuneProject:
    """A competition, three members (softmax logits, sigmoid logits, cosines), recipes over them."""
    return TuneProject(tmp_path)
