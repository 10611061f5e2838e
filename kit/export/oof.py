"""An out-of-fold member: its fold members exported one by one, then two prediction sets per view.

A recipe with `fold: all` trains one member per fold of folds.csv into `models/<name>/fold<k>/`
(kit.train.loop.train_every_fold). `export_oof_member` exports each as any member (its own
model.onnx, export.json, preds/<view>/{val,test}/), then writes at the parent:

- `preds/<view>/oof/` — the fold members' `val` sets stacked, fold by fold in ascending order:
  every held-out image of folds.csv once, scored by the one fold member that never trained on it;
- `preds/<view>/test/` — the mean of the fold members' `test` sets, aligned by name;
- `export.json` — the folds, the sets written and each fold member's parity and provider; written
  last. A parent whose outputs are newer than every fold member's checkpoint (same options) is
  skipped unless `force=True`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from kit.data.folds import ALL_FOLDS, read_folds
from kit.errors import KitError
from kit.export.infer import VIEWS
from kit.export.layout import CHECKPOINT, REPORT, checkpoint_stamp, data_dir_of, member_recipe, mtime
from kit.export.options import ExportOptions
from kit.io import outputs, write_text
from kit.predset import PredictionSet, load, reindex
from kit.train.recipe import fold_dir

# Meta keys that describe one fold member, not the combined set.
PER_FOLD_META = ("model", "split", "fold")
# What the parent's export.json keeps of each fold member's own report.
CHILD_SUMMARY = ("model", "checkpoint_mtime_ns", "exporter", "parity", "parity_fp16", "provider", "tta")


def oof_name(parent: Path) -> str:
    """The parent's member name: its recipe's name (the fold members are <name>.fold<k>)."""
    recipe = member_recipe(parent)
    return recipe.name if recipe is not None and recipe.name else parent.name


def shared_meta(sets: Iterable[PredictionSet]) -> dict:
    """The meta keys every set has with the same value, less those that name one fold member."""
    metas = [ps.meta for ps in sets]
    return {k: v for k, v in metas[0].items()
            if k not in PER_FOLD_META and all(k in m and m[k] == v for m in metas[1:])}


def check_same_names(sets: dict[int, PredictionSet], dirs: dict[int, Path], what: str) -> None:
    """Every fold member's set lists the same `what` ("classes" or "images"), in any order."""
    folds = sorted(sets)
    first = set(getattr(sets[folds[0]], what))
    for k in folds[1:]:
        other = set(getattr(sets[k], what))
        if other != first:
            a, b = dirs[folds[0]], dirs[k]
            only = sorted(first - other)
            example, where = (only[0], a) if only else (sorted(other - first)[0], b)
            raise KitError(f"{a} and {b} disagree on {what} ({sets[k].meta.get('split')} sets): {example!r} only "
                           f"in {where.name}; the members of an out-of-fold member must share their {what}")


def _combined_meta(sets: dict[int, PredictionSet], dirs: dict[int, Path], name: str, split: str) -> dict:
    first = sets[min(sets)]
    meta = {**shared_meta(sets.values()), "kind": first.kind, "split": split, "model": name, "folds": sorted(sets)}
    if first.kind == "logit" and "activation" not in meta:
        raise KitError(f"{dirs[min(sets)].parent}: the fold members disagree on the logit activation")
    return meta


def out_of_fold(val_sets: dict[int, PredictionSet], dirs: dict[int, Path], name: str) -> PredictionSet:
    """The fold members' val sets stacked fold by fold (ascending), columns in the first fold's order."""
    check_same_names(val_sets, dirs, "classes")
    folds = sorted(val_sets)
    classes = list(val_sets[folds[0]].classes)
    scores = np.concatenate([reindex(val_sets[k], val_sets[k].images, classes) for k in folds])
    images = [n for k in folds for n in val_sets[k].images]
    return PredictionSet(np.ascontiguousarray(scores, dtype=np.float32), images, classes,
                         _combined_meta(val_sets, dirs, name, "oof"))


