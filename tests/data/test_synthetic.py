"""The synthetic competition: Kaggle's layout, the real label statistics, the leak, determinism.

Images are rendered only at the "tiny" size (a few seconds); statistics are checked on label
plans, which draw every label and duplicate without rendering, up to the real kaggle size.
"""
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data import load_competition
from kit.data import synthetic, synthetic_photos
from kit.data.synthetic import SIZES, UNKNOWN, generate, plan
from kit.errors import KitError

FILES = ("train.csv", "sample_submission.csv", "bounding_boxes.csv", "test_truth.csv", "synthetic.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synthetic") / "tiny", "tiny", seed=0, progress=False, workers=2)


@pytest.fixture(scope="module")
def tiny_one_worker(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synthetic") / "tiny", "tiny", seed=0, progress=False, workers=1)


def thumb(path) -> np.ndarray:
    """A 32x32 grey thumbnail, the scale at which a re-encoded copy must look like its source."""
    return np.asarray(Image.open(path).convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_bytes_whatever_the_workers(tiny, tiny_one_worker):
    for name in FILES:
        assert (tiny / name).read_bytes() == (tiny_one_worker / name).read_bytes(), name
    for split in ("train", "test"):
        names = sorted(p.name for p in (tiny / split).iterdir())
        assert names == sorted(p.name for p in (tiny_one_worker / split).iterdir())
        for name in names:
            assert (tiny / split / name).read_bytes() == (tiny_one_worker / split / name).read_bytes(), name


def test_another_seed_another_competition(tiny, tmp_path):
    a, b = plan("tiny", 0), plan("tiny", 1)
    assert not set(a.image) & set(b.image) and not set(a.label) & set(b.label) - {UNKNOWN}
    other = generate(tmp_path / "seed1", "tiny", seed=1, progress=False, workers=2)
    assert (other / "train.csv").read_bytes() != (tiny / "train.csv").read_bytes()
    first = sorted((other / "train").iterdir())[0].read_bytes()
    assert first not in {p.read_bytes() for p in (tiny / "train").iterdir()}


def test_plan_is_pure():
    a, b = plan("small", 3), plan("small", 3)
    for field in ("image", "label", "animal", "source", "grey", "caption"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


# --- layout ----------------------------------------------------------------------------------


def test_kaggle_layout(tiny):
    for name in FILES:
        assert (tiny / name).is_file(), name
    train = pd.read_csv(tiny / "train.csv")
    sub = pd.read_csv(tiny / "sample_submission.csv")
    truth = pd.read_csv(tiny / "test_truth.csv")
    boxes = pd.read_csv(tiny / "bounding_boxes.csv")
    assert list(train.columns) == ["Image", "Id"] and len(train) == SIZES["tiny"].n_train
    assert list(sub.columns) == ["Image", "Id"] and len(sub) == SIZES["tiny"].n_test
    assert list(truth.columns) == ["Image", "Id"] and list(truth.Image) == list(sub.Image)
    assert list(boxes.columns) == ["Image", "x0", "y0", "x1", "y1"]
    assert sorted(boxes.Image) == sorted([*train.Image, *sub.Image])
    assert not set(train.Image) & set(sub.Image)
    assert all(re.fullmatch(r"[0-9a-f]{9}\.jpg", n) for n in [*train.Image, *sub.Image])
    assert all(re.fullmatch(r"w_[0-9a-f]{7}", l) for l in train.Id if l != UNKNOWN)
    # Like Kaggle's: new_whale and the four most frequent ids, the same for every row.
    top = train[train.Id != UNKNOWN].Id.value_counts()
    assert sub.Id.nunique() == 1
    guess = sub.Id[0].split()
    assert guess[0] == UNKNOWN and len(guess) == 5 and set(guess[1:]) <= set(top.index)
    assert top[guess[1]] == top.max()
    assert list(train.Image) == sorted(train.Image)


def test_every_image_opens_and_its_box_fits(tiny):
    boxes = pd.read_csv(tiny / "bounding_boxes.csv").set_index("Image")
    p = plan("tiny", 0)
    grey = dict(zip(p.image, p.grey))
    for split in ("train", "test"):
        for path in (tiny / split).iterdir():
            with Image.open(path) as im:
                assert im.format == "JPEG"
                assert im.mode == ("L" if grey[path.name] else "RGB"), path.name  # greyscale is 1-channel, like Kaggle's
                w, h = im.size
            assert 150 <= w <= 384 and h >= 40  # tiny photos are 256-384 wide; copies may shrink
            x0, y0, x1, y1 = boxes.loc[path.name]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, path.name


def test_the_kit_reads_it_as_a_competition(tiny):
    comp = load_competition(tiny)
    assert comp.unknown == UNKNOWN and len(comp.train) == SIZES["tiny"].n_train
    assert comp.truth is not None and len(comp.truth) == len(comp.test_images)
    assert comp.boxes is not None and len(comp.boxes) == len(comp.train) + len(comp.test_images)


# --- label statistics (real 2019: 38.1% new_whale, 41.4% of ids with one image, 27.6% in test) --


def test_kaggle_size_has_the_real_label_file_shape():
    c = plan("kaggle", 0).counts()
    assert (c["train"], c["test"], c["ids"], c["train_new_whale"]) == (25_361, 7_960, 5_004, 9_664)
    assert (c["ids_with_one_image"], c["ids_with_two_images"], c["largest_id"]) == (2_073, 1_285, 73)
    assert c["test_new_whale"] / c["test"] == pytest.approx(0.276, abs=0.002)
    assert c["greyscale"] / (c["train"] + c["test"]) == pytest.approx(8_270 / 25_361, abs=0.01)
    assert c["captioned"] / (c["train"] + c["test"]) == pytest.approx(1_460 / 25_361, abs=0.005)
    assert 0.02 <= c["test_duplicates"] / c["test"] <= 0.05


@pytest.mark.parametrize("size", ["tiny", "small", "medium"])
@pytest.mark.parametrize("seed", [0, 1])
def test_smaller_sizes_keep_the_proportions(size, seed):
    c = plan(size, seed).counts()
    assert (c["train"], c["test"]) == (SIZES[size].n_train, SIZES[size].n_test)
    assert c["train_new_whale"] / c["train"] == pytest.approx(9_664 / 25_361, abs=0.005)
    assert c["ids_with_one_image"] / c["ids"] == pytest.approx(2_073 / 5_004, abs=0.02)
    assert c["ids_with_two_images"] / c["ids"] == pytest.approx(1_285 / 5_004, abs=0.02)
    assert c["test_new_whale"] / c["test"] == pytest.approx(0.276, abs=0.01)
    assert c["largest_id"] >= 15


def test_new_whales_are_fresh_animals_and_known_test_ids_come_from_train():
    p = plan("small", 0)
    train_animals = p.animal[: p.n_train]
    train_new = train_animals[(p.label[: p.n_train] == UNKNOWN) & (p.source[: p.n_train] < 0)]
    assert len(np.unique(train_new)) == len(train_new)  # each new_whale is photographed once
    test = slice(p.n_train, None)
    fresh = (p.label[test] == UNKNOWN) & (p.source[test] < 0)
    assert not set(p.animal[test][fresh]) & set(train_animals)
    assert set(p.label[test][~fresh]) <= set(p.label[: p.n_train])
    # Known test images favour ids with more train images, as a random split would.
    counts = pd.Series(p.label[: p.n_train]).value_counts().drop(UNKNOWN)
    in_test = counts.index.isin(set(p.label[test]))
    assert counts[in_test].mean() > counts[~in_test].mean()


# --- the leak and the label noise ------------------------------------------------------------


def test_planted_test_duplicates_copy_a_train_picture_and_its_label(tiny):
    meta = json.loads((tiny / "synthetic.json").read_text())
    dups = meta["test_duplicates"]
    assert len(dups) == meta["counts"]["test_duplicates"] >= 3
    train = pd.read_csv(tiny / "train.csv").set_index("Image").Id
    truth = pd.read_csv(tiny / "test_truth.csv").set_index("Image").Id
    for test_image, train_image in dups.items():
        assert truth[test_image] == train[train_image]
        diff = np.abs(thumb(tiny / "test" / test_image) - thumb(tiny / "train" / train_image)).mean()
        assert diff < 10, (test_image, train_image, diff)
        assert (tiny / "test" / test_image).read_bytes() != (tiny / "train" / train_image).read_bytes()


def test_conflicting_train_duplicates(tiny):
    meta = json.loads((tiny / "synthetic.json").read_text())
    conflicts = meta["train_conflicts"]
    assert len(conflicts) == meta["counts"]["train_conflicts"] >= 2
    train = pd.read_csv(tiny / "train.csv").set_index("Image").Id
    for c in conflicts:
        assert train[c["image"]] == c["label"] != c["source_label"] == train[c["source"]]
        diff = np.abs(thumb(tiny / "train" / c["image"]) - thumb(tiny / "train" / c["source"])).mean()
        assert diff < 10, (c, diff)
    assert any(UNKNOWN in (c["label"], c["source_label"]) for c in conflicts)


def test_different_animals_look_different(tiny):
    train = pd.read_csv(tiny / "train.csv")
    p = plan("tiny", 0)
    animal = dict(zip(p.image, p.animal))
    rng = np.random.default_rng(0)
    pairs = [(a, b) for a, b in rng.choice(train.Image, (60, 2)) if animal[a] != animal[b]]
    diffs = [np.abs(thumb(tiny / "train" / a) - thumb(tiny / "train" / b)).mean() for a, b in pairs]
    assert np.percentile(diffs, 5) > 10 and np.median(diffs) > 20


def test_a_mirrored_fluke_is_another_animal():
    one, other = synthetic_photos._animal(0, 0), synthetic_photos._animal(0, 1)
    inside = (one.alpha > 0.5) & (one.alpha[:, ::-1] > 0.5)
    pattern = np.asarray(one.pattern, np.float32)
    assert np.abs(pattern - pattern[:, ::-1])[inside].mean() > 30
    assert np.abs(one.alpha - one.alpha[:, ::-1]).sum() > 0.01 * one.alpha.sum()  # outline too
    assert not np.array_equal(one.alpha, other.alpha)


# --- bad arguments and interrupted runs ------------------------------------------------------


def test_unknown_size_names_the_valid_ones(tmp_path):
    with pytest.raises(KitError, match="tiny, small, medium, kaggle"):
        generate(tmp_path / "out", "huge")
    with pytest.raises(KitError, match="'huge'"):
        plan("huge")


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(KitError, match="not empty"):
        generate(tmp_path / "out", "tiny", progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(KitError, match="not empty"):
        generate(tmp_path / "file", "tiny", progress=False)


def test_bad_workers_and_seed(tmp_path):
    with pytest.raises(KitError, match="workers"):
        generate(tmp_path / "out", "tiny", workers=0)
    with pytest.raises(KitError, match="seed"):
        generate(tmp_path / "out", "tiny", seed=-1)
    assert not (tmp_path / "out").exists()


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    calls, render = [], synthetic._render

    def failing(task):
        calls.append(task)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return render(task)

    monkeypatch.setattr(synthetic, "_render", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "out", "tiny", progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []
