"""Tiny trained-member directories built through kit.train, on a tiny competition.

A member here is what `scripts/train.py` leaves behind (recipe.yaml, classes.txt, checkpoint.pt
in the loop's format), with untrained weights: export and inference do not care how good the
weights are, only that ONNX and PyTorch agree and that the bookkeeping is right.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from kit.data import load_competition
from kit.data.folds import make_folds, write_folds
from kit.train.model import build_model, member_info, resolve_norm
from kit.train.recipe import recipe_from_dict


def _shared_make_competition():
    """tests/conftest.py's `make_competition` (the tests folder is not a package: load it by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_kit_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_competition


make_competition = _shared_make_competition()

INPUT = [32, 64]  # (H, W): small enough for 2 cores, large enough for resnet18's 32x downsampling


def make_data(root: Path) -> Path:
    """8 identities x 3 images + 4 new_whale, 7 test images, boxes; folds.csv with 2 folds."""
    make_competition(root, n_ids=8, per_id=3, n_unknown=4, n_test=7, boxes=True, seed=1)
    comp = load_competition(root)
    write_folds(root / "folds.csv", make_folds(comp.train, comp.unknown, n_folds=2, seed=0))
    return root


def make_member(out: Path, data: Path, *, head: str = "softmax", flip: str = "twin", fold: int = 0,
                seed: int = 0, drop_classes: int = 0, name: str | None = None) -> Path:
    """A member directory as the training loop writes it; `drop_classes` leaves some ids untrained."""
    raw = {"name": name or out.name, "data": str(data), "fold": fold, "seed": seed,
           "model": {"backbone": "resnet18", "pretrained": False},
           "head": {"type": head, "embedding_dim": 32, "dropout": 0.0},
           "input": {"size": INPUT}, "augment": {"flip": flip}}
    recipe = recipe_from_dict(raw)
    comp = load_competition(data)
    from kit.data.folds import read_folds, split

    train_rows, _ = split(read_folds(data / "folds.csv", comp.train), fold)
    classes = sorted(set(train_rows["label"]) - {comp.unknown})[drop_classes:]
    torch.manual_seed(seed)
    model = build_model(recipe, len(classes), pretrained=False).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so BN folding is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    mean, std = resolve_norm(recipe, model.backbone)
    info = member_info(recipe, classes, mean, std, use_boxes=comp.boxes is not None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict(), "classes": classes,
                "info": info.to_dict(), "epoch": 1, "stage": 1}, out / "checkpoint.pt")
    return out


def make_oof_member(out: Path, data: Path, *, flip: str = "none", drop_classes: dict[int, int] | None = None) -> Path:
    """An out-of-fold member as `train_every_fold` writes it: recipe.yaml (fold: all), fold<k>/ per fold.

    Each fold member has its own seed, so their scores differ; `drop_classes` = {fold: n} leaves n
    identities of that fold member untrained.
    """
    from kit.data.folds import read_folds
    from kit.train.recipe import ALL_FOLDS, fold_dir

    folds = sorted(set(read_folds(data / "folds.csv")["fold"]) - {-1})
    for k in folds:
        make_member(fold_dir(out, k), data, flip=flip, fold=k, seed=k + 1,
                    drop_classes=(drop_classes or {}).get(k, 0), name=f"{out.name}.fold{k}")
    raw = yaml.safe_load((fold_dir(out, folds[0]) / "recipe.yaml").read_text())
    (out / "recipe.yaml").write_text(yaml.safe_dump({**raw, "name": out.name, "fold": ALL_FOLDS}))
    return out
