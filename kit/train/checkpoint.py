"""A member's files on disk and what a resumed run may take from them: `save_checkpoint` (atomic),
`write_member_files` (recipe.yaml, classes.txt), and `resumable`: the checkpoint to continue from,
refused by name when the recipe, the identities or the species changed since it was written."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from kit.errors import KitError
from kit.io import atomic_path, write_text
from kit.train.model import read_checkpoint
from kit.train.recipe import REMOVED, Recipe, recipe_from_dict, save_recipe

# Keys that may change between a run and its resume: they do not change what is learned.
RESUMABLE_CHANGES = ("name", "data", "runtime")


def _as_run(saved: dict) -> dict:
    """A checkpoint's recipe with every key of this release (keys added since take their defaults,
    which reproduce what the older release did)."""
    return recipe_from_dict(saved, "checkpoint", checkpoint=True).to_dict()


def _compare(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        if (not prefix and key in RESUMABLE_CHANGES) or prefix + key in REMOVED:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _compare(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def write_member_files(out: Path, recipe: Recipe, classes: list[str]) -> None:
    """A member's recipe.yaml (the recipe as run) and classes.txt (the head's identities, in order)."""
    save_recipe(recipe, out / "recipe.yaml")
    write_text(out / "classes.txt", "".join(c + "\n" for c in classes))


def save_checkpoint(path: Path, model: nn.Module, recipe: Recipe, classes: list[str], info, **training) -> None:
    """checkpoint.pt (docs/design.md, "The trained member"): the weights, recipe, classes and MemberInfo,
    and `training`'s state (epoch, stage, optimizer, ... for --resume); written atomically."""
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "recipe": recipe.to_dict(), "classes": list(classes), "info": info.to_dict(), **training}
    buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError; Python's names it
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def already_trained_error(out: Path) -> KitError:
    """A run without --resume or --force that would overwrite a trained member."""
    return KitError(f"{out}: already holds a checkpoint; use --resume to continue it or --force to start over")


def fully_trained(ckpt_path: Path, recipe: Recipe) -> bool:
    """Every stage done, by this recipe (a changed recipe is left to train(), which names the change)."""
    saved = read_checkpoint(ckpt_path)
    return saved["stage"] >= len(recipe.stages) and not _compare(_as_run(saved["recipe"]), recipe.to_dict())


def resumable(recipe: Recipe, ckpt_path: Path, resume: bool, force: bool, classes: list[str], species: list[str],
               env) -> dict | None:
    """The checkpoint to resume from, or None to start afresh; a KitError when there is one and the
    run may not use it (no --resume, or the recipe, identities or species changed since)."""
    if resume and not ckpt_path.is_file() and env.main:
        warnings.warn(f"--resume: {ckpt_path} does not exist; starting from scratch", stacklevel=3)
    if not ckpt_path.is_file() or force:
        return None
    if not resume:
        raise already_trained_error(ckpt_path.parent)
    saved = read_checkpoint(ckpt_path)
    changed = _compare(_as_run(saved["recipe"]), recipe.to_dict())
    if changed:
        raise KitError(f"{ckpt_path}: the recipe changed since this checkpoint ({'; '.join(changed[:3])}); "
                       "use --force to start over")
    if list(saved["classes"]) != classes:
        raise KitError(f"{ckpt_path}: the training identities changed ({len(saved['classes'])} then, {len(classes)} now); "
                       "use --force to start over")
    then = list(saved["info"].get("species", []))
    if then and then != species:
        raise KitError(f"{ckpt_path}: the species of train.csv changed since this checkpoint's species head "
                       f"({len(then)} then, {len(species)} now); use --force to start over")
    return saved
