"""Automatic weights on hand-made members: near-copies share one weight, skill counts, noise does not."""
import numpy as np
import pytest

from kit.post.inputs import prepare
from kit.post.weights import auto_weights, equal

UNKNOWN = 99


def member(truth, right, rng, n_labels=50):
    """A top-5 per image: the truth first where `right`, else five other labels."""
    top = np.stack([rng.permutation(n_labels)[:5] for _ in truth])
    for i, t in enumerate(truth):
        top[i] = [x for x in top[i] if x != t][:4] + [rng.integers(n_labels)] if not right[i] else [t] + [x for x in top[i] if x != t][:4]
    return top


def test_six_near_copies_share_one_weight():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 50, 400)
    base = rng.random(400) < 0.7
    copies = []
    for _ in range(6):  # the same errors but for 2% of the images
        right = base.copy()
        flip = rng.random(400) < 0.02
        right[flip] = ~right[flip]
        copies.append(member(truth, right, rng))
    other = member(truth, rng.random(400) < 0.7, rng)  # as good, failing elsewhere
    tops = copies + [other]
    r = auto_weights([f"m{i}" for i in range(7)], tops, np.stack([t[:, 0] for t in tops], 1), truth, UNKNOWN)
    assert np.all(r.copies[:6] > 5) and r.copies[6] == pytest.approx(1, abs=0.05)
    assert r.weights[6] == pytest.approx(r.weights[:6].sum(), rel=0.25)  # one member's worth for all six copies
    assert r.weights.sum() == pytest.approx(1) and r.choice == "correlation-aware"
    assert "near-copies" in r.lines()[1]


def test_independent_members_are_weighted_by_skill_and_near_equal_ones_tie():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 50, 600)
    strong = member(truth, rng.random(600) < 0.9, rng)
    weak = member(truth, rng.random(600) < 0.4, rng)
    r = auto_weights(["strong", "weak"], [strong, weak], np.stack([strong[:, 0], weak[:, 0]], 1), truth, UNKNOWN)
    assert r.similarity[0, 1] == 0  # independent errors: the correlation is within the noise floor
    assert r.weights[0] > r.weights[1] and r.weights[0] / r.weights[1] == pytest.approx(1 / 0.7, rel=0.01)  # tenths
    a, b = member(truth, rng.random(600) < 0.8, rng), member(truth, rng.random(600) < 0.78, rng)
    tied = auto_weights(["a", "b"], [a, b], np.stack([a[:, 0], b[:, 0]], 1), truth, UNKNOWN)
    assert tied.weights.tolist() == [0.5, 0.5]  # a 2-point skill difference is noise: an exact tie
    assert equal(r).weights.tolist() == [0.5, 0.5] and "equal" in equal(r).choice


def test_without_truth_near_copies_are_found_by_agreement():
    rng = np.random.default_rng(2)
    n = 300
    first = np.stack([rng.integers(0, 50, n)] * 3 + [rng.integers(0, 50, n)], axis=1)
    first[rng.random(n) < 0.05, 1] = UNKNOWN  # copy 1 differs a little
    tops = [np.repeat(first[:, [k]], 5, axis=1) for k in range(4)]
    r = auto_weights(list("abcd"), tops, first, None, UNKNOWN)
    assert "no truth" in r.basis and np.all(r.skill == 1)
    assert r.copies[3] < 1.2 and np.all(r.copies[:3] > 2.5)
    assert r.weights[3] > 2 * r.weights[:3].max()


def test_automatic_weights_never_read_the_test_truth(tmp_path):
    """A member without validation predictions: the weights fell back to the test split and were
    fitted on its truth (a synthetic competition's test_truth.csv), called "validation errors".
    Now they come from the members' agreement there, and the truth cannot move them."""
    from kit.post import evaluation, fits, pipeline
    from kit.testing import make_label_competition, write_blend_recipe, write_predictions

    comp = make_label_competition(tmp_path / "data")
    a = write_predictions(tmp_path / "models" / "a", comp, "logit", signal=3.0, seed=1)
    b = write_predictions(tmp_path / "models" / "b", comp, "logit", signal=1.0, seed=2, splits=("test",))
    recipe = write_blend_recipe(tmp_path / "blends" / "final.yaml", comp.root,
                                [{"model": str(a), "view": "logit"}, {"model": str(b), "view": "logit"}])
    run = evaluation.evaluate(recipe, diagnostics=False)
    assert run.test[0].truth is not None  # the test truth is there, for scoring only
    assert "no truth" in run.weights.basis and "validation errors" not in " ".join(run.weights.lines())
    truth = comp.root / "test_truth.csv"
    lines = truth.read_text().splitlines()
    head, rows = lines[0], lines[1:]
    labels = [r.split(",")[1] for r in rows]
    truth.write_text("\n".join([head] + [f"{r.split(',')[0]},{lab}" for r, lab in zip(rows, labels[1:] + labels[:1])]) + "\n")
    assert list(evaluation.evaluate(recipe, diagnostics=False).weights.weights) == list(run.weights.weights)


def test_no_decision_is_fitted_on_the_test_split(project):
    """Whoever asks: weights come from agreement there, and the fitted rules refuse it."""
    from kit.errors import KitError
    from kit.post import fits, pipeline
    from kit.post.recipe import load_recipe

    recipe = load_recipe(project["recipe"])
    test = prepare(recipe, "test")
    assert test.truth is not None
    auto = recipe.with_params({f"members.{i}.weight": None for i in range(len(recipe.members))})
    assert "no truth" in pipeline.weight_report(auto, test).basis
    with pytest.raises(KitError, match="never on the test images"):
        fits.fit_new_whale(recipe.with_params({"steps.new_whale": {"fit": "threshold"}}), test)
