"""The Happywhale-shaped synthetic competition: its layout and species, and the flow through it
(prepare, blend with per-species new_whale thresholds, score --check)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.data.competition import load_competition
from kit.data.prepare import prepare
from kit.data.synthetic import HAPPYWHALE_UNKNOWN, generate, plan
from kit.data.synthetic_photos import SPECIES
from kit.io import write_text

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def happy(tmp_path_factory) -> Path:
    data = generate(tmp_path_factory.mktemp("hw") / "data", size="tiny", seed=3, progress=False, layout="happywhale")
    prepare(data, 3, 0)
    return data


def test_the_happywhale_layout_and_its_species(happy):
    assert (happy / "train_images").is_dir() and (happy / "test_images").is_dir()
    train = pd.read_csv(happy / "train.csv")
    assert list(train.columns) == ["image", "species", "individual_id"]
    assert list(pd.read_csv(happy / "sample_submission.csv").columns) == ["image", "predictions"]
    comp = load_competition(happy)
    assert comp.layout.name == "happywhale" and comp.unknown == HAPPYWHALE_UNKNOWN and "species" in comp.train
    known = train[train.individual_id != HAPPYWHALE_UNKNOWN]
    assert all(len(i) == 12 for i in known.individual_id)
    assert set(train.species) <= set(SPECIES) and train.species.nunique() >= 6
    # an identity is one animal of one species (but for the planted conflicting duplicates)
    assert (known.groupby("individual_id").species.nunique() > 1).sum() <= 2
    meta = json.loads((happy / "synthetic.json").read_text())
    shares = [s["test_new"] for s in meta["species"].values() if s["test"] >= 3]
    assert max(shares) - min(shares) > 0.2  # the species differ in how often a test animal is new


def test_the_same_draw_as_the_2019_layout():
    """Species and names come from a stream of their own: the humpback plan of a seed is unchanged."""
    a, b = plan("tiny", 3), plan("tiny", 3, "happywhale")
    assert np.array_equal(a.animal, b.animal) and np.array_equal(a.label, b.label) and a.species is None
    assert len(set(zip(b.animal.tolist(), b.species.tolist()))) == len(set(b.animal.tolist()))  # one species per animal


def test_prepare_blend_and_score_check_with_per_species_thresholds(happy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    comp = load_competition(happy)
    folds = pd.read_csv(happy / "folds.csv")
    truth = pd.read_csv(happy / "test_truth.csv")
    ids = sorted(set(comp.train["label"]) - {comp.unknown})
    rng = np.random.default_rng(0)

    def guesses(images, labels, path):  # a teammate's top-5: right about two images in three
        rows = [" ".join(([lab] if rng.random() < 0.67 else []) + list(rng.choice(ids, 4, replace=False)))
                for lab in labels]
        write_text(path, pd.DataFrame({"image": images, "predictions": rows}).to_csv(index=False))
        return str(path)

    val = folds[folds.fold == 0]
    sub = guesses(truth.image, truth.individual_id, tmp_path / "mate.csv")
    val_sub = guesses(val.Image, val.Id, tmp_path / "mate_val.csv")  # folds.csv keeps Kaggle's 2019 names
    species = sorted(comp.train["species"].unique())
    recipe = {"name": "hw", "data": str(happy), "fold": 0, "output": "submissions",
              "members": [{"submission": sub, "val_submission": val_sub}],
              "steps": {"new_whale": {"threshold": 0.4},
                        "new_whale_groups": {"thresholds": {species[0]: 0.9, species[1]: 0.1}}},
              "pseudo": {"enabled": False}}
    write_text(tmp_path / "hw.yaml", json.dumps(recipe))
    run = lambda *args: subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    blend = run(str(ROOT / "scripts" / "blend.py"), "hw.yaml", "--no-report")
    assert blend.returncode == 0, blend.stderr
    assert "+ new_whale_groups" in blend.stdout
    check = run(str(ROOT / "scripts" / "score.py"), "--check", "submissions/hw.csv", "--data", str(happy))
    assert check.returncode == 0, check.stderr
    score = run(str(ROOT / "scripts" / "score.py"), "submissions/hw.csv", str(happy / "test_truth.csv"))
    assert score.returncode == 0 and "MAP@5" in score.stdout, score.stderr
    written = pd.read_csv(tmp_path / "submissions" / "hw.csv")
    assert list(written.columns) == ["image", "predictions"] and len(written) == len(truth)
