"""The tuner's test project: kit/testing.py's tuning competition (a few hundred validation images over
~50 identities, no image files), members made from noisy copies of the truth, recipes with a `tune:`
section, and the scripts run as a user runs them. This is a module of its own name, not conftest.py:
`from conftest import ...` picks whichever folder's conftest pytest loaded last.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from kit.testing import make_tuning_competition, write_blend_recipe, write_predictions

ROOT = Path(__file__).resolve().parents[2]


def edit_yaml(path: Path, edit) -> Path:
    d = yaml.safe_load(path.read_text())
    edit(d)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


class TuneProject:
    """A competition, three members (softmax logits, sigmoid logits, cosines) and recipes over them."""

    def __init__(self, root: Path):
        self.root = root
        self.comp = make_tuning_competition(root / "data")
        a = write_predictions(root / "models" / "a", self.comp, "logit", signal=2.5, seed=1)
        b = write_predictions(root / "models" / "b", self.comp, "logit", signal=2.0, seed=2, activation="sigmoid")
        c = write_predictions(root / "models" / "c", self.comp, "cosine", signal=2.0, seed=3, noise=1.3)
        self.members = [
            {"model": str(a), "view": "logit", "weight": 1.0, "calibration": {"method": "softmax", "temperature": 1.0}},
            {"model": str(b), "view": "logit", "weight": 0.5},
            {"model": str(c), "view": "cosine", "weight": 0.5, "calibration": {"method": "affine", "scale": 8.0, "shift": -2.0}},
        ]

    def recipe(self, name: str = "final", **tune) -> Path:
        """blends/<name>.yaml over the three members; `tune` is the recipe's tune: section."""
        extra = {"tune": tune} if tune else {}
        path = write_blend_recipe(self.root / "blends" / f"{name}.yaml", self.comp.root, self.members, **extra)
        return edit_yaml(path, lambda d: d.update(name=name))

    def sqlite(self, name: str = "studies") -> str:
        return f"sqlite:///{self.root / 'studies' / f'{name}.db'}"

    def journal(self, name: str = "study") -> str:
        return f"journal:{self.root / 'studies' / f'{name}.log'}"


def script(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run scripts/<args[0]> from the project root (its paths are the scripts' own)."""
    return subprocess.run([sys.executable, f"scripts/{args[0]}", *args[1:]], capture_output=True, text=True,
                          cwd=ROOT, env=script_env(), **kw)


def script_env() -> dict:
    return dict(os.environ)


def tune_together(path: Path, url: str, trials: int, runs: int = 2, timeout: float = 600) -> list[str]:
    """`runs` tune.py started at once on one study, as several machines would; their outputs. Each
    must succeed; none outlives the call."""
    procs = [subprocess.Popen([sys.executable, "scripts/tune.py", str(path), "--trials", str(trials), "--storage", url,
                               "--no-report", "--quiet"], cwd=ROOT, env=script_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(runs)]
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return outs
