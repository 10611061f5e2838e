"""MAP@5 against hand-worked cases: Kaggle's definition, one true label per image."""
import json
import subprocess
import sys

import numpy as np
import pytest

from kit.errors import KitError
from kit.metric import average_precision, encode, map5
from kit.metrics import score_files


def ap(pred, truth):
    vocab = {l: i for i, l in enumerate(sorted(set(pred) | {truth}))}
    return float(average_precision(encode([pred], vocab), np.array([vocab[truth]]))[0])


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        (["a", "b", "c", "d", "e"], "a", 1.0),
        (["a", "b", "c", "d", "e"], "c", 1 / 3),
        (["a", "b", "c", "d", "e"], "e", 1 / 5),
        (["a", "b", "c", "d", "e"], "z", 0.0),
        (["new_whale", "a"], "new_whale", 1.0),  # the unknown label is scored like any other
        (["a", "a", "b"], "b", 1 / 3),  # a repeated label still uses up its rank
        (["a", "a", "a", "a", "a"], "a", 1.0),
        (["b"], "b", 1.0),  # fewer than five labels
        (["a", "b"], "c", 0.0),
        ([], "a", 0.0),
        (["a", "b", "c", "d", "e", "f"], "f", 0.0),  # only the first five count
    ],
)
def test_average_precision_hand_worked(pred, truth, expected):
    assert ap(pred, truth) == pytest.approx(expected)


def test_map5_is_the_mean():
    top = np.array([[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [4, 3, 2, 1, 0]])
    assert map5(top, np.array([0, 0, 9])) == pytest.approx((1 + 0.5 + 0) / 3)
    assert map5(np.zeros((0, 5), int), np.zeros(0, int)) == 0.0


def write(path, rows, header="Image,Id"):
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_score_files(tmp_path):
    truth = write(tmp_path / "truth.csv", [("1.jpg", "w_a"), ("2.jpg", "new_whale"), ("3.jpg", "w_c")])
    sub = write(tmp_path / "sub.csv", [("3.jpg", "w_x w_c"), ("1.jpg", "w_a w_b"), ("2.jpg", "w_b w_b new_whale"), ("4.jpg", "w_a")])
    value, n = score_files(sub, truth)
    assert n == 3 and value == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_a_truth_that_shares_no_image_with_the_submission_is_refused(tmp_path):
    """A truth with its columns the other way round (or another competition's) scored 0.0, exit 0."""
    sub = write(tmp_path / "sub.csv", [("1.jpg", "w_a"), ("2.jpg", "new_whale")])
    swapped = write(tmp_path / "truth.csv", [("w_a", "1.jpg"), ("new_whale", "2.jpg")], header="Id,Image")
    with pytest.raises(KitError, match=r"truth.csv: none of its 2 images is in .*sub.csv \(truth header Id,Image, "
                                       r"submission header Image,Id\)"):
        score_files(sub, swapped)


def test_more_than_five_labels_warns(tmp_path, capsys):
    truth = write(tmp_path / "truth.csv", [("1.jpg", "f")])
    sub = write(tmp_path / "sub.csv", [("1.jpg", "a b c d e f")])
    assert score_files(sub, truth) == (0.0, 1)
    assert "more than 5 labels" in capsys.readouterr().err


def test_missing_image_scores_zero_and_warns_or_is_refused_when_strict(tmp_path, capsys):
    truth = write(tmp_path / "truth.csv", [("1.jpg", "a"), ("2.jpg", "b")])
    sub = write(tmp_path / "sub.csv", [("1.jpg", "a")])
    assert score_files(sub, truth) == (0.5, 2)
    assert "1 image(s) of" in capsys.readouterr().err
    with pytest.raises(KitError, match="missing.*2.jpg"):
        score_files(sub, truth, strict=True)


@pytest.mark.parametrize("header, rows, problem", [
    ("image,label", [("1.jpg", "a"), ("2.jpg", "b")], "header is image,label, expected Image,Id or image,predictions"),
    ("Image,Id", [("1.jpg", "a"), ("2.jpg", "b"), ("9.jpg", "a")], "1 image(s) not in"),
    ("Image,Id", [("1.jpg", "a")], "1 image(s) of"),
])
def test_score_py_warns_and_strict_refuses(tmp_path, header, rows, problem):
    """Issue 13: plain score.py took a wrong header, extra or missing images silently. Now each is a
    warning (the score still printed); with --strict, one error line, exit 2, and no score."""
    truth = write(tmp_path / "truth.csv", [("1.jpg", "a"), ("2.jpg", "b")])
    sub = write(tmp_path / "sub.csv", rows, header=header)
    before = sorted(tmp_path.iterdir())
    out = subprocess.run([sys.executable, "scripts/score.py", str(sub), str(truth)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("MAP@5 ") and problem in out.stderr
    assert out.stderr.startswith("warning: ")
    strict = subprocess.run([sys.executable, "scripts/score.py", str(sub), str(truth), "--strict"], capture_output=True, text=True)
    assert strict.returncode == 2 and strict.stdout == "" and strict.stderr.count("\n") == 1
    assert strict.stderr.startswith("error: ") and problem in strict.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_happywhale_columns(tmp_path):
    truth = write(tmp_path / "truth.csv", [("1.jpg", "abc")], header="image,individual_id")
    sub = write(tmp_path / "sub.csv", [("1.jpg", "new_individual abc")], header="image,predictions")
    assert score_files(sub, truth) == (0.5, 1)


def test_script_json_and_errors(tmp_path):
    truth = write(tmp_path / "truth.csv", [("1.jpg", "a"), ("2.jpg", "b")])
    sub = write(tmp_path / "sub.csv", [("1.jpg", "a"), ("2.jpg", "a b")])
    out = subprocess.run([sys.executable, "scripts/score.py", str(sub), str(truth), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"map5": 0.75, "n": 2}
    bad = subprocess.run([sys.executable, "scripts/score.py", str(tmp_path / "nope.csv"), str(truth)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "nope.csv" in bad.stderr and "not found" in bad.stderr


def test_check_submission(competition):
    from kit.data import load_competition
    from kit.metric import check_submission

    root = competition(n_ids=3, per_id=2, n_test=3)
    comp = load_competition(root)
    good = root / "good.csv"
    comp.submission_frame(comp.test_images, [["new_whale", "w_0000000", "w_0000001", "w_0000002", "new_whale"]] * 3).to_csv(good, index=False)
    assert check_submission(good, comp) == []
    bad = root / "bad.csv"
    rows = ["Image,Id", "te00000.jpg,w_0000000", "te00000.jpg,w_0000001", "zz.jpg,new_whale", "te00001.jpg,a b c d e f"]
    bad.write_text("\n".join(rows) + "\n")
    problems = " | ".join(check_submission(bad, comp))
    for expected in ("listed more than once", "not in the test set", "1 test image(s) missing, e.g. 'te00002.jpg'",
                     "without 1-5 labels", "neither in train nor 'new_whale'"):
        assert expected in problems
    out = subprocess.run([sys.executable, "scripts/score.py", "--check", str(bad), "--data", str(root)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "missing" in out.stderr
    ok = subprocess.run([sys.executable, "scripts/score.py", "--check", str(good), "--data", str(root)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid submission" in ok.stdout
