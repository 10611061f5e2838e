"""The local member (kit/local): features cached like the crops, a photo matched against a rotated,
scaled, cropped copy of itself far above another animal, a shortlist that never puts a validation
query in its own gallery, sets that pass the contract and blend, a calibration fitted on validation
only and monotone."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from kit.data.competition import load_competition
from kit.data.crops import image_keys
from kit.data.folds import read_folds
from kit.data.prepare import prepare
from kit.data.synthetic import generate
from kit.errors import KitError
from kit.local.features import FeatureSpec, extract, load_crop, open_features
from kit.local.match import MatchCfg, inliers, matching_vectors
from kit.local.member import LocalCfg, build_local_member
from kit.post import evaluation
from kit.post.calibrations.inliers import Inliers
from kit.post.inputs import prepare as prepare_split
from kit.post.recipe import load_recipe
from kit.predset import PredictionSet, load

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Synthetic tiny (flukes with notches, pigment and scars), prepared."""
    data = generate(tmp_path_factory.mktemp("local") / "tiny", size="tiny", seed=2, progress=False)
    prepare(data, n_folds=2, echo=lambda line: None)
    return data


def shortlist_project(root: Path, data: Path, fold: int | str = 0) -> Path:
    """A blend recipe over one fabricated member (noisy scores: a weak CNN) to shortlist from."""
    comp = load_competition(data)
    folds = read_folds(data / "folds.csv", comp.train)
    classes = sorted(set(comp.train["label"]) - {comp.unknown})
    rng = np.random.default_rng(0)
    model = root / "models" / "weak"
    splits = {"test": list(comp.test_images)}
    if fold == "all":
        splits["oof"] = folds.loc[folds["fold"] >= 0].sort_values("fold", kind="stable")["image"].tolist()
    else:
        splits["val"] = folds.loc[folds["fold"] == fold, "image"].tolist()
    for split, images in splits.items():
        meta = {"kind": "logit", "model": "weak", "split": split, "activation": "softmax"}
        if split == "val":
            meta["fold"] = fold
        PredictionSet(rng.normal(size=(len(images), len(classes))).astype(np.float32), images, classes,
                      meta).save(model / "preds" / "logit" / split)
    recipe = root / "blends" / "weak.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(yaml.safe_dump({"name": "weak", "data": str(data), "fold": fold,
                                      "members": [{"model": str(model), "view": "logit"}],
                                      "steps": {"leak": {"max_distance": 4}, "new_whale": {"fit": "threshold"}},
                                      "output": str(root / "submissions")}, sort_keys=False))
    return recipe


# ------------------------------------------------------------------------------------- features
def test_the_feature_cache_is_built_once_redone_per_image_and_remembers_bad_ones(tiny, tmp_path):
    comp = load_competition(tiny)
    spec = FeatureSpec(size=256, keypoints=64)
    lines = []
    cache = open_features(comp, spec, cache_root=tmp_path, echo=lines.append)
    assert len(lines) == 1 and cache.count.max() > 8 and cache.desc.shape[1:] == (64, 128)
    keys, paths, _ = image_keys(comp)
    again = open_features(comp, spec, cache_root=tmp_path, echo=lines.append)  # fresh: nothing done
    assert len(lines) == 1 and np.array_equal(again.desc, cache.desc)
    before = np.array(cache.desc)
    # one photo changed, another corrupt: those two done again, alone
    Image_path, bad_path = paths[0], paths[1]
    img = cv2.imread(str(Image_path))
    cv2.imwrite(str(Image_path), cv2.flip(img, 1))
    bad_path.write_bytes(b"not an image")
    third = open_features(comp, spec, cache_root=tmp_path, echo=lines.append)
    assert "2 changed image(s) done again" in lines[-1]
    assert third.bad[1] and keys[1] in third.reasons and third.count[1] == 0
    assert not np.array_equal(third.desc[0], before[0]) and np.array_equal(third.desc[2:], before[2:])


