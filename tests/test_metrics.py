"""The competition metrics (kit/metrics/): each against hand-worked cases and a slow reference
written from its published definition; the balanced metric's resampling and its exact
unknown-label threshold against recomputing it."""
import numpy as np
import pandas as pd
import pytest

from kit.errors import KitError
from kit import ranking
from kit.metrics import METRICS, Groups, Scorer, metric

U = 99  # the unknown label's code in these cases


def organisers_score(truth_labels, pred_labels, new_identity, dataset, new_class="new_individual") -> float:
    """AnimalCLEF 2025's scorer as published (wildlife-datasets BAKS/BAUS, the Kaggle `score`), on strings."""
    solution = pd.DataFrame({"identity": truth_labels, "new_identity": new_identity, "dataset": dataset})
    unknown_identities = solution[solution["new_identity"]]["identity"].unique()

    def baks(y_true, y_pred):
        df = pd.DataFrame({"y_true": y_true, "y_pred": y_pred})
        df = df[~df["y_true"].isin(unknown_identities)]
        if not len(df):
            return np.nan
        return sum(1 / df["y_true"].nunique() * np.mean(g["y_pred"] == g["y_true"]) for _, g in df.groupby("y_true"))

    def baus(y_true, y_pred):
        df = pd.DataFrame({"y_true": y_true, "y_pred": y_pred})
        df = df[df["y_true"].isin(unknown_identities)]
        if not len(df):
            return np.nan
        return sum(1 / df["y_true"].nunique() * np.mean(g["y_pred"] == new_class) for _, g in df.groupby("y_true"))

    results = []
    for _, part in solution.groupby("dataset"):
        labels, preds = part["identity"].to_numpy(), np.asarray(pred_labels, dtype=object)[part.index]
        k, u = baks(labels, preds), baus(labels, preds)
        k, u = 0 if np.isnan(k) else k, 0 if np.isnan(u) else u
        results.append(np.sqrt(k * u))
    return float(np.mean(results))


def as_strings(codes, truth, individual, dataset):
    """Codes -> the organisers' strings: an unknown truth is its individual's own label."""
    def name(c):
        return "new_individual" if c == U else ("none" if c < 0 else f"id{c}")
    truth_labels = [f"new{dataset[i]}_{individual[i]}" if t == U else f"id{t}" for i, t in enumerate(truth)]
    return truth_labels, [name(c) for c in codes], [t == U for t in truth], [f"d{d}" for d in dataset]


def test_hand_worked_cases():
    truth = np.array([0, 0, 1, U, U, U])
    top = np.array([[0], [1], [1], [U], [0], [U]])
    animalclef, top1, map5 = metric("animalclef"), metric("top1"), metric("map5")
    # known: identity 0 half right, identity 1 right -> BAKS 0.75; unknown one group, 2 of 3 -> sqrt(0.75 * 2/3)
    assert animalclef.score(top, truth, U) == pytest.approx(np.sqrt(0.75 * 2 / 3))
    # two unknown individuals: (1/2 + 1) / 2 = 0.75 -> sqrt(0.75 * 0.75)
    assert animalclef.score(top, truth, U, Groups(individual=np.array([-1, -1, -1, 0, 0, 1]))) == pytest.approx(0.75)
    assert animalclef.score(np.full((6, 1), U), truth, U) == 0.0  # everything unknown: BAKS 0
    assert animalclef.score(top[:3], truth[:3], U) == 0.0  # no unknown image: BAUS NaN -> 0
    assert top1.score(top, truth, U) == pytest.approx(4 / 6)
    assert map5.score(np.array([[3, 0, 1, 2, 4]]), np.array([0]), U) == 0.5
    with pytest.raises(KitError, match=r"'mapp5' is not a metric \(did you mean 'map5'\?\)"):
        metric("mapp5")