def fold_mean(test_sets: dict[int, PredictionSet], dirs: dict[int, Path], name: str) -> PredictionSet:
    """The mean of the fold members' test sets, aligned by image and class names (the first fold's order)."""
    check_same_names(test_sets, dirs, "classes")
    check_same_names(test_sets, dirs, "images")
    folds = sorted(test_sets)
    images, classes = list(test_sets[folds[0]].images), list(test_sets[folds[0]].classes)
    # Logits are averaged as logits: the set stays a logit set that the blender calibrates like any other.
    total = np.zeros((len(images), len(classes)), dtype=np.float64)
    for k in folds:
        total += reindex(test_sets[k], images, classes)
    meta = {**_combined_meta(test_sets, dirs, name, "test"), "fold": ALL_FOLDS}
    return PredictionSet((total / len(folds)).astype(np.float32), images, classes, meta)


def _fold_ids(data_dir: Path | None) -> list[int] | None:
    """The validation folds of data_dir/folds.csv (None without one: nothing to check against)."""
    if data_dir is None or not (data_dir / "folds.csv").is_file():
        return None
    return sorted(int(k) for k in set(read_folds(data_dir / "folds.csv")["fold"]) - {-1})


def is_fresh(parent: Path, children: dict[int, Path], options: dict, skip_infer: bool) -> bool:
    """export.json and every set it lists are newer than every fold member's checkpoint, same options."""
    try:
        report = json.loads((parent / REPORT).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    born = max(mtime(d / CHECKPOINT) for d in children.values())
    members = report.get("members") or {}
    if (mtime(parent / REPORT) <= born or report.get("folds") != sorted(children)
            or report.get("options") != options
            or any((members.get(d.name) or {}).get("checkpoint_mtime_ns") != checkpoint_stamp(d)
                   for d in children.values())):
        return False
    if not skip_infer:
        return bool(report.get("sets")) and all(mtime(parent / s / "meta.json") > born for s in report["sets"])
    return True


def export_oof_member(parent: str | Path, children: dict[int, Path], export_fold: Callable[..., dict], data,
                      options: ExportOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Export every fold member (`export_fold`: kit.export.member.export_member, same options), then
    the parent's oof and test sets. `children` = kit.export.layout.oof_children(parent). Returns what
    the parent's export.json holds.
    """
    parent = Path(parent)
    data_dir = data_dir_of(parent, data)
    expected = _fold_ids(data_dir)
    if expected is not None and expected != sorted(children):
        missing, extra = sorted(set(expected) - set(children)), sorted(set(children) - set(expected))
        if missing:
            raise KitError(f"{parent}: fold {missing[0]} of {data_dir / 'folds.csv'} is not trained (no "
                           f"{fold_dir(parent, missing[0]) / CHECKPOINT}); "
                           "run scripts/train.py RECIPE --folds --resume")
        raise KitError(f"{children[extra[0]]}: not a fold of {data_dir / 'folds.csv'} (folds {expected}); "
                       f"run scripts/train.py RECIPE --folds --force")
    recorded = options.recorded(data_dir)
    if not options.force and is_fresh(parent, children, recorded, options.skip_infer):
        log(f"{parent}: up to date (oof and test sets newer than every fold's {CHECKPOINT}); --force to redo")
        return json.loads((parent / REPORT).read_text())

    t0 = time.perf_counter()
    (parent / REPORT).unlink(missing_ok=True)  # without it nothing reads as fresh until the run finishes
    reports = {k: export_fold(d, data, options, progress=progress, log=log) for k, d in children.items()}
    name = oof_name(parent)
    report: dict = {"model": name, "folds": sorted(children), "options": recorded, "sets": [],
                    "members": {children[k].name: {key: r[key] for key in CHILD_SUMMARY if key in r}
                                for k, r in reports.items()}}
    with outputs(echo=None) as out:  # the combined sets and export.json: in place together
        if not options.skip_infer:
            for view in VIEWS:
                if not all(f"preds/{view}/{split}" in r["sets"] for r in reports.values() for split in ("val", "test")):
                    continue
                sets = {split: {k: load(d / "preds" / view / split, mmap=False) for k, d in children.items()}
                        for split in ("val", "test")}
                out_of_fold(sets["val"], children, name).save(parent / "preds" / view / "oof", out=out)
                fold_mean(sets["test"], children, name).save(parent / "preds" / view / "test", out=out)
                report["sets"] += [f"preds/{view}/oof", f"preds/{view}/test"]
            log(f"{parent}: out-of-fold sets of folds {', '.join(map(str, sorted(children)))} in {parent / 'preds'} "
                f"({', '.join(report['sets'])})")
        report["seconds"] = round(time.perf_counter() - t0, 2)
        write_text(parent / REPORT, json.dumps(report, indent=2) + "\n", out)  # staged last: the freshness mark
    return report
