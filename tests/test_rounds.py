"""Pseudo-label rounds on `synthetic tiny` (the generator's smallest competition, with its test
truth): two rounds of retraining, exporting, blending and selecting, each round trained on the
pseudo-labels of the one before, each round's gain measured on validation and on the test truth."""
from pathlib import Path

import pytest
import yaml

from kit.data.prepare import prepare
from kit.data.synthetic import SIZES, generate
from kit.errors import KitError
from kit.export.member import export_member
from kit.rounds import format_rounds, pseudo_rounds
from kit.testing import make_tiny_recipe, write_blend_recipe
from kit.train.loop import train
from kit.train.recipe import load_recipe

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

N_TEST = SIZES["tiny"].n_test


@pytest.fixture
def blend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = generate(Path("data"), size="tiny", seed=0, progress=False)
    prepare(data, n_folds=2, echo=lambda line: None)
    recipe = make_tiny_recipe(data, name="m", stages=[{"epochs": 1, "lr": 0.003}], sampling={"batch_size": 16})
    train(recipe, out=Path("models/m"), progress=False)
    export_member(Path("models/m"), progress=False, log=lambda line: None)
    # no steps: every test image's first label is its top-1 identity, so a low threshold selects them all
    return write_blend_recipe(Path("blends/final.yaml"), data, [{"model": "models/m", "view": "logit"},
                                                                {"model": "models/m", "view": "cosine"}],
                              steps={}, pseudo={"threshold": 0.0}, output="submissions")


def test_two_rounds_each_trained_on_the_last_rounds_pseudo_labels(blend):
    said = []
    rows = pseudo_rounds(blend, 2, echo=said.append)
    assert [r.round for r in rows] == [0, 1, 2]
    assert rows[0].pseudo_labels_written == N_TEST and 0 < rows[1].pseudo_labels_trained <= N_TEST  # less the fold's held-out ids
    assert load_recipe("models/m-pl1/recipe.yaml").extra_train == "submissions/final.pseudo.csv"
    assert load_recipe("models/m-pl2/recipe.yaml").extra_train == "submissions/final-pl1.pseudo.csv"
    second = yaml.safe_load(Path("blends/final-pl2.yaml").read_text())
    assert second["name"] == "final-pl2" and [m["model"] for m in second["members"]] == ["models/m-pl2"] * 2
    assert Path("submissions/final-pl2.csv").is_file() and Path("models/m-pl2/preds/logit/val").is_dir()
    assert all(r.val_gain is not None for r in rows[1:])  # the validation images: the same every round
    assert rows[0].test.marks is not None and all(r.test_gain is not None for r in rows[1:])  # the test truth
    assert all(0 <= r.pseudo_right <= 1 for r in rows)  # synthetic tiny has its test truth
    table = format_rounds(rows).splitlines()
    assert len(table) == 5 and table[1].startswith("0 ") and table[3].startswith("2 ")
    # again: every round is reused (trained, exported), the numbers the same
    again = pseudo_rounds(blend, 2, echo=said.append)
    assert [r.val_score for r in again] == [r.val_score for r in rows]
    assert any("(resumed)" in line for line in said)
    assert sum("models/m-pl1: training" in line for line in said) == 2  # once a run, though the blend has two views


def test_rounds_need_pseudo_labels(tmp_path):
    """Checked before anything trains: on members made of noisy truth, no network needed."""
    from kit.testing import make_label_competition, write_predictions

    comp = make_label_competition(tmp_path / "data")
    member = write_predictions(tmp_path / "models" / "a", comp, "logit", signal=2.5, seed=1)
    on = write_blend_recipe(tmp_path / "blends" / "on.yaml", comp.root, [{"model": str(member), "view": "logit"}])
    off = write_blend_recipe(tmp_path / "blends" / "off.yaml", comp.root, [{"model": str(member), "view": "logit"}],
                             name="off", pseudo={"enabled": False})
    with pytest.raises(KitError, match="pseudo is off"):
        pseudo_rounds(off, 1)
    with pytest.raises(KitError, match="--rounds must be 1 to 10, got 0"):
        pseudo_rounds(on, 0)
    with pytest.raises(KitError, match="--rounds must be 1 to 10, got 20"):
        pseudo_rounds(on, 20)
    d = yaml.safe_load(on.read_text())
    d["pseudo"] = {"threshold": 1.0}  # no confidence is above it: the CSV has its header and no row
    on.write_text(yaml.safe_dump(d, sort_keys=False))
    said = []
    rows = pseudo_rounds(on, 1, echo=said.append)  # stopped before training: it needs no network
    assert len(rows) == 1 and rows[0].pseudo_labels_written == 0
    assert any("round 1: not run: round 0 selected no pseudo-label above its cut (pseudo.threshold 1)" in line
               for line in said), said


def test_a_gain_is_after_minus_before():
    import numpy as np

    from kit.metrics import Scorer, metric
    from kit.post.pipeline import Result, gain_over

    def result(marks, n=50):
        return Result([], [], 0, np.zeros((n, 5), np.int64), np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float32),
                      np.empty((n, 0), np.int64), np.zeros(n, bool), None, marks=marks,
                      scorer=Scorer(metric("map5"), np.zeros(n, np.int64), 0))

    assert gain_over(result(np.zeros(50)), result(np.ones(50))).value == 1.0
    assert gain_over(result(np.zeros(50)), result(None)) is None


def test_a_round_that_cannot_reach_its_precision_is_not_run(blend):
    """pseudo.precision: the cut is measured on validation; where none reaches the target no
    pseudo-labels are written and no round trains on them."""
    d = yaml.safe_load(Path(blend).read_text())
    d["pseudo"] = {"precision": 0.999}
    Path(blend).write_text(yaml.safe_dump(d, sort_keys=False))
    said = []
    rows = pseudo_rounds(blend, 2, echo=said.append)
    assert len(rows) == 1 and rows[0].gate["threshold"] is None and rows[0].pseudo_labels_written == 0
    assert any("round 1: not run" in line and "precision 0.999" in line for line in said)
    assert not Path("models/m-pl1").exists() and not Path("submissions/final.pseudo.csv").exists()
    d["pseudo"] = {"precision": 0.01}  # any cut reaches it: the loosest keeps every eligible image
    Path(blend).write_text(yaml.safe_dump(d, sort_keys=False))
    from kit.post.files import blend_files

    lines = []
    run = blend_files(blend, echo=lines.append, diagnostics=False)
    gate = run.summary["pseudo_gate"]
    assert gate["threshold"] is not None and gate["kept"] > 0 and any(line.startswith("pseudo gate: ") for line in lines)
    assert run.summary["pseudo_count"] > 0
