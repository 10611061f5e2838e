"""A member directory: what is in it, what it was trained and exported with, and whether its export is fresh.

`models/<name>/` holds recipe.yaml, classes.txt, checkpoint.pt (training) and model.onnx,
export.json, preds/ (export); an out-of-fold member holds one such member per fold in fold<k>/
(docs/design.md, "The trained member"). No torch of its own; reading a member's recipe checks its
head against kit/train/heads.py's registry, which loads torch (export needs it anyway).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kit.data.folds import ALL_FOLDS
from kit.io import settle
from kit.train.recipe import fold_dir, load_recipe

CHECKPOINT = "checkpoint.pt"
ONNX = "model.onnx"
ONNX_FP16 = "model.fp16.onnx"
REPORT = "export.json"


def find_members(root: str | os.PathLike = "models") -> list[Path]:
    """Every trained member under `root`, by name: the directories holding a checkpoint.pt, and the
    out-of-fold members (one entry each, never their fold members)."""
    root = Path(root)
    if not root.is_dir():
        return []
    singles = {p.parent for p in root.glob(f"*/{CHECKPOINT}")}
    parents = {p.parent.parent for p in root.glob(f"*/*/{CHECKPOINT}")}
    return sorted(singles | {p for p in parents if oof_children(p)})


def member_recipe(model_dir: Path):
    """The member's recipe as run (model_dir/recipe.yaml, kit.train.recipe), or None without one;
    a damaged one is a KitError naming it."""
    path = Path(model_dir) / "recipe.yaml"
    return load_recipe(path, checkpoint=True) if path.is_file() else None


def oof_children(model_dir: str | os.PathLike) -> dict[int, Path]:
    """{fold: member directory} of an out-of-fold member, ascending; {} for any other directory.

    An out-of-fold member's recipe.yaml says `fold: all`; each fold<k>/ holding a checkpoint.pt
    whose recipe.yaml says `fold: k` is one of its members.
    """
    model_dir = Path(model_dir)
    parent = member_recipe(model_dir)
    if parent is None or parent.fold != ALL_FOLDS:
        return {}
    children = {}
    for ckpt in model_dir.glob(f"*/{CHECKPOINT}"):
        child = member_recipe(ckpt.parent)
        if child is not None and child.fold != ALL_FOLDS and fold_dir(model_dir, child.fold) == ckpt.parent:
            children[child.fold] = ckpt.parent
    return dict(sorted(children.items()))


def data_dir_of(model_dir: Path, data: str | os.PathLike | None) -> Path | None:
    """`data` if given, else the `data:` of the member's recipe.yaml (None if neither)."""
    if data is not None:
        return Path(data)
    recipe = member_recipe(model_dir)
    return Path(recipe.data) if recipe is not None and recipe.data else None


def mtime(path: Path) -> float:
    """The file's modification time; -1 when it is absent (older than anything)."""
    return path.stat().st_mtime if path.exists() else -1.0


def checkpoint_stamp(model_dir: Path) -> int:
    """The checkpoint's modification time (ns): which checkpoint an export was made from."""
    return (model_dir / CHECKPOINT).stat().st_mtime_ns


def read_report(model_dir: Path) -> dict | None:
    """export.json if it describes the checkpoint now in `model_dir`, else None (stale or absent)."""
    settle(model_dir)  # an export a kill cut short between its renames: finished first, read whole
    try:
        report = json.loads((model_dir / REPORT).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if report.get("checkpoint_mtime_ns") != checkpoint_stamp(model_dir) or not (model_dir / ONNX).is_file():
        return None
    return report


def is_fresh(model_dir: Path, options: dict, skip_infer: bool) -> bool:
    """model.onnx, export.json and every set it lists are newer than checkpoint.pt, same options.

    "Newer" is checked twice: by modification times, and by the checkpoint time export.json
    recorded before loading it (training rewrites checkpoint.pt every epoch, possibly while an
    export runs).
    """
    born = mtime(model_dir / CHECKPOINT)
    if mtime(model_dir / ONNX) <= born or mtime(model_dir / REPORT) <= born:
        return False
    report = read_report(model_dir)
    if report is None:
        return False
    if not skip_infer:
        if report.get("options") != options or not report.get("sets"):
            return False
        return all(mtime(model_dir / s / "meta.json") > born for s in report["sets"])
    return True


def remove_outputs(model_dir: Path) -> None:
    """Delete what export wrote (model.onnx, model.fp16.onnx, export.json, preds/)."""

    for name in (REPORT, ONNX, ONNX_FP16):  # export.json first: without it nothing reads as fresh
        (model_dir / name).unlink(missing_ok=True)
    shutil.rmtree(model_dir / "preds", ignore_errors=True)
