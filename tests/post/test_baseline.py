"""A blend fitted on validation never scores below new_whale alone there, and says so in one line
when its members are too weak to beat it (kit/post/baseline.py, `new_whale: {fit: ...}`)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kit import ranking
from kit.errors import KitError
from kit.post import evaluation, fits, pipeline
from kit.post.inputs import prepare
from kit.post.recipe import load_recipe
from kit.testing import make_label_competition, write_blend_recipe, write_predictions

ROOT = Path(__file__).resolve().parents[2]


def members_project(tmp_path, signal: float, fit: dict | None = None, n: int = 2):
    """A competition and `n` logit members of the given strength (0: pure noise), fitted new_whale."""
    comp = make_label_competition(tmp_path / "data", n_ids=40, n_test=80)
    members = [{"model": str(write_predictions(tmp_path / "models" / f"m{i}", comp, "logit", signal=signal, seed=i)),
                "view": "logit"} for i in range(n)]
    recipe = write_blend_recipe(tmp_path / "blends" / "final.yaml", comp.root, members)
    d = yaml.safe_load(recipe.read_text())
    d["steps"]["new_whale"] = fit or {"fit": "threshold"}
    del d["steps"]["leak"]  # planted duplicates would score without any member
    recipe.write_text(yaml.safe_dump(d, sort_keys=False))
    return comp, recipe


@pytest.mark.parametrize("signal", [0.0, 0.5, 1.5, 4.0])
@pytest.mark.parametrize("fit", ["threshold", "share"])
def test_the_fitted_rule_never_scores_below_new_whale_alone_on_validation(tmp_path, signal, fit):
    _, path = members_project(tmp_path, signal, {"fit": fit})
    run = evaluation.evaluate(path, diagnostics=False)
    inputs, result = run.val
    trivial = float((inputs.truth == inputs.unknown_code).mean())
    assert result.score >= trivial - 1e-12
    key = "threshold" if fit == "threshold" else "proportion"
    step = run.recipe.steps.new_whale
    assert step.fit is None and getattr(step, key) is not None  # resolved: a number, carried to test
    # the exact best: no threshold on a grid of them does better on these images
    table = pipeline.position_table(run.recipe, inputs)
    if fit == "threshold":
        assert max(table.marks_at(t).mean() for t in np.linspace(0, 1, 101)) <= result.score + 1e-12


def test_too_weak_members_get_one_line_in_blend_py_and_the_report(tmp_path):
    _, path = members_project(tmp_path, signal=0.0)
    run = evaluation.evaluate(path, diagnostics=False)
    assert len([w for w in run.warnings if w.startswith("warning:")]) == 1
    line = run.warnings[0]
    bars = run.bars
    assert f"{bars.blend.mean():.4f}" in line and f"{bars.trivial.mean():.4f}" in line  # both numbers
    assert "cross-validated" in line and "the members are too weak" in line and "pretrained" in line

    out = subprocess.run([sys.executable, "scripts/blend.py", str(path), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])  # the numbers: the last line
    assert summary["warnings"][0] == line and line in out.stdout
    assert summary["val"]["fitted"]["key"] == "steps.new_whale.threshold"
    html = (tmp_path / "blends" / "submissions" / "final.html").read_text()
    assert html.index("class='warn'") < html.index("<section")  # on top, before the first section


def test_good_members_get_no_line(tmp_path):
    _, path = members_project(tmp_path, signal=4.0)
    run = evaluation.evaluate(path, diagnostics=False)
    assert not [w for w in run.warnings if w.startswith("warning:")]
    assert run.bars.over_trivial.low > 0


def test_a_blend_below_its_best_member_says_so(tmp_path):
    comp = make_label_competition(tmp_path / "data", n_ids=40, n_test=80)
    good = write_predictions(tmp_path / "models" / "good", comp, "logit", signal=4.0, seed=1)
    noise = write_predictions(tmp_path / "models" / "noise", comp, "logit", signal=0.0, seed=2)
    path = write_blend_recipe(tmp_path / "blends" / "final.yaml", comp.root,
                              [{"model": str(good), "view": "logit", "weight": 0.3},
                               {"model": str(noise), "view": "logit", "weight": 0.7}])
    run = evaluation.evaluate(path, diagnostics=False)
    notes = [w for w in run.warnings if w.startswith("note:")]
    assert len(notes) == 1 and "its best member alone (good/logit" in notes[0]


def test_the_cross_validated_score_is_each_part_scored_by_the_others_threshold(tmp_path):
    _, path = members_project(tmp_path, signal=1.5)
    recipe = pipeline.with_weights(load_recipe(path), inputs := prepare(load_recipe(path), "val"))
    bars = fits.judge(recipe, inputs)
    n_parts = recipe.tune.parts
    part = ranking.cv_parts(inputs.truth, inputs.unknown_code, n_parts, recipe.tune.seed)
    table = pipeline.position_table(pipeline.unfitted(recipe), inputs)
    for k in range(n_parts):  # slow: fit on the other parts, score this one
        threshold, _ = ranking.best_threshold(table.rows(np.flatnonzero(part != k)))
        here = np.flatnonzero(part == k)
        assert np.allclose(bars.blend[here], table.rows(here).marks_at(threshold))


def test_a_fit_without_validation_is_one_clear_error(tmp_path):
    _, path = members_project(tmp_path, signal=2.0)
    d = yaml.safe_load(path.read_text())
    d["fold"] = -1
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(KitError, match="steps.new_whale.fit needs the validation split"):
        evaluation.evaluate(path, diagnostics=False)
    with pytest.raises(KitError, match="give one of threshold, proportion, fit, model, not more"):
        d["steps"]["new_whale"] = {"fit": "threshold", "threshold": 0.4}
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        load_recipe(path)


def test_tune_py_says_it_of_the_tuned_recipe(tmp_path):
    from kit.tune.study import tune

    _, weak = members_project(tmp_path / "weak", signal=0.0)
    s = tune(weak, trials=4, storage=f"sqlite:///{tmp_path / 'weak.db'}", progress=False)
    assert len(s.warnings) == 1 and s.warnings[0].startswith("warning: the tuned blend scores MAP@5")
    assert "first in" in s.warnings[0] and s.warnings[0] in s.table()
    _, strong = members_project(tmp_path / "strong", signal=4.0)
    assert not [w for w in tune(strong, trials=4, storage=f"sqlite:///{tmp_path / 'strong.db'}", progress=False).warnings
                if w.startswith("warning:")]
