"""prepare.py end to end on a synthetic competition: the layout, folds.csv and hashes.csv."""
import subprocess
import sys

import pandas as pd


def test_prepare_synthetic_tiny(tmp_path):
    out = tmp_path / "tiny"
    run = subprocess.run([sys.executable, "scripts/prepare.py", "--synthetic", "tiny", "--out", str(out), "--seed", "3"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    folds = pd.read_csv(out / "folds.csv")
    hashes = pd.read_csv(out / "hashes.csv", dtype=str)
    train = pd.read_csv(out / "train.csv")
    assert list(folds.columns) == ["Image", "Id", "fold"] and set(folds["Image"]) == set(train["Image"])
    assert set(folds["fold"]) == {-1, 0, 1, 2}
    assert len(hashes) == len(train) + len(pd.read_csv(out / "sample_submission.csv"))
    assert hashes["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    # the sample submission is a valid submission, and scores like Kaggle's trivial baseline
    check = subprocess.run([sys.executable, "scripts/score.py", "--check", str(out / "sample_submission.csv"), "--data", str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_prepare_refuses_to_overwrite(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    run = subprocess.run([sys.executable, "scripts/prepare.py", "--synthetic", "tiny", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and (tmp_path / "x" / "keep.txt").read_text() == "mine"
