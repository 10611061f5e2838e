"""An out-of-fold member: its fold members exported one by one, then oof (stacked val) and test (mean) sets."""
import json
import os
import shutil
import time

import numpy as np
import pytest

from kit.data import load_competition
from kit.data.folds import read_folds
from kit.errors import KitError
from kit.export.check import map5_parity
from kit.export.layout import find_members
from kit.export.member import export_member
from kit.export.oof import fold_mean, out_of_fold
from kit.predset import PredictionSet, reindex
from kit.predset import load as load_set
from kit.testing import make_member, make_oof_member

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

VIEWS = ("logit", "cosine")


@pytest.fixture(scope="module")
def oof_member(tmp_path_factory, tiny_data):
    """models/oof/ with fold0/ and fold1/ (untrained weights, a seed each), exported once."""
    parent = make_oof_member(tmp_path_factory.mktemp("models") / "oof", tiny_data)
    export_member(parent, batch=8, provider="cpu", progress=False, log=lambda s: None)
    return parent


def test_find_members_lists_the_parent_never_its_folds(tmp_path, tiny_data):
    make_oof_member(tmp_path / "oof", tiny_data)
    make_member(tmp_path / "single", tiny_data, flip="none")
    assert find_members(tmp_path) == [tmp_path / "oof", tmp_path / "single"]


@pytest.mark.parametrize("view", VIEWS)
def test_oof_set_holds_every_held_out_image_once_from_the_fold_that_never_saw_it(oof_member, tiny_data, view):
    oof = load_set(oof_member / "preds" / view / "oof")
    folds = read_folds(tiny_data / "folds.csv", load_competition(tiny_data).train)
    held_out = folds[folds.fold != -1]
    assert sorted(oof.images) == sorted(held_out.image) and len(set(oof.images)) == len(oof.images)
    start = 0
    for k in (0, 1):  # fold by fold, ascending, each in its fold member's own row order
        own = load_set(oof_member / f"fold{k}" / "preds" / view / "val")
        assert set(own.images) == set(held_out[held_out.fold == k].image)
        assert oof.images[start:start + len(own.images)] == own.images
        assert np.array_equal(oof.scores[start:start + len(own.images)], reindex(own, own.images, oof.classes))
        start += len(own.images)
    assert oof.meta["kind"] == view and oof.meta["split"] == "oof" and oof.meta["model"] == "oof"
    assert oof.meta["folds"] == [0, 1] and "fold" not in oof.meta
    assert oof.meta["tta"] == "none" and oof.meta["provider"] == "cpu"
    if view == "logit":
        assert oof.meta["activation"] == "softmax"


@pytest.mark.parametrize("view", VIEWS)
def test_test_set_is_the_mean_of_the_fold_members(oof_member, view):
    mean = load_set(oof_member / "preds" / view / "test")
    own = [load_set(oof_member / f"fold{k}" / "preds" / view / "test") for k in (0, 1)]
    expected = np.mean([reindex(ps, mean.images, mean.classes) for ps in own], axis=0)
    assert np.allclose(mean.scores, expected, rtol=0, atol=1e-6)
    assert not np.allclose(own[0].scores, own[1].scores, atol=1e-3)  # the folds really differ
    assert mean.meta["split"] == "test" and mean.meta["fold"] == "all" and mean.meta["folds"] == [0, 1]
    assert mean.meta["kind"] == view and mean.meta["model"] == "oof"


