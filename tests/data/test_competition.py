"""The data layer reads each Kaggle layout and names the file and the problem for bad input."""
import subprocess
import sys

import pandas as pd
import pytest

from kit.data import load_competition
from kit.errors import KitError


@pytest.mark.parametrize("layout, unknown", [("humpback", "new_whale"), ("happywhale", "new_individual")])
def test_reads_each_layout(competition, layout, unknown):
    comp = load_competition(competition(layout, n_ids=4, per_id=2, n_unknown=3, n_test=5))
    assert comp.layout.name == layout and comp.unknown == unknown
    assert list(comp.train.columns[:2]) == ["image", "label"]
    assert len(comp.train) == 11 and len(comp.test_images) == 5
    assert len(comp.known_labels) == 4 and unknown not in comp.known_labels
    assert comp.image_path(comp.test_images[0], "test").is_file()
    sub = comp.submission_frame(comp.test_images[:1], [["a", "b"]])
    assert list(sub.columns) == list(comp.layout.submission_columns) and sub.iloc[0, 1] == "a b"


def test_2018_playground_reads_as_humpback(competition):
    # The 2018 playground has the 2019 files and columns: the same layout.
    assert load_competition(competition("humpback")).layout.name == "humpback"


def test_unknown_label_is_data(competition):
    comp = load_competition(competition(), unknown="w_0000000")
    assert comp.unknown == "w_0000000" and "new_whale" in comp.known_labels


def test_boxes(competition):
    comp = load_competition(competition(boxes=True))
    assert comp.boxes.loc["tr00000.jpg"].tolist() == [2, 3, 40, 20]


def edit_csv(path, change):
    frame = pd.read_csv(path, dtype=str)
    change(frame).to_csv(path, index=False)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: edit_csv(d / "train.csv", lambda f: f.drop(columns=["Id"])), r"train.csv.*no known layout"),
        (lambda d: edit_csv(d / "sample_submission.csv", lambda f: f.rename(columns={"Image": "Img"})), r"sample_submission.csv.*missing column\(s\) Image"),
        (lambda d: edit_csv(d / "train.csv", lambda f: pd.concat([f, f.iloc[:1]])), r"train.csv: image 'tr00000.jpg' is listed 2 times"),
        (lambda d: edit_csv(d / "sample_submission.csv", lambda f: pd.concat([f, f.iloc[:1]])), r"sample_submission.csv: image 'te00000.jpg'"),
        (lambda d: (d / "train" / "tr00003.jpg").unlink(), r"train.csv: 1 listed image\(s\) absent from .*train/, e.g. 'tr00003.jpg'"),
        (lambda d: (d / "test" / "te00001.jpg").unlink(), r"sample_submission.csv: 1 listed image\(s\) absent"),
        (lambda d: (d / "train.csv").write_text("Image,Id\n"), r"train.csv \(train labels\): the file has a header but no rows"),
        (lambda d: (d / "sample_submission.csv").write_text(""), r"sample_submission.csv .*: the file is empty"),
        (lambda d: (d / "train.csv").unlink(), r"no train.csv"),
        (lambda d: (d / "bounding_boxes.csv").write_text("Image,x0,y0,x1,y1\ntr00000.jpg,5,5,1,9\n"), r"bounding_boxes.csv: empty box"),
        (lambda d: edit_csv(d / "train.csv", lambda f: f.assign(Id=f.Id.where(f.index != 2, ""))), r"train.csv: row 4 has an empty"),
    ],
)
def test_bad_input_names_file_and_problem(competition, breakage, message):
    root = competition()
    breakage(root)
    with pytest.raises(KitError, match=message):
        load_competition(root)


def test_missing_directory(tmp_path):
    with pytest.raises(KitError, match="competition directory not found"):
        load_competition(tmp_path / "nowhere")


def test_script_prints_one_line_and_fails(competition):
    root = competition()
    (root / "train" / "tr00003.jpg").unlink()
    out = subprocess.run([sys.executable, "scripts/prepare.py", str(root)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "tr00003.jpg" in out.stderr
    assert not (root / "folds.csv").exists() and not (root / "hashes.csv").exists()


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "sub/x.jpg", "..", "a\\b.jpg"])
@pytest.mark.parametrize("listing", ["train.csv", "sample_submission.csv", "bounding_boxes.csv"])
def test_image_names_that_leave_the_image_directories_are_refused(competition, listing, name):
    """Whatever reads the competition (prepare, train, blend and its report), a label file cannot
    point the kit at a file outside the competition: one line naming the file, at load."""
    root = competition(boxes=True)
    edit_csv(root / listing, lambda f: f.assign(Image=f.Image.where(f.index != 1, name)))
    for check_images in (True, False):  # blend.py loads without looking at the images: still refused
        with pytest.raises(KitError, match=rf"{listing}: Image .* is not a plain file name \(no directories, no '..'\)"):
            load_competition(root, check_images=check_images)


def test_identities_with_whitespace_are_refused_at_load(competition):
    """A submission's labels are space-separated: 'w 1' would fail late, in blend; now at load."""
    root = competition()
    edit_csv(root / "train.csv", lambda f: f.assign(Id=f.Id.where(f.index != 2, "w 1")))
    with pytest.raises(KitError, match=r"train.csv: row 4: Id 'w 1' contains whitespace"):
        load_competition(root)
