"""The tuner's test project: a fabricated competition with a few hundred validation images over
~50 identities (no image files), members made from noisy copies of the truth, recipes with a
`tune:` section, and the scripts run as a user runs them.

The members come from tests/post/fabricate.py's `write_member` (loaded by path under a name of its
own); only the competition differs: the tuner needs a validation fold of several images per
identity, so folds.csv is written here. This is a module of its own name, not conftest.py:
`from conftest import ...` picks whichever folder's conftest pytest loaded last.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kit.data.folds import write_folds

ROOT = Path(__file__).resolve().parents[2]


def _load_post_helpers():
    name = "whale_kit_tests_post_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "post" / "fabricate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return sys.modules[name]


post = _load_post_helpers()
FakeCompetition, write_member, write_recipe, UNKNOWN = post.FakeCompetition, post.write_member, post.write_recipe, post.UNKNOWN


def make_tune_competition(root: Path, n_ids: int = 50, per_id: tuple[int, int] = (4, 12), unknown_share: float = 0.3,
                          n_test: int = 60, n_leaks: int = 20, seed: int = 0) -> FakeCompetition:
    """About 50 identities of 4..11 images plus new_whale images; fold 0 holds half of each
    identity's images (one always stays in train) and half of the unknown ones: about 200 val images.
    Some val images duplicate (phash) a train image of their identity, so the leak step matters."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    known = [f"w_{i:04d}" for i in range(n_ids)]
    labels = [lab for lab in known for _ in range(int(rng.integers(*per_id)))]
    labels += [UNKNOWN] * int(len(labels) * unknown_share / (1 - unknown_share))
    train = pd.DataFrame({"image": [f"tr{i:05d}.jpg" for i in range(len(labels))], "label": labels})
    fold = np.where(rng.random(len(train)) < 0.5, 0, -1)
    for lab, rows in train.groupby("label").indices.items():
        if lab != UNKNOWN:
            fold[rows[0]] = -1  # every identity keeps a train image: the val set is all findable
    folds = pd.DataFrame({"image": train["image"], "label": train["label"], "fold": fold})
    test_labels = [UNKNOWN if rng.random() < unknown_share else known[int(rng.integers(n_ids))] for _ in range(n_test)]
    test = pd.DataFrame({"image": [f"te{i:05d}.jpg" for i in range(n_test)], "label": test_labels})

    train.rename(columns={"image": "Image", "label": "Id"}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": test["image"], "Id": UNKNOWN}).to_csv(root / "sample_submission.csv", index=False)
    test.rename(columns={"image": "Image", "label": "Id"}).to_csv(root / "test_truth.csv", index=False)
    write_folds(root / "folds.csv", folds)

    names = list(train["image"]) + list(test["image"])
    hashes = dict(zip(names, (int(h) for h in rng.integers(0, 2**63, len(names), dtype=np.int64))))
    leaked = {}
    in_train = train[fold == -1]
    by_label = in_train.groupby("label")["image"].apply(list).to_dict()
    val_known = train[(fold == 0) & (train["label"] != UNKNOWN)]
    for i in rng.permutation(len(val_known))[:n_leaks]:
        name, lab = val_known["image"].iloc[i], val_known["label"].iloc[i]
        leaked[name] = by_label[lab][0]
        hashes[name] = hashes[leaked[name]] ^ (1 << int(rng.integers(64)))  # one bit off
    pd.DataFrame({"Image": list(hashes), "phash": [f"{h:016x}" for h in hashes.values()]}).to_csv(root / "hashes.csv", index=False)
    return FakeCompetition(root, train, test, folds, hashes, known, leaked)


def edit_yaml(path: Path, edit) -> Path:
    d = yaml.safe_load(path.read_text())
    edit(d)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


class TuneProject:
    """A competition, three members (softmax logits, sigmoid logits, cosines) and recipes over them."""

    def __init__(self, root: Path):
        self.root = root
        self.comp = make_tune_competition(root / "data")
        a = write_member(root / "models" / "a", self.comp, "logit", signal=2.5, seed=1)
        b = write_member(root / "models" / "b", self.comp, "logit", signal=2.0, seed=2, activation="sigmoid")
        c = write_member(root / "models" / "c", self.comp, "cosine", signal=2.0, seed=3, noise=1.3)
        self.members = [
            {"model": str(a), "view": "logit", "weight": 1.0, "calibration": {"method": "softmax", "temperature": 1.0}},
            {"model": str(b), "view": "logit", "weight": 0.5},
            {"model": str(c), "view": "cosine", "weight": 0.5, "calibration": {"method": "affine", "scale": 8.0, "shift": -2.0}},
        ]

    def recipe(self, name: str = "final", **tune) -> Path:
        """blends/<name>.yaml over the three members; `tune` is the recipe's tune: section."""
        extra = {"tune": tune} if tune else {}
        path = write_recipe(self.root / "blends" / f"{name}.yaml", self.comp.root, self.members, **extra)
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