def test_parent_report_and_rerun(oof_member):
    report = json.loads((oof_member / "export.json").read_text())
    assert report["folds"] == [0, 1] and report["model"] == "oof"
    assert report["sets"] == ["preds/logit/oof", "preds/logit/test", "preds/cosine/oof", "preds/cosine/test"]
    for k in (0, 1):
        member = report["members"][f"fold{k}"]
        assert member["model"] == f"oof.fold{k}" and member["provider"] == "cpu"
        assert member["parity"]["rel_error"]["logits"] < 1e-4
    said = []
    export_member(oof_member, provider="cpu", progress=False, log=said.append)
    assert said == [f"{oof_member}: up to date (oof and test sets newer than every fold's checkpoint.pt); "
                    "--force to redo"]
    # one fold trained on: that fold and the parent are redone, the other fold is not
    before = {p: (oof_member / p).stat().st_mtime_ns for p in ("fold0/model.onnx", "preds/logit/test/meta.json")}
    time.sleep(0.01)
    os.utime(oof_member / "fold1" / "checkpoint.pt")
    said.clear()
    export_member(oof_member, provider="cpu", progress=False, log=said.append, batch=8)
    assert said[0].startswith(f"{oof_member / 'fold0'}: up to date")
    assert (oof_member / "fold0/model.onnx").stat().st_mtime_ns == before["fold0/model.onnx"]
    assert (oof_member / "preds/logit/test/meta.json").stat().st_mtime_ns > before["preds/logit/test/meta.json"]


def test_map5_parity_is_per_fold_member(oof_member, capsys):
    import importlib.util
    from pathlib import Path

    with pytest.raises(KitError, match=r"an out-of-fold member; MAP@5 parity is checked per fold member"):
        map5_parity(oof_member)
    spec = importlib.util.spec_from_file_location("export_script", Path(__file__).parents[2] / "scripts" / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(oof_member), "--provider", "cpu", "--check-map5"]) == 0
    out = capsys.readouterr().out
    assert "--check-map5 checks each fold member" in out
    assert f"{oof_member / 'fold0'}: logit  val" in out and f"{oof_member / 'fold1'}: cosine val" in out


def test_a_fold_missing_from_folds_csv_is_one_line(tmp_path, tiny_data):
    parent = make_oof_member(tmp_path / "oof", tiny_data)
    shutil.rmtree(parent / "fold1")
    with pytest.raises(KitError, match=r"oof: fold 1 of .*folds.csv is not trained \(no .*fold1/checkpoint.pt\); "
                                       r"run scripts/train.py RECIPE --folds --resume$"):
        export_member(parent, provider="cpu", progress=False, log=lambda s: None)


def _set(images, classes, scores, split="val"):
    return PredictionSet(np.asarray(scores, dtype=np.float32), list(images), list(classes),
                         {"kind": "logit", "activation": "softmax", "split": split, "model": "m", "tta": "none"})


def test_fold_members_that_disagree_on_classes_fail_in_one_line(tmp_path):
    dirs = {0: tmp_path / "oof" / "fold0", 1: tmp_path / "oof" / "fold1"}
    sets = {0: _set(["a"], ["w_1", "w_2"], [[1, 2]]), 1: _set(["b"], ["w_1", "w_3"], [[3, 4]])}
    for combine in (out_of_fold, fold_mean):
        with pytest.raises(KitError) as e:
            combine(sets, dirs, "oof")
        msg = str(e.value)
        assert "\n" not in msg and str(dirs[0]) in msg and str(dirs[1]) in msg and "'w_2' only in fold0" in msg


def test_combining_aligns_by_name_never_by_position(tmp_path):
    dirs = {0: tmp_path / "fold0", 1: tmp_path / "fold1"}
    test = {0: _set(["x", "y"], ["w_1", "w_2"], [[1, 2], [3, 4]], "test"),
            1: _set(["y", "x"], ["w_2", "w_1"], [[40, 30], [20, 10]], "test")}
    mean = fold_mean(test, dirs, "oof")
    assert mean.images == ["x", "y"] and mean.classes == ["w_1", "w_2"]
    assert mean.scores.tolist() == [[5.5, 11.0], [16.5, 22.0]] and mean.meta["fold"] == "all"
    val = {1: _set(["b"], ["w_2", "w_1"], [[4, 3]]), 0: _set(["a"], ["w_1", "w_2"], [[1, 2]])}
    oof = out_of_fold(val, dirs, "oof")
    assert oof.images == ["a", "b"] and oof.scores.tolist() == [[1, 2], [3, 4]] and oof.meta["folds"] == [0, 1]
    oof.validate()  # "oof" is a split of the prediction-set contract
