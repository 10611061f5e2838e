"""scripts/export.py end to end: prediction sets in the contract format, re-runs, MAP@5 parity."""
import json
import os
import time

import numpy as np
import pytest

from kit.data import load_competition
from kit.data.folds import read_folds
from kit.errors import KitError
from kit.export.check import map5_parity
from kit.export.member import export_member
from kit.predset import load as load_set
from kit.testing import make_member
from kit.train.model import load_member

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's


def expected_rows(data, fold):
    comp = load_competition(data)
    folds = read_folds(data / "folds.csv", comp.train)
    return {"val": folds[folds.fold == fold].image.tolist(), "test": comp.test_images}, comp, folds


@pytest.mark.parametrize("view", ["logit", "cosine"])
@pytest.mark.parametrize("split", ["val", "test"])
def test_prediction_sets_follow_the_contract(twin_member, tiny_data, view, split):
    _, info = load_member(twin_member)
    d = twin_member / "preds" / view / split
    scores = np.load(d / "scores.npy", allow_pickle=False)  # a plain array: no pickle
    assert scores.dtype == np.float32 and scores.flags.c_contiguous
    rows, _, _ = expected_rows(tiny_data, info.fold)
    images = (d / "images.txt").read_text().splitlines()
    classes = (d / "classes.txt").read_text().splitlines()
    assert images == rows[split]
    assert classes == list(info.classes)  # K identities, the flip twins folded back
    assert scores.shape == (len(images), len(classes))
    meta = json.loads((d / "meta.json").read_text())
    assert meta["kind"] == view and meta["model"] == "twin" and meta["split"] == split
    assert meta["fold"] == 0 and meta["tta"] == "flip" and meta["provider"] == "cpu"
    assert meta["competition"] == load_competition(tiny_data).digest()  # what it was made on, wherever it lies
    if view == "logit":
        assert meta["activation"] == "softmax"
    else:
        assert np.all(np.abs(scores) <= 1 + 1e-5)
    load_set(d)  # and the kit's own loader accepts it


def test_val_gallery_never_holds_the_val_images(twin_member, tiny_data):
    rows, comp, folds = expected_rows(tiny_data, 0)
    val = json.loads((twin_member / "preds/cosine/val/meta.json").read_text())
    test = json.loads((twin_member / "preds/cosine/test/meta.json").read_text())
    outside = folds[(folds.fold != 0) & (folds.label != comp.unknown)]
    assert val["gallery_images"] == len(outside)
    assert not set(rows["val"]) & set(outside.image)
    assert test["gallery_images"] == int((comp.train.label != comp.unknown).sum())


def test_rerun_skips_fresh_members_and_redoes_stale_ones(twin_member):
    before = (twin_member / "model.onnx").stat().st_mtime_ns
    said = []
    export_member(twin_member, provider="cpu", progress=False, log=said.append)
    assert "up to date" in said[0] and (twin_member / "model.onnx").stat().st_mtime_ns == before
    # A newer checkpoint (training went on) makes every output stale.
    time.sleep(0.01)
    os.utime(twin_member / "checkpoint.pt")
    with pytest.raises(KitError, match="not exported from the current checkpoint.pt"):
        map5_parity(twin_member)
    said.clear()
    export_member(twin_member, provider="cpu", progress=False, log=said.append, batch=16)
    assert not any("up to date" in s for s in said)
    assert (twin_member / "model.onnx").stat().st_mtime_ns > before
    assert (twin_member / "export.json").stat().st_mtime > (twin_member / "checkpoint.pt").stat().st_mtime


def test_onnx_and_pytorch_give_the_same_local_map5(twin_member, tiny_data):
    rows = map5_parity(twin_member, batch=4)
    assert {(r.view, r.split) for r in rows} == {("logit", "val"), ("cosine", "val")}  # no test truth here
    for r in rows:
        assert r.diff <= 1e-4, r
        assert r.max_score_diff < 1e-4, r
    # each view at its own threshold: the best of the validation grid for that view's scores
    from kit.export.check import own_threshold

    folds = read_folds(tiny_data / "folds.csv", load_competition(tiny_data).train)
    truth = folds[folds["fold"] == load_member(twin_member)[1].fold][["image", "label"]]
    for r in rows:
        ps = load_set(twin_member / "preds" / r.view / "val", mmap=False)
        assert r.threshold == own_threshold(ps, truth, "new_whale", 0.5)
    fixed = map5_parity(twin_member, batch=4, threshold={"logit": 0.5, "cosine": 0.5})
    assert all(f.threshold == 0.5 for f in fixed)