def test_two_openers_build_the_cache_once(tiny, tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from kit.data.competition import load_competition; "
            f"from kit.local.features import FeatureSpec, open_features; "
            f"open_features(load_competition({str(tiny)!r}), FeatureSpec(size=200, keypoints=32), "
            f"cache_root={str(tmp_path)!r}, echo=print)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum("feature cache" in out for out in outs) == 1  # one built it, the other found it fresh


@pytest.mark.parametrize("extractor", ["sift", "orb"])
def test_a_photo_matches_a_rotated_scaled_cropped_copy_far_above_another_animal(tiny, extractor):
    comp = load_competition(tiny)
    keys, paths, boxes = image_keys(comp)
    spec = FeatureSpec(extractor=extractor, use_boxes=False)
    labels = dict(zip(comp.train["image"], comp.train["label"]))
    known = [i for i, k in enumerate(keys[:len(comp.train)]) if labels[k.split("/")[1]] != comp.unknown]
    selves, others = [], []
    for a, b in zip(known[:12], known[12:24]):
        if labels[keys[a].split("/")[1]] == labels[keys[b].split("/")[1]]:
            continue
        rgb = load_crop(paths[a], None, spec)
        h, w = rgb.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 0.75)  # rotated, scaled, then cropped and re-encoded
        warped = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)[h // 10:, w // 10:]
        warped = cv2.imdecode(cv2.imencode(".jpg", warped, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)
        q_xy, q_desc = extract(rgb, spec)
        gallery = []
        for image in (warped, load_crop(paths[b], None, spec)):
            xy, desc = extract(image, spec)
            gallery.append((xy, matching_vectors(desc, extractor)))
        self_count, other_count = inliers(q_xy, matching_vectors(q_desc, extractor), gallery, extractor, MatchCfg())
        selves.append(self_count)
        others.append(other_count)
    assert len(selves) >= 6
    assert np.median(selves) >= 25 and np.median(others) <= 8 and min(selves) > max(others)


# ------------------------------------------------------------------------------------ the member
@pytest.mark.parametrize("fold", [0, "all"])
def test_the_local_member_never_matches_a_query_against_its_own_fold_and_blends(tiny, tmp_path, monkeypatch, fold):
    monkeypatch.chdir(tmp_path)
    recipe = shortlist_project(tmp_path, tiny, fold)
    seen = {}
    import kit.local.member as member

    real = member._match_split

    def spy(plan, features, n_columns, cfg, progress, workers):
        seen[plan.split] = plan
        return real(plan, features, n_columns, cfg, progress, workers)

    monkeypatch.setattr(member, "_match_split", spy)
    out = build_local_member(recipe, LocalCfg(identities=8, features=FeatureSpec(size=256, keypoints=128)),
                             progress=False, echo=lambda line: None)
    val_split = "oof" if fold == "all" else "val"
    comp = load_competition(tiny)
    folds = read_folds(tiny / "folds.csv", comp.train)
    fold_of = dict(zip(folds["image"], folds["fold"]))
    features = open_features(comp, FeatureSpec(size=256, keypoints=128))
    name_of = {row: key.split("/")[1] for row, key in enumerate(features.keys)}
    plan = seen[val_split]
    for q, image in enumerate(plan.images):
        gallery = {name_of[int(r)] for r in plan.gallery[q]}
        assert image not in gallery and all(fold_of[g] != fold_of[image] for g in gallery)
    for split in (val_split, "test"):
        ps = load(out / "preds" / "local" / split)
        assert ps.kind == "inliers" and ps.scores.min() >= 0 and ps.meta["split"] == split
        assert (ps.scores > 0).sum(axis=1).max() <= 8 + 5  # the shortlist (and a few leak identities) only
    info = json.loads((out / "local.json").read_text())
    assert info["pairs"] > 0 and info["pairs_per_s"] > 0

    blend = tmp_path / "blends" / "with_local.yaml"
    raw = yaml.safe_load(recipe.read_text())
    raw["members"].append({"model": str(out), "view": "local"})
    blend.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = evaluation.evaluate(blend, diagnostics=False)
    cal = run.recipe.members[1].calibration
    assert cal.method == "inliers" and cal.params.scale > 0  # fitted, monotone increasing
    assert run.test[1].score is not None


def test_the_calibration_is_fitted_on_validation_only_and_monotone(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = shortlist_project(tmp_path, tiny)
    out = build_local_member(recipe, LocalCfg(identities=8, features=FeatureSpec(size=256, keypoints=128)),
                             progress=False, echo=lambda line: None)
    path = tmp_path / "blends" / "local.yaml"
    raw = yaml.safe_load(recipe.read_text())
    raw["members"] = [{"model": str(out), "view": "local"}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    fitted = evaluation.evaluate(path, diagnostics=False).recipe.members[0].calibration
    val = prepare_split(load_recipe(path), "val")
    truth = np.where(val.truth < val.n_columns, val.truth, -1)
    assert dict(fitted.values) == pytest.approx(Inliers.fit(val.members[0].scores, truth))  # validation's, exactly
    # the test truth moves nothing: scramble it and evaluate again
    test_truth = tiny / "test_truth.csv"
    saved = test_truth.read_text()
    try:
        t = pd.read_csv(test_truth)
        t.iloc[:, 1] = np.random.default_rng(0).permutation(t.iloc[:, 1].to_numpy())
        t.to_csv(test_truth, index=False)
        again = evaluation.evaluate(path, diagnostics=False).recipe.members[0].calibration
    finally:
        test_truth.write_text(saved)
    assert again == fitted
    x = np.linspace(0, 200, 50, dtype=np.float32)[None, :]
    p = Inliers.transform(x, fitted.params)[0]
    assert np.all(np.diff(p) >= 0) and 0 <= p.min() and p.max() <= 1


def test_a_fit_on_one_class_and_unfitted_parameters_are_clear():
    assert Inliers.fit(np.zeros((4, 3), np.float32), np.full(4, -1))["scale"] == 0.0  # nothing right: flat
    with pytest.raises(KitError, match="scale and shift are fitted on validation"):
        Inliers.transform(np.zeros((2, 2), np.float32), Inliers.Params())


def test_a_shortlist_with_a_local_member_or_without_validation_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = shortlist_project(tmp_path, tiny)
    raw = yaml.safe_load(recipe.read_text())
    raw["fold"] = -1
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "match.py"), str(recipe), "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "needs the validation split" in out.stderr
    assert out.stderr.count("\n") == 1 and not (tmp_path / "models" / "local").exists()


def test_tune_and_the_member_table_take_a_local_member(tiny, tmp_path, monkeypatch):
    from kit.tune.members import member_table_for
    from kit.tune.study import tune

    monkeypatch.chdir(tmp_path)
    recipe = shortlist_project(tmp_path, tiny)
    out = build_local_member(recipe, LocalCfg(identities=8, features=FeatureSpec(size=256, keypoints=128)),
                             progress=False, echo=lambda line: None)
    path = tmp_path / "blends" / "with_local.yaml"
    raw = yaml.safe_load(recipe.read_text())
    raw["members"].append({"model": str(out), "view": "local"})
    raw["tune"] = {"free": ["members.1.calibration.*"]}  # the fitted calibration, searched further
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    s = tune(path, trials=6, storage=f"sqlite:///{tmp_path / 'studies.db'}", progress=False)
    cal = s.tuned.members[1].calibration
    assert cal.method == "inliers" and cal.params.scale is not None and cal.params.shift is not None
    table = member_table_for(path)
    assert "member local/local (own threshold)" in [r.what for r in table.rows]


def test_the_inliers_fit_recovers_a_known_calibration_over_every_pair():
    """Scores drawn so that P(right | inliers) = sigmoid(1.5 log1p(x) - 6), many right columns at 0
    inliers (a shortlist that missed them): the fit over all pairs finds the curve, not a flat line."""
    rng = np.random.default_rng(0)
    n, c = 400, 300
    scores = rng.poisson(0.3, (n, c)).astype(np.float32)  # wrong columns: a few stray inliers
    truth = rng.integers(0, c, n)
    found = rng.random(n) < 0.6
    scores[np.flatnonzero(found), truth[found]] = rng.integers(8, 120, found.sum())  # matched: many inliers
    scores[np.flatnonzero(~found), truth[~found]] = 0  # missed by the shortlist
    fitted = Inliers.fit(scores, truth)
    assert fitted["scale"] > 1.0
    p = Inliers.transform(np.array([[0.0, 1.0, 10.0, 100.0]], np.float32), Inliers.Params(**fitted))[0]
    assert p[0] < 0.01 and p[3] > 0.8 and np.all(np.diff(p) > 0)
