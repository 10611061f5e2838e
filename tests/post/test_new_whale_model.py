"""P(new) and where the unknown label goes (kit/post/new_whale_model.py), and `fit: probability`
through the pipeline, blend.py and the tuner."""
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kit.errors import KitError
from kit.post import new_whale_model as nm
from kit.post import evaluation, fits
from kit.post.files import blend_files
from kit.post.recipe import load_recipe
from kit.ranking import cv_parts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tune"))
from tune_project import TuneProject, edit_yaml  # noqa: E402


def expected_ap(q: float, pi: np.ndarray, at: int) -> float:
    """Brute force: the unknown label at `at` among the identities in their order, each label's
    chance to be the answer over its rank, summed over the top 5."""
    chances = list((1 - q) * pi)
    chances.insert(at, q)
    return sum(c / (r + 1) for r, c in enumerate(chances[:5]))


def test_the_place_maximises_the_expected_ap_at_5():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        k = int(rng.choice([3, 5, 10]))
        pi = rng.dirichlet(np.full(k, rng.choice([0.1, 0.5, 2.0]))) * rng.uniform(0.2, 1.0)
        if rng.random() < 0.7:  # mostly in rank order, as a fitted model gives them; sometimes not
            pi = np.sort(pi)[::-1]
        q = float(rng.uniform(0.001, 0.999))
        at = int(nm.place(np.array([q]), pi[None, :])[0])
        best = max(expected_ap(q, pi, r) for r in range(6))
        assert expected_ap(q, pi, at) == pytest.approx(best, abs=1e-12)
        if np.all(np.diff(pi) <= 0):  # in rank order: before the first identity less likely than new
            assert at == min(int(((1 - q) * pi >= q).sum()), 5) or expected_ap(q, pi, at) == pytest.approx(
                expected_ap(q, pi, min(int(((1 - q) * pi >= q).sum()), 5)), abs=1e-12)


def test_features_by_hand():
    scores = np.array([[0.6, 0.2, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]], np.float32)
    firsts = np.array([[3, 3, 9], [5, 1, 1]])  # members' first labels
    x = nm.features(scores, np.array([3, 1]), firsts, np.array([0.5, 0.25, 0.25]))
    h = -(0.6 * np.log(0.6) + 2 * 0.2 * np.log(0.2)) / np.log(4)
    np.testing.assert_allclose(x, [[0.6, 0.4, h, 0.75], [0.25, 0.0, 1.0, 0.5]], rtol=1e-6)


def test_the_logistic_fit_recovers_a_known_model():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 4))
    truth = np.array([0.5, -2.0, 1.0, 0.0, 3.0])  # bias, then one per feature
    y = rng.random(len(x)) < 1 / (1 + np.exp(-(truth[0] + x @ truth[1:])))
    np.testing.assert_allclose(nm._logistic(x, y), truth, atol=0.1)
    one = nm._logistic(x[:10], np.zeros(10, bool))  # one class only: its (smoothed) rate, no slope
    assert one[1:].tolist() == [0, 0, 0, 0] and 1 / (1 + np.exp(-one[0])) == pytest.approx(0.5 / 11)


def test_cross_fitting_never_places_an_image_by_a_model_that_saw_it():
    """Whatever the other parts' truth says, an image's place depends only on the model fitted
    without it: change every label of part k and part k's places stay; change those of the other
    parts and they move."""
    rng = np.random.default_rng(2)
    n, k = 300, 10
    is_new = rng.random(n) < 0.3
    peaked = np.where(is_new[:, None], 1.0, 0.1) * np.ones(k)  # known animals: one identity stands out
    scores = np.sort(np.stack([rng.dirichlet(a) for a in peaked]), axis=1)[:, ::-1].astype(np.float32)
    x = nm.features(scores, np.zeros(n, np.int64), np.zeros((n, 2), np.int64), np.ones(2))
    column = np.where(is_new, -1, 0)
    part = cv_parts(is_new.astype(np.int64), 1, 5, seed=0)
    at = nm.cross_fit(x, is_new, scores, column, part, 5)[0]
    mine = part == 2
    flipped = is_new.copy()
    flipped[mine] = ~flipped[mine]
    np.testing.assert_array_equal(nm.cross_fit(x, flipped, scores, column, part, 5)[0][mine], at[mine])
    flipped = ~is_new
    flipped[mine] = is_new[mine]
    assert not np.array_equal(nm.cross_fit(x, flipped, scores, column, part, 5)[0][mine], at[mine])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return TuneProject(tmp_path_factory.mktemp("pnew"))


def probability_recipe(project, name="pnew", weights=True):
    def change(d):
        d["steps"]["new_whale"] = {"fit": "probability"}
        if not weights:
            for m in d["members"]:
                m.pop("weight")
    return edit_yaml(project.recipe(name, holdout=0.3, seed=1), change)