@pytest.mark.parametrize("seed", range(12))
def test_animalclef_equals_the_organisers_scorer(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    truth = np.where(rng.random(n) < 0.4, U, rng.integers(0, 6, n))
    dataset = rng.integers(0, 3, n)
    individual = np.where(truth == U, rng.integers(0, 4, n), -1)
    codes = np.where(rng.random(n) < 0.5, truth, np.where(rng.random(n) < 0.5, U, rng.integers(0, 6, n)))
    got = metric("animalclef").score(codes[:, None], truth, U, Groups(individual, dataset))
    assert got == pytest.approx(organisers_score(*as_strings(codes, truth, individual, dataset)), abs=1e-12)


@pytest.mark.parametrize("name", ["map5", "top1"])
def test_additive_metrics_against_a_loop(name):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 8, 200)
    top = rng.integers(-1, 8, (200, 5))
    slow = []
    for t, row in zip(truth, top):
        ranks = [r for r, c in enumerate(row[:METRICS[name].k]) if c == t]
        slow.append(1 / (ranks[0] + 1) if ranks and name == "map5" else float(bool(ranks) and ranks[0] == 0))
    assert metric(name).score(top, truth, U) == pytest.approx(np.mean(slow))


def test_resamples_are_the_metric_recomputed_on_each():
    rng = np.random.default_rng(3)
    n = 40
    truth = np.where(rng.random(n) < 0.4, U, rng.integers(0, 5, n))
    groups = Groups(np.where(truth == U, rng.integers(0, 3, n), -1), rng.integers(0, 2, n))
    top = np.where(rng.random(n) < 0.6, truth, U)[:, None]
    idx = rng.integers(0, n, (25, n))
    m = metric("animalclef")
    got = m.resampled(m.per_image(top, truth), truth, U, groups, idx)
    assert np.allclose(got, [m.score(top[i], truth[i], U, groups.rows(i)) for i in idx])


def _ranking_case(rng, n):
    """n images: truth (a third unknown), groups, a ranking of five distinct identities (the truth in it
    for most known images), tied scores, and a vote's cap for a few."""
    truth = np.where(rng.random(n) < 0.35, U, rng.integers(0, 8, n))
    groups = Groups(np.where(truth == U, rng.integers(0, 3, n), -1), rng.integers(0, 2, n))
    codes = np.stack([rng.permutation(8)[:5] for _ in range(n)]).astype(np.int64)
    for i in np.flatnonzero((truth != U) & (rng.random(n) < 0.6)):
        if truth[i] not in codes[i]:
            codes[i, rng.integers(0, 5)] = truth[i]
    scores = -np.sort(-np.round(rng.random((n, 5)), 1), axis=1).astype(np.float32)
    cap = np.where(rng.random(n) < 0.2, rng.integers(0, 6, n), 5).astype(np.int64)
    return truth, groups, codes, scores, cap


@pytest.mark.parametrize("name", ["map5", "top1", "animalclef"])
@pytest.mark.parametrize("seed", range(6))
def test_the_fitted_unknown_decision_is_the_best_of_every_threshold(name, seed):
    """Brute force, for each metric: the score of every distinct threshold (between each pair of
    scores, and beyond), the unknown label inserted and the metric recomputed from scratch."""
    rng = np.random.default_rng([seed, len(name)])
    n = int(rng.integers(2, 40))
    truth, groups, codes, scores, cap = _ranking_case(rng, n)
    m = metric(name)
    scorer = Scorer(m, truth, U, groups)
    table = ranking.position_table(codes, scores, truth, U, cap=cap, per_image=m.per_image)

    def at(t):
        where = np.minimum(ranking.insert_positions(scores, t), cap)
        top = ranking.assemble(codes, np.empty((n, 0), np.int64), where, np.zeros(n, np.bool_), U)
        return m.score(top[:, :m.k], truth, U, groups)

    edges = np.unique(scores)
    best = max(at(t) for t in np.concatenate([[edges[0] - 1], (edges[:-1] + edges[1:]) / 2, [edges[-1] + 1]]))
    t, value = ranking.best_threshold(table, None, scorer)
    assert value == pytest.approx(best) and at(t) == pytest.approx(best)
    assert ranking.best_share(table, None, scorer)[1] == pytest.approx(best)
    assert scorer.score(table.marks_at(t)) == pytest.approx(best)


def test_a_balanced_metric_is_cross_validated_part_by_part():
    """AnimalCLEF's cross-validated rule: each part's marks are those of the threshold fitted on the
    other parts alone (their own groups), the score the metric over every part's marks."""
    rng = np.random.default_rng(5)
    truth, groups, codes, scores, cap = _ranking_case(rng, 60)
    scorer = Scorer(metric("animalclef"), truth, U, groups)
    table = ranking.position_table(codes, scores, truth, U, cap=cap, per_image=scorer.metric.per_image)
    part = ranking.cv_parts(truth, U, 3, 0)
    value, marks = ranking.cross_validated(table, part, 3, scorer=scorer)
    for k in range(3):
        rest, here = part != k, part == k
        t = ranking.best_threshold(table.rows(np.flatnonzero(rest)), None, scorer.rows(np.flatnonzero(rest)))[0]
        np.testing.assert_array_equal(marks[here], table.rows(np.flatnonzero(here)).marks_at(t))
    assert value == pytest.approx(scorer.score(marks))


