"""A read-only competition directory (Kaggle's /kaggle/input): prepare.py --work, then the whole flow
on the stand-in: train, export, blend, a checked submission, nothing written into the input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from faults import one_error_line, snapshot
from kit.data.synthetic import generate
from kit.testing import make_tiny_recipe, write_blend_recipe

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[2]


def script(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / args[0]), *map(str, args[1:])], capture_output=True,
                          text=True, cwd=cwd)


def test_a_read_only_competition_runs_through_a_working_stand_in(tmp_path, read_only_disk):
    made = generate(tmp_path / "made" / "whales", size="tiny", seed=0, progress=False)
    data = read_only_disk(tmp_path / "input", keep=[made]) / "whales"
    before = snapshot(data)
    err = one_error_line(script("prepare.py", data, cwd=tmp_path))  # the kit's files cannot go there
    assert f"{data}: read-only" in err and "--work DIR" in err
    work = tmp_path / "working" / "whales"
    out = script("prepare.py", data, "--work", work, "--folds", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (work / "folds.csv").is_file() and not (work / "folds.csv").is_symlink()
    assert (work / "train").is_symlink() and (work / "train.csv").resolve() == (data / "train.csv").resolve()
    again = script("prepare.py", data, "--work", work, "--folds", "2", cwd=tmp_path)  # the stand-in is reused
    assert again.returncode == 0, again.stderr

    recipe = make_tiny_recipe(work, name="m", stages=[{"epochs": 1, "lr": 0.003}], sampling={"batch_size": 16})
    (tmp_path / "models").mkdir()
    from kit.train.recipe import save_recipe

    save_recipe(recipe, tmp_path / "models" / "m.yaml")
    for step in (("train.py", "models/m.yaml", "--quiet"), ("export.py", "models/m", "--quiet")):
        out = script(*step, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert (work / "cache").is_dir()  # the crop cache: in the stand-in
    blend = write_blend_recipe(tmp_path / "blends" / "final.yaml", work, [{"model": "models/m", "view": "logit"}],
                               output="submissions")
    out = script("blend.py", blend.relative_to(tmp_path), "--no-report", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = script("score.py", "--check", "submissions/final.csv", "--data", work, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert snapshot(data) == before  # nothing written into the input