def test_fit_probability_is_fitted_on_validation_and_carried_to_test(project):
    path = probability_recipe(project)
    run = evaluation.evaluate(path)
    model = run.recipe.steps.new_whale.model
    assert set(model) == set(nm.KEYS) and run.recipe.steps.new_whale.fit is None
    fitted = run.summary["val"]["fitted"]
    assert fitted["key"] == "steps.new_whale.model" and fitted["value"] == model
    # the blend's cross-fitted score is the pipeline's, part by part
    val = run.val[0]
    cfg = load_recipe(path).tune
    part = cv_parts(val.truth, val.unknown_code, cfg.parts, cfg.seed)
    ap = fits.cross_fitted_marks(run.recipe.with_params({"steps.new_whale.fit": "probability"}), val,
                                  np.arange(len(val.truth)), part, cfg.parts)
    assert fitted["cross_validated_map5"] == pytest.approx(float(ap.mean()))
    # the model as written in a recipe places the test images as the fitted run did
    pinned = edit_yaml(project.recipe("pnew-pinned"), lambda d: d["steps"].__setitem__("new_whale", {"model": model}))
    again = evaluation.evaluate(pinned)
    np.testing.assert_array_equal(again.test[1].top5, run.test[1].top5)
    # by hand: the model's places on test, the vote and the leak aside
    test, result = run.test
    data = fits.new_whale_data(run.recipe, test)
    at = nm.positions(model, data.x, data.bare.top_scores)
    np.testing.assert_array_equal(fits._marks_at(data, at, test), result.marks)


def test_a_broken_model_is_one_line(project):
    path = edit_yaml(project.recipe("pnew-broken"), lambda d: d["steps"].__setitem__("new_whale", {"model": {"bias": 1.0}}))
    with pytest.raises(KitError, match=r"steps.new_whale.model lacks top1, margin, entropy, agreement, id_bias, id_score, id_share, id_rank"):
        evaluation.evaluate(path)
    with pytest.raises(KitError, match=r"fit.*probability"):
        load_recipe(edit_yaml(path, lambda d: d["steps"].__setitem__("new_whale", {"fit": "probabilty"})))


def test_the_tuner_refits_the_model_for_each_trial(project, tmp_path):
    from kit.tune.space import search_space
    from kit.tune.objective import Objective
    from kit.tune.study import tune

    path = probability_recipe(project, "pnew-tune", weights=False)
    recipe = load_recipe(path)
    objective = Objective(recipe, search_space(recipe), holdout=0.3, seed=1)
    assert [p.name for p in objective.space] == [f"members.{i}.weight" for i in range(3)]
    values = {f"members.{i}.weight": w for i, w in enumerate((0.2, 0.5, 0.3))}
    trial = objective.recipe_for(values)
    # the objective: cross-fitted on the tuning part, a model fitted for these weights on the other parts
    expected = fits.cross_fitted_marks(trial, objective.inputs, objective.tune_idx, objective.part, objective.n_parts)
    assert objective.evaluate(trial)[0] == pytest.approx(float(expected.mean()))
    finished = objective.finish(values, None)
    assert finished.steps.new_whale.model == fits.fit_new_whale(trial, objective.inputs, objective.tune_idx).steps.new_whale.model
    s = tune(path, 8, storage=f"sqlite:///{tmp_path / 'st.db'}", progress=False)
    written = yaml.safe_load(s.tuned_path.read_text())["steps"]["new_whale"]
    assert written == ({"fit": "probability"} if s.kept_untuned else {"model": s.tuned.steps.new_whale.model})
    assert "cross-fitted" in s.objective_note


def test_blend_prints_the_fitted_model(project):
    lines = []
    blend_files(probability_recipe(project, "pnew-print"), echo=lines.append, diagnostics=False)
    line = next(line for line in lines if "new_whale by P(new)" in line)
    assert "fitted on these" in line and "cross-fitted MAP@5" in line and "agreement" in line


def test_the_report_shows_what_was_fitted_on_validation(project):
    """weights: select, fit: probability and pseudo.precision each have their figure in the report."""
    from kit.report.html import build

    def change(d):
        d["weights"] = "select"
        d["pseudo"] = {"precision": 0.5}
    run = evaluation.evaluate(edit_yaml(probability_recipe(project, "pnew-report", weights=False), change))
    assert run.diagnostics.new_whale_reliability is not None
    kept, share, low = run.diagnostics.pseudo_curve
    assert np.all(low <= share) and kept[0] == 1
    html = build(run)
    for part in ('id="decisions"', "<h3>Ensemble selection</h3>", "<h3>P(new)</h3>", "<h3>Pseudo-label gate</h3>"):
        assert part in html
    plain = evaluation.evaluate(project.recipe("pnew-plain"))
    assert 'id="decisions"' not in build(plain)
