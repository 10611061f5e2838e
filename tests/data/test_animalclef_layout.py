"""AnimalCLEF 2025's layout: metadata.csv read as published (every bad row one line naming the file),
images at their sub-folder paths for every reader, one label per submission row, and the synthetic
competition in this layout, through load_competition and prepare.py."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data import load_competition
from kit.data.crops import CropSpec, image_keys, open_crops
from kit.data.phash import competition_hashes, phash_file
from kit.data.synthetic import generate, plan
from kit.data.synthetic_animalclef import CLEF_UNKNOWN, DATASETS, METADATA_COLUMNS
from kit.errors import KitError
from kit.metric import check_submission

ROOT = Path(__file__).resolve().parents[2]


def write_metadata(root: Path, rows: list[tuple], columns=("image_id", "identity", "path", "species", "split", "dataset"),
                   sample: bool = True) -> Path:
    """A hand-made AnimalCLEF directory: `rows` in `columns`, a small PIL image at each path."""
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(columns))
    rng = np.random.default_rng(0)
    for path in frame["path"]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(root / path)
    frame.to_csv(root / "metadata.csv", index=False)
    if sample:
        query = frame[frame["split"] == "query"]
        pd.DataFrame({"image_id": query["image_id"], "identity": CLEF_UNKNOWN}).to_csv(root / "sample_submission.csv", index=False)
    return root


ROWS = [
    (0, "LynxID2025_a", "images/LynxID2025/database/a0.jpg", "lynx", "database", "LynxID2025"),
    (1, "LynxID2025_a", "images/LynxID2025/database/a1.jpg", "lynx", "database", "LynxID2025"),
    (2, "LynxID2025_b", "images/LynxID2025/database/b0.jpg", "lynx", "database", "LynxID2025"),
    (3, "SeaTurtleID2022_c", "images/SeaTurtleID2022/database/c0.jpg", "loggerhead turtle", "database", "SeaTurtleID2022"),
    (4, "", "images/LynxID2025/query/q0.jpg", "lynx", "query", "LynxID2025"),
    (5, "", "images/SeaTurtleID2022/query/q1.jpg", "loggerhead turtle", "query", "SeaTurtleID2022"),
]


@pytest.fixture
def clef(tmp_path) -> Path:
    return write_metadata(tmp_path / "clef", ROWS)


def test_reads_metadata_as_published(clef):
    comp = load_competition(clef)
    assert comp.layout.name == "animalclef" and comp.unknown == "new_individual"
    assert (comp.layout.labels_per_row, comp.layout.metric) == (1, "animalclef")
    assert comp.train["image"].tolist() == ["0", "1", "2", "3"] and comp.test_images == ["4", "5"]
    assert list(comp.train.columns) == ["image", "label", "dataset", "species"]
    assert comp.known_labels == ["LynxID2025_a", "LynxID2025_b", "SeaTurtleID2022_c"]
    assert comp.image_path("1") == clef / "images/LynxID2025/database/a1.jpg"
    assert comp.image_path("5", "test").is_file() and comp.relative_path("5", "test") == ROWS[5][2]
    assert comp.datasets == {str(r[0]): r[5] for r in ROWS} and comp.truth is None and comp.boxes is None


def test_optional_columns_kept_when_present_and_the_sample_submission_optional(tmp_path):
    rows = [(*r[:3], "2019-05-0" + str(r[0] + 1), "left", *r[3:]) for r in ROWS]
    columns = ("image_id", "identity", "path", "date", "orientation", "species", "split", "dataset")
    comp = load_competition(write_metadata(tmp_path / "full", rows, columns, sample=False))
    assert comp.train["date"].tolist()[:2] == ["2019-05-01", "2019-05-02"] and set(comp.train["orientation"]) == {"left"}
    assert comp.test_images == ["4", "5"]  # without sample_submission.csv: the query rows, in order
    bare = load_competition(write_metadata(tmp_path / "bare", [(r[0], r[1], r[2], r[4], r[5]) for r in ROWS],
                                           ("image_id", "identity", "path", "split", "dataset")))
    assert "species" not in bare.train and "dataset" in bare.train


def test_detected_by_metadata_csv_unless_train_csv_is_there(clef, competition):
    assert load_competition(clef).layout.name == "animalclef"
    flat = competition()
    pd.read_csv(clef / "metadata.csv").to_csv(flat / "metadata.csv", index=False)
    assert load_competition(flat).layout.name == "humpback"  # train.csv decides


def test_the_test_truth_keeps_new_individuals_apart(clef):
    pd.DataFrame({"image_id": [4, 5], "identity": ["LynxID2025_a", "SeaTurtleID2022_new1"],
                  "new_identity": [False, True], "dataset": ["LynxID2025", "SeaTurtleID2022"]}).to_csv(
        clef / "test_truth.csv", index=False)
    truth = load_competition(clef).truth
    assert truth.to_dict("list") == {"image": ["4", "5"], "label": ["LynxID2025_a", "new_individual"],
                                     "individual": ["LynxID2025_a", "SeaTurtleID2022_new1"]}


def edit(root: Path, name: str, change) -> None:
    frame = pd.read_csv(root / name, dtype=str, keep_default_na=False)
    change(frame).to_csv(root / name, index=False)


def at(column, row, value):
    return lambda f: f.assign(**{column: f[column].where(f.index != row, value)})


@pytest.mark.parametrize("breakage, message", [
    (lambda d: edit(d, "metadata.csv", lambda f: f.drop(columns=["split"])), r"metadata.csv \(AnimalCLEF metadata\): missing column\(s\) split"),
    (lambda d: edit(d, "metadata.csv", at("split", 1, "train")), r"metadata.csv: row 3: split 'train' is neither database"),
    (lambda d: edit(d, "metadata.csv", at("identity", 2, "")), r"metadata.csv: row 4: database image '2' has no identity"),
    (lambda d: edit(d, "metadata.csv", at("identity", 2, "a b")), r"metadata.csv: row 4: identity 'a b' contains whitespace"),
    (lambda d: edit(d, "metadata.csv", at("image_id", 1, "0")), r"metadata.csv: image '0' is listed 2 times"),
    (lambda d: edit(d, "metadata.csv", at("image_id", 1, "")), r"metadata.csv: row 3 has an empty image_id"),
    (lambda d: edit(d, "metadata.csv", at("dataset", 1, "")), r"metadata.csv: row 3 has an empty dataset"),
    (lambda d: edit(d, "metadata.csv", at("path", 0, "images/../../secret.jpg")), r"metadata.csv: row 2: path 'images/../../secret.jpg' is not a relative path inside"),
    (lambda d: edit(d, "metadata.csv", at("path", 0, "/etc/hostname")), r"metadata.csv: row 2: path '/etc/hostname' is not a relative path"),
    (lambda d: edit(d, "metadata.csv", at("path", 0, "C:/x.jpg")), r"metadata.csv: row 2: path 'C:/x.jpg' is not a relative path"),
    (lambda d: edit(d, "metadata.csv", at("path", 1, ROWS[0][2])), r"metadata.csv: path '.*a0.jpg' is listed for 2 images"),
    (lambda d: (d / ROWS[4][2]).unlink(), r"metadata.csv: 1 listed image\(s\) absent from .*, e.g. 'images/LynxID2025/query/q0.jpg'"),
    (lambda d: edit(d, "metadata.csv", lambda f: f[f.split == "database"]), r"metadata.csv: no query rows"),
    (lambda d: edit(d, "sample_submission.csv", at("image_id", 0, "3")), r"sample_submission.csv: 1 image\(s\) not among the query rows of .*metadata.csv, e.g. '3'"),
    (lambda d: edit(d, "sample_submission.csv", lambda f: f.iloc[:1]), r"sample_submission.csv: 1 query image\(s\) of .*metadata.csv missing, e.g. '5'"),
    (lambda d: (d / "test_truth.csv").write_text("image_id,identity,new_identity\n4,x,maybe\n"), r"test_truth.csv: row 2: new_identity 'maybe' is not True or False"),
    (lambda d: (d / "metadata.csv").unlink(), r"no train.csv; expected .* or AnimalCLEF's \(metadata.csv, images/\)"),
])
def test_bad_input_is_one_line_naming_the_file(clef, breakage, message):
    breakage(clef)
    with pytest.raises(KitError, match=message):
        load_competition(clef)


def test_paths_are_checked_even_without_looking_at_the_images(clef):
    (clef / ROWS[4][2]).unlink()
    assert load_competition(clef, check_images=False).test_images == ["4", "5"]
    edit(clef, "metadata.csv", at("path", 0, "../outside.jpg"))
    with pytest.raises(KitError, match="not a relative path inside"):
        load_competition(clef, check_images=False)


def test_one_label_a_row_written_and_checked(clef, tmp_path):
    comp = load_competition(clef)
    sub = comp.submission_frame(comp.test_images, [["LynxID2025_a", "LynxID2025_b"], [CLEF_UNKNOWN, "LynxID2025_a"]])
    assert sub.to_dict("list") == {"image_id": ["4", "5"], "identity": ["LynxID2025_a", CLEF_UNKNOWN]}
    sub.to_csv(tmp_path / "good.csv", index=False)
    assert check_submission(tmp_path / "good.csv", comp) == []
    (tmp_path / "two.csv").write_text("image_id,identity\n4,LynxID2025_a LynxID2025_b\n5,new_individual\n")
    assert check_submission(tmp_path / "two.csv", comp) == ["1 row(s) without exactly 1 label, e.g. '4'"]


def test_crops_and_hashes_read_the_sub_folder_files(clef):
    comp = load_competition(clef)
    keys, paths, _ = image_keys(comp)
    assert keys == [r[2] for r in ROWS] and paths == [clef / r[2] for r in ROWS]
    cache = open_crops(comp, CropSpec((8, 16), 3, False, 0.0))
    assert cache.keys == keys and not cache.bad.any()
    assert np.array_equal(cache.rows([ROWS[5][2]]), [5])
    again = open_crops(load_competition(clef), CropSpec((8, 16), 3, False, 0.0))  # keys with '/' find the cache fresh
    assert np.array_equal(again.pixels, cache.pixels)
    hashes = competition_hashes(comp, workers=1)
    assert hashes["Image"].tolist() == [str(r[0]) for r in ROWS]
    assert hashes["phash"].iloc[5] == phash_file(clef / ROWS[5][2])


# ---- the synthetic competition in this layout -------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("clef") / "tiny", "tiny", seed=0, progress=False, workers=2, layout="animalclef")


@pytest.mark.slow
def test_the_synthetic_competition_loads(synthetic):
    assert sorted(p.name for p in synthetic.iterdir()) == ["bounding_boxes.csv", "images", "metadata.csv",
                                                          "sample_submission.csv", "synthetic.json", "test_truth.csv"]
    drawn = plan("tiny", 0, "animalclef")
    n, n_train = len(drawn.image), drawn.n_train
    meta = pd.read_csv(synthetic / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(meta.columns) == METADATA_COLUMNS and meta["image_id"].tolist() == [str(i) for i in range(n)]
    assert (meta[meta.split == "query"].identity == "").all() and set(meta.dataset) == set(DATASETS)
    assert all(p == f"images/{d}/{s}/{p.rsplit('/', 1)[1]}" for p, d, s in zip(meta.path, meta.dataset, meta.split))
    database = meta[meta.split == "database"]
    assert all(i.startswith(f"{d}_") for i, d in zip(database.identity, database.dataset))  # an identity is one dataset's
    comp = load_competition(synthetic)
    assert comp.layout.name == "animalclef" and (len(comp.train), len(comp.test_images)) == (n_train, n - n_train)
    assert set(comp.datasets) == set(comp.train["image"]) | set(comp.test_images)
    assert list(pd.read_csv(synthetic / "test_truth.csv").columns) == ["image_id", "identity", "new_identity", "dataset"]
    truth = comp.truth.set_index("image")
    new = truth[truth.label == CLEF_UNKNOWN]
    assert 0 < len(new) < len(truth) and not set(new.individual) & set(comp.train["label"])
    assert new.individual.value_counts().max() >= 2  # several images of one new individual: BAUS's balance matters
    assert set(truth.label[truth.label != CLEF_UNKNOWN]) <= set(comp.known_labels)
    info = json.loads((synthetic / "synthetic.json").read_text())
    assert info["layout"] == "animalclef" and info["unknown"] == CLEF_UNKNOWN and set(info["datasets"]) == set(DATASETS)
    assert info["counts"]["query_new"] == len(new) and info["counts"]["database"] == n_train


def test_the_same_draw_as_the_2019_layout():
    """The same photos, duplicates and identities as the humpback plan of the seed, less its train
    new_whale photos (and their copies): AnimalCLEF's database names every image's identity."""
    a, b = plan("tiny", 0), plan("tiny", 0, "animalclef")
    where = {name: i for i, name in enumerate(a.image)}
    kept = np.array([where[name] for name in b.image])
    assert np.all(np.diff(kept) > 0) and np.array_equal(a.grey[kept], b.grey)  # a subsequence, in order
    train = kept[:b.n_train]
    assert (a.label[train] != "new_whale").all() and b.n_train < a.n_train  # no unlabelled photo in the database
    assert (a.label[:a.n_train] != "new_whale").sum() - b.n_train <= 2  # only copies of a dropped photo go too
    pairs = set(zip(a.label[train], b.identity[:b.n_train]))
    assert len(pairs) == len(set(a.label[train])) == len({p[1] for p in pairs})  # the same identities, renamed
    copies = b.source >= 0
    assert np.array_equal(kept[b.source[copies]], a.source[kept[copies]])  # duplicates point at the same photos


@pytest.mark.slow
def test_prepare_and_a_checked_submission(synthetic, tmp_path):
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), "--synthetic", "tiny", "--out", str(data),
                          "--layout", "animalclef", "--seed", "0", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "animalclef layout, 123 train / 62 test images" in run.stdout
    comp = load_competition(data)
    for image in ("metadata.csv", "test_truth.csv", comp.paths["0"], comp.paths[comp.test_images[-1]]):
        assert (data / image).read_bytes() == (synthetic / image).read_bytes(), image  # a seed's bytes, whatever the workers
    folds = pd.read_csv(data / "folds.csv", dtype=str)
    assert list(folds.columns) == ["Image", "Id", "fold"] and set(folds.Image) == set(comp.train["image"])
    assert {"0", "1", "2"} <= set(folds.fold)
    hashes = pd.read_csv(data / "hashes.csv", dtype=str)
    assert set(hashes.Image) == set(comp.train["image"]) | set(comp.test_images)
    truth = comp.truth.set_index("image").label
    comp.submission_frame(comp.test_images, [[truth[i], "x"] for i in comp.test_images]).to_csv(tmp_path / "s.csv", index=False)
    assert check_submission(tmp_path / "s.csv", comp) == []
    for sub in (tmp_path / "s.csv", data / "sample_submission.csv"):
        check = subprocess.run([sys.executable, str(ROOT / "scripts" / "score.py"), "--check", str(sub), "--data", str(data)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
