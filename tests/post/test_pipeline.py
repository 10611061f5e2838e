"""The pipeline on a fabricated competition with members made from noisy copies of the truth."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fabricate import make_competition, noisy_scores, write_member, write_recipe

import slow
from kit import predset
from kit.data import load_competition
from kit.errors import KitError
from kit.metric import check_submission
from kit.metrics import score_files
from kit.post.files import blend_files
from kit.post.inputs import prepare
from kit.post.evaluation import evaluate
from kit.post.pipeline import run
from kit.post.recipe import load_recipe
from kit.ranking import assemble


def test_assemble_against_plain_python():
    rng = np.random.default_rng(0)
    n, k, unknown = 300, 10, 99
    top = np.stack([rng.choice(30, k, replace=False) for _ in range(n)])
    pinned = np.full((n, 5), -1)
    for i in range(n):
        m = int(rng.integers(0, 6))
        pinned[i, :m] = rng.choice(list(range(12)) + [unknown], m, replace=False)  # overlapping the ranking
    new_whale_at = rng.integers(-1, k + 1, n)
    swap = rng.random(n) < 0.3
    got = assemble(top, pinned, new_whale_at, swap, unknown)
    for i in range(n):
        expected = slow.assemble(top[i].tolist(), pinned[i].tolist(), int(new_whale_at[i]), bool(swap[i]), unknown)
        assert got[i].tolist() == expected + [-1] * (5 - len(expected)), i
    assert assemble(top, np.empty((n, 0), np.int64), np.full(n, -1), np.zeros(n, bool), unknown).tolist() == top[:, :5].tolist()


def test_ablation_shows_each_step(project):
    recipe = load_recipe(project["recipe"])
    inputs = prepare(recipe, "val")
    result = run(recipe, inputs)
    steps = result.score_by_step
    assert list(steps) == ["blend", "+ leak", "+ new_whale", "+ balance"]
    assert steps["+ leak"] >= steps["blend"]  # planted duplicates of val images in train
    weak = run(recipe.with_params({"members.1.weight": 0, "members.2.weight": 0}), inputs).score_by_step
    assert weak["+ leak"] > weak["blend"]  # one member alone misses some of them: the leak finds them
    assert steps["+ new_whale"] > steps["+ leak"] + 0.05  # ~30% unknown images score 0 without it
    assert result.score == pytest.approx(steps["+ balance"]) == pytest.approx(result.marks.mean())
    assert result.top5.shape == (len(inputs.images), 5) and (result.top5 >= 0).all()
    assert all(len(labels) == len(set(labels)) == 5 for labels in result.labels)
    assert 0 < result.new_whale_share < 1 and result.n_leaked >= 3
    # leaked val images get their duplicate's label first
    comp = project["comp"]
    label_of = dict(zip(comp.train["image"], comp.train["label"]))
    pos = {im: i for i, im in enumerate(inputs.images)}
    leaked = [im for im in comp.leaked if im in pos]
    assert leaked and all(result.labels[pos[im]][0] == label_of[comp.leaked[im]] for im in leaked)


def test_run_equals_the_plain_python_pipeline(project):
    recipe = load_recipe(project["recipe"])
    recipe = recipe.with_params({"steps.balance.margin": 0.5, "steps.balance.min_count": 1, "steps.leak.max_distance": 2})
    inputs = prepare(recipe, "val")
    result = run(recipe, inputs, keep_scores=True)
    b = result.blended
    comp, unknown = project["comp"], inputs.unknown_code
    code = {lab: c for c, lab in enumerate(inputs.labels)}
    ref = [im for im, f in zip(comp.folds["image"], comp.folds["fold"]) if f != 0]
    ref_label = dict(zip(comp.folds["image"], comp.folds["label"]))
    rankings = [sorted(range(b.shape[1]), key=lambda j: (-b[i, j], j))[:10] for i in range(len(b))]
    top_scores = [[float(b[i, j]) for j in r] for i, r in enumerate(rankings)]
    pinned = [slow.leak_labels([(code[ref_label[r]], slow.hamming(comp.hashes[im], comp.hashes[r])) for r in ref], 2)
              for im in inputs.images]
    t = recipe.steps.new_whale.threshold
    new_whale_at = [sum(s >= np.float32(t) for s in row) for row in top_scores]
    swaps = slow.swaps([r[:2] for r in rankings], [s[:2] for s in top_scores], [p[0] if p else -1 for p in pinned], 0.5, 1)
    expected = [slow.assemble(r, p, nw, s, unknown) for r, p, nw, s in zip(rankings, pinned, new_whale_at, swaps)]
    assert result.top5.tolist() == expected
    assert sum(swaps) > 0 and sum(1 for p in pinned if p) > 0


def test_blend_is_the_weighted_mean_of_calibrated_members(project):
    """Against pandas alignment by name and float64 numpy, member by member."""
    recipe = load_recipe(project["recipe"])
    inputs = prepare(recipe, "test")
    result = run(recipe, inputs, keep_scores=True)
    classes = inputs.labels[:inputs.n_columns]

    def aligned(member):
        ps = predset.load(member.preds_dir("test"))
        frame = pd.DataFrame(np.asarray(ps.scores, dtype=np.float64), index=ps.images, columns=ps.classes)
        return frame.loc[inputs.images, classes].to_numpy()

    a, b, c = (aligned(m) for m in recipe.members)
    soft = np.exp(a - a.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    sig = 1 / (1 + np.exp(-b))  # member b: auto = its meta activation, sigmoid, T = 1
    aff = 1 / (1 + np.exp(-(8.0 * c - 2.0)))
    expected = (1.0 * soft + 0.5 * sig + 0.5 * aff) / 2.0
    np.testing.assert_allclose(result.blended, expected, rtol=1e-5, atol=1e-7)


def test_new_params_on_the_same_inputs(project):
    recipe = load_recipe(project["recipe"])
    inputs = prepare(recipe, "val")
    base = run(recipe, inputs)
    off = run(recipe.with_params({"members.1.weight": 0.0, "members.2.weight": 0.0}), inputs)
    assert off.score_by_step["blend"] != base.score_by_step["blend"]
    prop = run(recipe.with_params({"steps.new_whale.proportion": 0.25}), inputs)
    assert prop.threshold is not None
    first_unknown_model = (prop.top5[:, 0] == inputs.unknown_code) & (prop.pinned[:, 0] < 0)
    assert (prop.top_scores[:, 0] < prop.threshold).sum() == round(0.25 * len(inputs.images))
    assert first_unknown_model.sum() <= round(0.25 * len(inputs.images))
    hot = run(recipe.with_params({"members.0.calibration.temperature": 5.0}), inputs)
    assert not np.array_equal(hot.top_scores, base.top_scores)
    none = run(recipe.with_params({"steps.leak.enabled": False, "steps.balance.enabled": False}), inputs)
    assert list(none.score_by_step) == ["blend", "+ new_whale"]
    with pytest.raises(KitError, match="exceeds the distance the inputs were prepared for"):
        run(recipe.with_params({"steps.leak.max_distance": 20}), inputs)


def test_rank_calibration_and_a_submission_member(project, tmp_path):
    comp = project["comp"]
    # a perfect teammate on test (the truth first), absent on val
    perfect = tmp_path / "teammate.csv"
    pd.DataFrame({"Image": comp.test["image"], "Id": comp.test["label"] + " w_0000"}).to_csv(perfect, index=False)
    members = project["members"] + [{"submission": str(perfect), "weight": 3.0}]
    members[0] = {**members[0], "calibration": {"method": "rank"}}
    path = write_recipe(tmp_path / "b" / "r.yaml", comp.root, members, steps={})
    recipe = load_recipe(path)
    val, test = prepare(recipe, "val"), prepare(recipe, "test")
    assert val.members[3] is None and test.members[3] is not None
    assert run(recipe, val).score_by_step["blend"] > 0.3
    # the teammate's identities win where the truth is known
    res = run(recipe, test)
    known = comp.test["label"].to_numpy() != "new_whale"
    assert (np.array(res.labels, dtype=object)[known, 0] == comp.test["label"].to_numpy()[known]).all()


def test_blend_files_writes_a_valid_submission_and_pseudo_labels(project, monkeypatch, capsys):
    monkeypatch.chdir(project["root"])
    report = blend_files(project["recipe"]).summary
    out = capsys.readouterr().out
    assert "val: fold 0" in out and "+ new_whale" in out and "test:" in out and "wrote" in out
    comp = load_competition(project["comp"].root, check_images=False)
    sub = project["root"] / "blends" / "submissions" / "final.csv"
    assert check_submission(sub, comp) == []
    frame = pd.read_csv(sub)
    assert list(frame.columns) == ["Image", "Id"] and frame["Id"].str.split().map(len).eq(5).all()
    value, n = score_files(sub, project["comp"].root / "test_truth.csv")
    assert value == pytest.approx(report["test"]["map5"]) and n == len(comp.test_images)
    assert report["val"]["map5_by_step"]["+ new_whale"] > report["val"]["map5_by_step"]["blend"]
    pseudo = pd.read_csv(report["pseudo"])
    assert list(pseudo.columns) == ["Image", "Id"] and len(pseudo) == report["pseudo_count"] > 0
    assert "pseudo_right" in report  # None, or the share the test truth confirms
    truth = dict(zip(project["comp"].test["image"], project["comp"].test["label"]))
    assert np.mean([truth[im] == lab for im, lab in zip(pseudo["Image"], pseudo["Id"])]) > 0.9
    first = dict(zip(frame["Image"], frame["Id"].str.split().str[0]))
    assert all(first[im] == lab for im, lab in zip(pseudo["Image"], pseudo["Id"]))
    # where new_whale sits: first, and at ranks 2-5 (a 0% "first" no longer reads as "absent")
    ids = frame["Id"].str.split()
    later = np.mean([("new_whale" in row[1:]) for row in ids])
    assert f"at ranks 2-5 in {later:.1%}" in out


# --------------------------------------------------------------------------------- bad inputs
def edit_recipe(project, tmp_path, edit):
    d = yaml.safe_load(project["recipe"].read_text())
    edit(d)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(d))
    return load_recipe(path)


def test_missing_member(project, tmp_path):
    r = edit_recipe(project, tmp_path, lambda d: d["members"][1].update(model=str(tmp_path / "models" / "nope")))
    with pytest.raises(KitError, match=r"members\[1\]: model directory .*nope not found"):
        prepare(r, "test")
    r = edit_recipe(project, tmp_path, lambda d: d["members"][2].update(view="logit"))
    with pytest.raises(KitError, match=r"members\[2\] \(c/logit\): no test prediction set"):
        prepare(r, "test")


def test_members_that_disagree(project, tmp_path):
    comp = project["comp"]
    # classes: one member lacks an identity
    d = project["root"] / "models" / "b" / "preds" / "logit" / "test"
    ps = predset.load(d, mmap=False)
    predset.PredictionSet(np.ascontiguousarray(ps.scores[:, 1:]), ps.images, ps.classes[1:], ps.meta).save(d)
    with pytest.raises(KitError, match=r"final.yaml: members\[0\] \(.*models/a/preds/logit/test\) \(test\) and "
                                       r".*members\[1\] \(.*models/b/preds/logit/test\) \(test\) disagree on classes: "
                                       r"1 only in the first"):
        prepare(load_recipe(project["recipe"]), "test")
    # images: a member trained for another fold
    write_member(project["root"] / "models" / "b", comp, "logit", seed=2, activation="sigmoid", fold=1, splits=("val",))
    with pytest.raises(KitError, match="held out fold 1, the recipe validates on fold 0"):
        prepare(load_recipe(project["recipe"]), "val")


def test_member_images_not_the_split(project):
    d = project["root"] / "models" / "a" / "preds" / "logit" / "test"
    ps = predset.load(d, mmap=False)
    for other in ("b", "c"):
        view = "cosine" if other == "c" else "logit"
        od = project["root"] / "models" / other / "preds" / view / "test"
        ops = predset.load(od, mmap=False)
        keep = [i for i, im in enumerate(ops.images) if im != ps.images[0]]
        predset.PredictionSet(np.ascontiguousarray(ops.scores[keep]), [ops.images[i] for i in keep], ops.classes, ops.meta).save(od)
    keep = list(range(1, len(ps.images)))
    predset.PredictionSet(np.ascontiguousarray(ps.scores[keep]), ps.images[1:], ps.classes, ps.meta).save(d)
    with pytest.raises(KitError, match=rf"its images are not the test images .*1 missing \(e.g. '{ps.images[0]}'\)"):
        prepare(load_recipe(project["recipe"]), "test")


def test_nan_scores(project):
    d = project["root"] / "models" / "c" / "preds" / "cosine" / "val"
    scores = np.load(d / "scores.npy")
    scores[3, 2] = np.nan
    np.save(d / "scores.npy", scores)
    with pytest.raises(KitError, match="scores.npy has NaN or infinite values in 1 row"):
        prepare(load_recipe(project["recipe"]), "val")


def test_view_and_kind_mismatch(project, tmp_path):
    src = project["root"] / "models" / "c" / "preds" / "cosine"
    src.rename(src.with_name("logit"))
    r = edit_recipe(project, tmp_path, lambda d: d["members"][2].update(view="logit", calibration={}))
    with pytest.raises(KitError, match="kind is 'cosine' but the recipe's view is 'logit'"):
        prepare(r, "test")


def test_unknown_label_among_classes(project, tmp_path):
    comp = project["comp"]
    rng = np.random.default_rng(0)
    t = comp.test
    classes = comp.known + ["new_whale"]
    predset.PredictionSet(noisy_scores(t["label"].tolist(), classes, 3, rng), t["image"].tolist(), classes,
                          {"kind": "logit", "model": "d", "split": "test", "activation": "softmax"}).save(
        tmp_path / "models" / "d" / "preds" / "logit" / "test")
    r = edit_recipe(project, tmp_path, lambda d: d.update(members=[{"model": str(tmp_path / "models" / "d"), "view": "logit"}]))
    with pytest.raises(KitError, match="classes.txt lists the unknown label 'new_whale'"):
        prepare(r, "test")


def test_leak_needs_hashes(tmp_path):
    comp = make_competition(tmp_path / "data", hashes=False)
    m = write_member(tmp_path / "models" / "a", comp)
    path = write_recipe(tmp_path / "r.yaml", comp.root, [{"model": str(m), "view": "logit"}])
    with pytest.raises(KitError, match=r"steps.leak needs .*hashes.csv"):
        prepare(load_recipe(path), "val")
    r = load_recipe(path).with_params({"steps.leak.enabled": False})
    assert "+ leak" not in run(r, prepare(r, "val")).score_by_step


def test_inputs_belong_to_their_recipe(project, tmp_path):
    recipe = load_recipe(project["recipe"])
    inputs = prepare(recipe, "val")
    other = edit_recipe(project, tmp_path, lambda d: d["members"].pop())
    with pytest.raises(KitError, match="members differ from those the inputs were prepared for"):
        run(other, inputs)


def test_submission_member_missing_images(project, tmp_path):
    bad = tmp_path / "teammate.csv"
    bad.write_text("Image,Id\nte00000.jpg,w_0001\n")
    r = edit_recipe(project, tmp_path, lambda d: d["members"].append({"submission": str(bad), "weight": 1.0}))
    with pytest.raises(KitError, match=r"teammate.csv: 59 of the 60 images missing"):
        prepare(r, "test")


def test_blend_script(project):
    root = project["root"]
    ok = subprocess.run([sys.executable, "scripts/blend.py", str(project["recipe"]), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "+ balance" in ok.stdout and (root / "blends" / "submissions" / "final.csv").is_file()

    d = yaml.safe_load(project["recipe"].read_text())
    d["steps"]["new_whale"]["treshold"] = d["steps"]["new_whale"].pop("threshold")
    d["output"] = str(root / "elsewhere")
    bad = root / "blends" / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    out = subprocess.run([sys.executable, "scripts/blend.py", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "treshold" in out.stderr and "did you mean 'threshold'" in out.stderr
    assert not (root / "elsewhere").exists()


# ------------------------------------------------------------------------------ out-of-fold members
def write_oof_member(model_dir, comp, signal, seed, view="logit"):
    """preds/<view>/oof: every held-out image of every fold (rows shuffled), and preds/<view>/test."""
    rng = np.random.default_rng(seed)
    classes = [comp.known[j] for j in rng.permutation(len(comp.known))]
    held = comp.folds[comp.folds["fold"] >= 0].sample(frac=1, random_state=seed)
    for split, frame in (("oof", held), ("test", comp.test)):
        s = noisy_scores(frame["label"].tolist(), classes, signal, rng)
        meta = {"kind": view, "model": model_dir.name, "split": split, "folds": [0, 1]}
        if view == "logit":
            meta["activation"] = "softmax"
        predset.PredictionSet(s, frame["image"].tolist(), classes, meta).save(model_dir / "preds" / view / split)
    return model_dir


def test_out_of_fold_members_validate_on_every_fold(project, tmp_path):
    comp = project["comp"]
    a = write_oof_member(tmp_path / "models" / "oof_a", comp, 3.0, seed=1)
    b = write_oof_member(tmp_path / "models" / "oof_b", comp, 2.0, seed=2)
    # two held-out images of one fold with the same hash: neither may pin the other (neither trained on it)
    fold_of = dict(zip(comp.folds["image"], comp.folds["fold"]))
    f0 = [im for im in comp.folds["image"][comp.folds["fold"] == 0] if im not in comp.leaked][:2]
    hashes = pd.read_csv(comp.root / "hashes.csv")
    hashes.loc[hashes["Image"] == f0[1], "phash"] = hashes.loc[hashes["Image"] == f0[0], "phash"].iloc[0]
    hashes.to_csv(comp.root / "hashes.csv", index=False)
    members = [{"model": str(a), "view": "logit"}, {"model": str(b), "view": "logit"}]
    path = write_recipe(tmp_path / "blends" / "oof.yaml", comp.root, members, fold="all")
    recipe = load_recipe(path)
    assert recipe.fold == "all" and recipe.val_split == "oof" and recipe.auto_weights
    val = prepare(recipe, "val")
    held = comp.folds[comp.folds["fold"] >= 0]
    assert sorted(val.images) == sorted(held["image"]) and len(val.images) > 2 * len(comp.val(0)) - 5
    truth = dict(zip(held["image"], held["label"]))
    assert [val.labels[c] for c in val.truth] == [truth[im] for im in val.images]
    # the leak looks only in other folds (and the always-train images): never the image's own fold
    m = val.leak.matches
    query_fold = np.array([fold_of[im] for im in val.images])[m.query]
    ref_fold = np.array([fold_of[im] for im in val.leak.ref_images])[m.index]
    assert len(m.index) > 0 and (query_fold != ref_fold).all()
    result = run(recipe, val)
    assert result.score_by_step["+ new_whale"] > result.score_by_step["blend"] and result.recipe.members[0].weight > 0
    out = blend_files(path, echo=lambda line: None)
    assert out.summary["val"]["images"] == len(held) and out.weights is not None
    # a member without out-of-fold sets is named
    single = write_recipe(tmp_path / "blends" / "bad.yaml", comp.root, project["members"], fold="all")
    with pytest.raises(KitError, match=r"no oof prediction set at .*fold: all needs out-of-fold members"):
        prepare(load_recipe(single), "val")
    with pytest.raises(KitError, match=r"fold = 'al' is not allowed; expected an integer or all; did you mean 'all'\?"):
        load_recipe(write_recipe(tmp_path / "blends" / "typo.yaml", comp.root, members, fold="al"))


def test_a_member_exported_from_another_competition_is_named(project, tmp_path):
    """A blend whose data: is not the competition its members were exported from: one line saying so."""
    d = project["root"] / "models" / "b" / "preds" / "logit" / "test"
    ps = predset.load(d, mmap=False)
    predset.PredictionSet(ps.scores, ps.images, ps.classes, {**ps.meta, "data": str(tmp_path / "faces")}).save(d)
    with pytest.raises(KitError, match=r"data is .*, but members\[1\] \(b/logit\) was exported from .*faces; "
                                       r"point the blend's data: at the members' competition"):
        prepare(load_recipe(project["recipe"]), "test")
    ps.meta["data"] = str(Path(load_recipe(project["recipe"]).data).resolve())  # the same directory: fine
    predset.PredictionSet(ps.scores, ps.images, ps.classes, ps.meta).save(d)
    prepare(load_recipe(project["recipe"]), "test")


def test_a_project_that_moves_still_blends_and_another_competition_in_its_place_does_not(project, tmp_path,
                                                                                          monkeypatch):
    """Prediction sets named their competition by its absolute path: a copied project (or members a GPU
    box exported, blended on a laptop) was refused until every meta.json was edited, while another
    competition generated at the same path passed. Now the competition is named by its content."""
    import shutil

    from kit.testing import make_label_competition

    from kit.data import load_competition

    root, comp = project["root"], project["comp"]
    digest = load_competition(comp.root, check_images=False).digest()
    for m in ("a", "b", "c"):  # as this release exports them: the path and the digest
        for d in (root / "models" / m / "preds").glob("*/*"):
            ps = predset.load(d, mmap=False)
            predset.PredictionSet(ps.scores, ps.images, ps.classes,
                                  {**ps.meta, "data": str(comp.root.resolve()), "competition": digest}).save(d)
    copy = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(root, copy)
    shutil.rmtree(root / "data")  # the original is gone: moved, not copied
    monkeypatch.chdir(copy)
    members = [{**m, "model": f"models/{Path(m['model']).name}"} for m in project["members"]]
    recipe = write_recipe(copy / "blends" / "moved.yaml", "data", members)
    assert len(prepare(load_recipe(recipe), "test").images) == len(load_competition("data", check_images=False).test_images)
    shutil.rmtree(copy / "data")
    make_label_competition(copy / "data", seed=5)  # another competition where the members' was
    with pytest.raises(KitError, match=r"members\[0\] \(a/logit\) was exported from another competition than data "
                                       r"\(made on .*: its train images, labels, test images or folds differ\)"):
        prepare(load_recipe(recipe), "test")


def test_the_report_never_reads_a_host_file(project):
    """Issue 13's leak: a train.csv name like ../../secret.png (matching rows in folds.csv and
    hashes.csv) made blend.py's report embed a host file. The competition loader now refuses the
    name, whoever loads it: one line, exit 2, nothing written."""
    root, data = project["root"], project["comp"].root
    secret = root / "secret.png"
    secret.write_bytes(b"not for the report")
    rel = os.path.relpath(secret, data / "train")
    for name in ("train.csv", "folds.csv", "hashes.csv"):
        frame = pd.read_csv(data / name, dtype=str)
        if "Image" in frame and len(frame):
            frame.loc[0, "Image"] = rel
            frame.to_csv(data / name, index=False)
    out = subprocess.run([sys.executable, "scripts/blend.py", str(project["recipe"])], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert "train.csv: Image" in out.stderr and "is not a plain file name" in out.stderr
    assert not (root / "blends" / "submissions").exists()


def test_a_prediction_set_with_foreign_text_or_a_non_object_meta_is_one_line(project):
    """Issue 13: a Latin-1 images.txt/classes.txt gave UnicodeDecodeError, a meta.json holding a list
    gave AttributeError; each is now one line naming the file."""
    d = project["root"] / "models" / "a" / "preds" / "logit" / "test"
    good = (d / "classes.txt").read_bytes()
    (d / "classes.txt").write_bytes(good + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(KitError, match=r"classes.txt: not UTF-8 text"):
        predset.load(d)
    (d / "classes.txt").write_bytes(good)
    (d / "meta.json").write_text("[1, 2]")
    with pytest.raises(KitError, match=r"meta.json: must be a JSON object of keys, got list"):
        predset.load(d)


def test_the_reports_diagnostics_equal_running_the_pipeline_again(project):
    """evaluate() computes what the report shows once (the report only renders it): each number is
    what re-running the pipeline gives."""
    blend_run = evaluate(project["recipe"])
    recipe, (inputs, _) = blend_run.recipe, blend_run.val
    d = blend_run.diagnostics
    for i, alone in enumerate(d.members):
        assert alone.score_bare == run(recipe.without_steps().only_member(i), inputs).score
        assert alone.score_with_steps == run(recipe.only_member(i), inputs).score
    assert d.blend_bare == run(recipe.without_steps(), inputs).score
    grid, maps, shares = d.threshold_curve
    for k in range(0, len(grid), 7):
        again = run(recipe.with_params({"steps.new_whale.threshold": float(grid[k])}), inputs)
        assert maps[k] == pytest.approx(again.score, abs=1e-12) and shares[k] == pytest.approx(again.new_whale_share)


def test_an_identity_new_to_the_fold_is_scored_as_the_unknown_label(project):
    """Happywhale's validation: a held-out image whose identity has no image outside its fold is what
    the members never saw, so its answer is the unknown label (kit.data.folds.fold_truth)."""
    from kit.data.folds import read_folds, write_folds
    from kit.post.inputs import prepare
    from kit.post.recipe import load_recipe

    folds_csv = project["comp"].root / "folds.csv"
    folds = read_folds(folds_csv)
    held = folds[(folds.fold == 0) & (folds.label != "new_whale")]
    label = held.label.iloc[0]
    before = prepare(load_recipe(project["recipe"]), "val")
    row = before.images.index(held.image.iloc[0])
    assert before.labels[before.truth[row]] == label
    # the image becomes the one photo of an identity seen once (train.csv and folds.csv agree)
    train_csv = project["comp"].root / "train.csv"
    train = pd.read_csv(train_csv)
    train.loc[train.Image == held.image.iloc[0], "Id"] = "w_once"
    train.to_csv(train_csv, index=False)
    folds.loc[folds.image == held.image.iloc[0], "label"] = "w_once"
    write_folds(folds_csv, folds)
    after = prepare(load_recipe(project["recipe"]), "val")
    assert after.truth[row] == after.unknown_code  # no member trained on it: new to the fold
    names = lambda inputs: [inputs.labels[c] for i, c in enumerate(inputs.truth) if i != row]
    assert names(after) == names(before)  # the rest as they were