def test_balanced_paired_gains_recompute_the_metric_on_each_resample():
    """A balanced metric's paired interval: the same resamples for both, the metric recomputed."""
    from kit.post.compare import paired_gain, resamples_of
    rng = np.random.default_rng(2)
    truth, groups, codes, scores, cap = _ranking_case(rng, 80)
    scorer = Scorer(metric("animalclef"), truth, U, groups)
    a, b = (rng.random(80) < 0.7).astype(float), (rng.random(80) < 0.5).astype(float)
    gain = paired_gain(a, b, scorer, resamples=300, seed=4)
    assert gain.value == pytest.approx(scorer.score(a) - scorer.score(b))
    diffs = np.concatenate([[scorer.rows(i).score(a[i]) - scorer.rows(i).score(b[i]) for i in idx]
                            for _, idx in resamples_of(80, 300, 4)])
    assert gain.low == pytest.approx(np.percentile(diffs, 2.5)) and gain.high == pytest.approx(np.percentile(diffs, 97.5))


def test_score_py_scores_by_any_metric(tmp_path):
    """score.py --metric: a submission of one label per image under top-1 and AnimalCLEF's score."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "truth.csv").write_text("image_id,identity\na,L1\nb,L1\nc,L2\nd,new_individual\ne,new_individual\n")
    (tmp_path / "sub.csv").write_text("image_id,identity\na,L1\nb,L2\nc,L2\nd,new_individual\ne,L1\n")

    def score(*flags):
        out = subprocess.run([sys.executable, "scripts/score.py", str(tmp_path / "sub.csv"), str(tmp_path / "truth.csv"),
                              "--json", *flags], capture_output=True, text=True, cwd=root)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert score("--metric", "top1") == {"top1": 0.6, "n": 5}
    # BAKS: L1 half right, L2 right -> 0.75; BAUS: one group (the truth names no individual), 1 of 2 -> 0.5
    assert score("--metric", "animalclef")["animalclef"] == pytest.approx(np.sqrt(0.75 * 0.5))
    assert score()["map5"] == pytest.approx((1 + 0 + 1 + 1 + 0) / 5)
    bad = subprocess.run([sys.executable, "scripts/score.py", str(tmp_path / "sub.csv"), str(tmp_path / "truth.csv"),
                          "--metric", "top-1"], capture_output=True, text=True, cwd=root)
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: --metric: 'top-1' is not a metric (did you mean "
                                                          "'top1'?); the metrics: animalclef, map5, top1")


def test_score_py_reads_the_organisers_solution_columns(tmp_path):
    """A truth with AnimalCLEF's `new_identity` and `dataset` columns is scored per individual and per
    dataset, as the organisers' scorer does."""
    from kit.metrics import score_files

    truth = pd.DataFrame({"image_id": list("abcdefgh"),
                          "identity": ["L1", "L1", "L2", "N1", "N1", "N2", "S1", "S9"],
                          "new_identity": [False, False, False, True, True, True, False, True],
                          "dataset": ["lynx"] * 6 + ["salamander"] * 2})
    sub = pd.DataFrame({"image_id": list("abcdefgh"),
                        "identity": ["L1", "L2", "L2", "new_individual", "L1", "new_individual", "S1", "S1"]})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    expected = organisers_score(truth["identity"].tolist(), sub["identity"].tolist(), truth["new_identity"].tolist(),
                                truth["dataset"].tolist())
    # lynx: BAKS (0.5 + 1) / 2, BAUS (0.5 + 1) / 2 -> 0.75; salamander: BAKS 1, BAUS 0 -> 0
    assert expected == pytest.approx(0.375)
    assert score_files(tmp_path / "sub.csv", tmp_path / "truth.csv", name="animalclef")[0] == pytest.approx(expected)
    # score.py without --metric: the solution's own columns say AnimalCLEF
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "score.py"),
                          str(tmp_path / "sub.csv"), str(tmp_path / "truth.csv"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout) == {"animalclef": pytest.approx(expected), "n": 8}, out.stderr
