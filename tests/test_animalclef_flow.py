"""A synthetic competition in AnimalCLEF 2025's layout, end to end: generated, prepared, a tiny member
trained and exported to ONNX, blended under the AnimalCLEF metric (`metric: animalclef`, the new
individual threshold fitted exactly to it on validation), its submission checked by score.py --check
and scored by score.py against the organisers' solution columns: the same number blend.py printed."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kit.data.prepare import prepare
from kit.data.synthetic import generate
from kit.export.member import export_member
from kit.post.files import blend_files
from kit.testing import make_tiny_recipe, write_blend_recipe
from kit.train.loop import train

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[1]


def script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=cwd)


def test_an_animalclef_competition_goes_end_to_end_to_a_checked_submission(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = generate(Path("data"), size="tiny", seed=1, progress=False, layout="animalclef")
    prepare(data, n_folds=2, echo=lambda line: None)
    recipe = make_tiny_recipe(data, name="m", stages=[{"epochs": 1, "lr": 0.003}], sampling={"batch_size": 16})
    train(recipe, out=Path("models/m"), progress=False)
    export_member(Path("models/m"), progress=False, log=lambda line: None)
    path = write_blend_recipe(Path("blends/clef.yaml"), data, [{"model": "models/m", "view": "logit"},
                                                               {"model": "models/m", "view": "cosine"}],
                              name="clef", metric="animalclef", steps={"new_whale": {"fit": "threshold"}},
                              pseudo={"enabled": False}, output="submissions")
    said = []
    run = blend_files(path, echo=said.append)
    summary = run.summary
    assert summary["metric"] == "animalclef" and "animalclef" in summary["val"] and "map5" not in summary["val"]
    assert "cross_validated_animalclef" in summary["val"]["fitted"]
    assert any("AnimalCLEF" in line for line in said)  # the ablation's column is the metric's
    # the fitted threshold is the best of every threshold on validation, under this metric
    inputs, result = run.val
    assert result.score == pytest.approx(inputs.scorer.score(result.marks))

    written = pd.read_csv("submissions/clef.csv", dtype=str)
    assert list(written.columns) == ["image_id", "identity"]
    assert written["identity"].str.split().map(len).eq(1).all()  # one label per query
    check = script("score.py", "--check", "submissions/clef.csv", "--data", str(data), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    scored = script("score.py", "submissions/clef.csv", str(data / "test_truth.csv"), "--metric", "animalclef", "--json",
                    cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["animalclef"] == pytest.approx(summary["test"]["animalclef"], abs=1e-12)
