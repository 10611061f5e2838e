"""The light install (`pip install .`, no extras) prepares a competition and runs blend.py, tune.py and
score.py on prediction sets made elsewhere, and says in one line what train.py needs. Run by .ci/run
in a venv without torch."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from kit.testing import make_label_competition, write_blend_recipe, write_predictions  # light: no torch at import

ROOT = Path(__file__).resolve().parents[1]


def script(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, f"scripts/{args[0]}", *args[1:]], cwd=ROOT, capture_output=True, text=True)
    print(f"$ {' '.join(args)}: exit {out.returncode}")
    return out


def main() -> None:
    heavy = [m for m in ("torch", "torchvision", "timm", "onnx", "onnxruntime") if importlib.util.find_spec(m)]
    assert not heavy, f"not a light install: {heavy} importable"
    with tempfile.TemporaryDirectory(prefix="light_") as tmp:
        root = Path(tmp)
        comp = make_label_competition(root / "data")
        a = write_predictions(root / "models" / "a", comp, "logit", signal=3.0, seed=1)
        b = write_predictions(root / "models" / "b", comp, "cosine", signal=2.0, seed=3)
        recipe = write_blend_recipe(root / "blends" / "final.yaml", comp.root, [
            {"model": str(a), "view": "logit", "weight": 1.0},
            {"model": str(b), "view": "cosine", "weight": 0.5, "calibration": {"method": "affine", "scale": 8.0, "shift": -2.0}},
        ])
        for args in (("prepare.py", "--synthetic", "tiny", "--out", str(root / "tiny"), "--quiet"),
                     ("blend.py", str(recipe)),
                     ("tune.py", str(recipe), "--trials", "20", "--storage", f"sqlite:///{root / 'studies.db'}", "--quiet"),
                     ("score.py", str(root / "blends" / "submissions" / "final.csv"), str(comp.root / "test_truth.csv"))):
            out = script(*args)
            assert out.returncode == 0, out.stderr[-3000:]
        assert (root / "blends" / "final.tuned.yaml").is_file() and (root / "blends" / "submissions" / "final.html").is_file()
        out = script("train.py", "models/resnet18_tiny.yaml")
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "whale-kit[models]" in out.stderr, out.stderr[-3000:]
    print("light install: prepare.py, blend.py, tune.py and score.py ran without torch, timm or onnx; "
          "train.py said what it needs")


if __name__ == "__main__":
    main()