def test_arcface_member_skip_infer_exports_only(tmp_path, tiny_data):
    member = make_member(tmp_path / "arc", tiny_data, head="arcface", flip="same", fold=1)
    report = export_member(member, skip_infer=True, progress=False, log=lambda s: None)
    assert (member / "model.onnx").is_file() and not (member / "preds").exists()
    assert report["parity"]["rel_error"]["logits"] < 1e-4 and report["sets"] == []


def test_cli_errors_are_one_line(tmp_path, export_script):
    main = export_script.main

    with pytest.raises(KitError, match="no trained member"):
        main(["--models", str(tmp_path)])
    with pytest.raises(KitError, match="no checkpoint.pt"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--provider", "tpu"])


def test_cli_exports_and_checks_map5(twin_member, export_script, capsys):
    assert export_script.main([str(twin_member), "--provider", "cpu", "--batch", "8", "--check-map5"]) == 0
    out = capsys.readouterr().out
    assert "logit  val" in out and "cosine val" in out and "MAP@5 onnxruntime" in out


@pytest.fixture
def export_script():
    """scripts/export.py as a module (scripts/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("export_script", Path(__file__).parents[2] / "scripts" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_export_of_a_new_checkpoint_leaves_no_stale_outputs(tmp_path, tiny_data, monkeypatch):
    from onnx import numpy_helper
    import onnx

    from kit.export import exporter
    from kit.export.exporter import ParityError

    member = make_member(tmp_path / "m", tiny_data, flip="none")
    old = time.time() - 100  # what an export of the previous checkpoint left
    for f in ("model.onnx", "export.json", "preds/logit/val/scores.npy"):
        (member / f).parent.mkdir(parents=True, exist_ok=True)
        (member / f).write_text("old")
        os.utime(member / f, (old, old))
    real = exporter.export_onnx

    def broken(model, info, path, **kw):
        used = real(model, info, path, **kw)
        m = onnx.load(str(path))
        t = next(t for t in m.graph.initializer if numpy_helper.to_array(t).dtype == np.float32 and t.dims)
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(3), t.name))
        onnx.save(m, str(path))
        return used

    monkeypatch.setattr(exporter, "export_onnx", broken)
    with pytest.raises(ParityError, match="parity check failed"):
        export_member(member, progress=False, log=lambda s: None)
    assert sorted(p.name for p in member.iterdir()) == ["checkpoint.pt", "classes.txt", "recipe.yaml"]


@pytest.mark.parametrize("flip, auto", [("twin", True), ("same", True), ("none", False)])
def test_flip_tta_only_for_members_that_trained_on_mirrors(tmp_path, tiny_data, flip, auto):
    from kit.export.member import use_flip_tta

    member = make_member(tmp_path / flip, tiny_data, flip=flip)
    _, info = load_member(member)
    assert use_flip_tta("auto", member, info) is auto
    assert use_flip_tta("flip", member, info) is True and use_flip_tta("none", member, info) is False


def test_a_corrupt_image_training_skipped_does_not_stop_the_export(tmp_path, tiny_data):
    """Issue 13: export refused a member whose gallery held a corrupt image that train.py had
    skipped. Now it does as training did: the image is left out of the gallery, and a corrupt test
    image (the submission needs its row) is scored as a blank image; one warning names them."""
    import shutil

    data = tmp_path / "competition"
    shutil.copytree(tiny_data, data)
    comp = load_competition(data)
    member = make_member(tmp_path / "m", data, head="softmax", flip="same", fold=0)
    folds = read_folds(data / "folds.csv", comp.train)
    gallery_image = folds[(folds.fold != 0) & (folds.label != comp.unknown)].image.iloc[0]
    (data / "train" / gallery_image).write_bytes(b"not a jpeg")
    (data / "test" / comp.test_images[0]).write_bytes(b"")
    lines = []
    export_member(member, batch=5, provider="cpu", progress=False, log=lines.append)
    warning = [line for line in lines if "cannot be read" in line]
    assert len(warning) == 1 and "2 image(s)" in warning[0]
    test = load_set(member / "preds" / "cosine" / "test")
    assert test.meta["gallery_images"] == int((comp.train.label != comp.unknown).sum()) - 1
    assert comp.test_images[0] in test.images and np.isfinite(np.asarray(test.scores)).all()


def test_a_full_disk_is_one_line_and_the_previous_export_stays_whole(twin_member, tiny_data, full_disk, tmp_path):
    """Issue 13: export.py on a full disk gave an ENOSPC traceback. Now one line naming the file, and
    the member's previous model.onnx, prediction sets and export.json stay exactly as they were:
    a run's outputs move into place together, once all of them are written."""
    import subprocess
    import sys
    from pathlib import Path

    from faults import one_error_line, snapshot

    disk = full_disk(tmp_path / "full", keep=[twin_member], size="160m")
    member = disk / twin_member.name
    before = {name: (member / name).read_bytes() for name in ("model.onnx", "export.json")}
    files = snapshot(disk)
    out = subprocess.run([sys.executable, "scripts/export.py", str(member), "--data", str(tiny_data), "--force",
                          "--provider", "cpu", "--quiet"], cwd=Path(__file__).parents[2], capture_output=True, text=True)
    err = one_error_line(out)
    assert str(member) in err and "No space left on device" in err
    assert snapshot(disk) == files
    assert all((member / name).read_bytes() == data for name, data in before.items())


def test_the_knn_view_exports_and_blends(tmp_path, tiny_data):
    """export --knn K writes preds/knn/{val,test} (cosines among the K nearest gallery images, the
    mirrored gallery included); a blend recipe takes it as a member like any view."""
    from kit.post.evaluation import evaluate
    from kit.post.recipe import recipe_from_dict

    member = make_member(tmp_path / "models" / "arc", tiny_data, head="arcface", flip="same", fold=0)
    report = export_member(member, batch=5, provider="cpu", knn=4, progress=False, log=lambda s: None)
    assert {"preds/knn/val", "preds/knn/test"} <= set(report["sets"]) and report["options"]["knn"] == 4
    knn, cosine = load_set(member / "preds" / "knn" / "val"), load_set(member / "preds" / "cosine" / "val")
    assert knn.meta["knn"] == 4 and knn.kind == "cosine" and knn.classes == cosine.classes
    assert ((knn.scores > -1).sum(axis=1) <= 4).all()  # at most K identities per image have a neighbour
    # without flip TTA (no mirrored neighbours), an identity among the K nearest scores its nearest image
    plain = export_member(member, batch=5, provider="cpu", tta="none", cosine="nearest", knn=4, force=True,
                          progress=False, log=lambda s: None)
    assert plain["options"]["cosine"] == "nearest"
    knn, best = (load_set(member / "preds" / view / "val").scores for view in ("knn", "cosine"))
    hit = knn > -1
    assert hit.sum(axis=1).min() >= 1 and hit.sum(axis=1).max() <= 4
    np.testing.assert_allclose(knn[hit], best[hit], atol=1e-5)
    recipe = recipe_from_dict({"name": "k", "data": str(tiny_data), "fold": 0,
                               "members": [{"model": str(member), "view": "knn"}, {"model": str(member), "view": "logit"}],
                               "steps": {"new_whale": {"threshold": 0.5}}}, "blends/k.yaml")
    run = evaluate(recipe)
    assert run.val is not None and run.recipe.members[0].calibration.method == "auto"
    assert "members.0.calibration.scale" in recipe.tunable_params()  # a cosine view: affine's parameters


def test_an_animalclef_member_exports_from_the_sub_folder_images(tmp_path):
    """AnimalCLEF's layout (metadata.csv, images at their paths): the prediction sets' rows are the
    image ids, test images the query rows."""
    from kit.testing import make_competition

    data = make_competition(tmp_path / "clef", "animalclef", n_ids=8, per_id=3, n_unknown=4, n_test=7, boxes=True,
                            folds=2, seed=1)
    member = make_member(tmp_path / "models" / "clef", data, head="softmax", flip="twin")
    export_member(member, batch=5, provider="cpu", progress=False, log=lambda s: None)
    rows, comp, _ = expected_rows(data, 0)
    for split in ("val", "test"):
        assert (member / "preds" / "logit" / split / "images.txt").read_text().splitlines() == rows[split]
    assert rows["test"] == [str(i) for i in range(28, 35)]
