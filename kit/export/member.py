"""One trained member, end to end: checkpoint.pt → model.onnx (checked) → prediction sets.

What `scripts/export.py` runs for each member directory. Writes, in `models/<name>/`:
- `model.onnx` — the checked export (and `model.fp16.onnx` with `fp16=True`);
- `preds/<view>/<split>/` — prediction sets, view in {logit, cosine}, split in {val, test};
- `export.json` — parity figures, provider, speed, the options and the sets written; written
  last, so its presence means the run finished. A member whose `model.onnx`, `export.json` and
  prediction sets are newer than `checkpoint.pt` (and were made with the same options) is
  skipped unless `force=True`.

An out-of-fold member (`fold: all`, trained by kit.train.loop.train_every_fold: one member per
fold in `fold<k>/`) is exported fold by fold, then combined into `preds/<view>/{oof,test}/`
(kit.export.oof).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kit.data import load_competition
from kit.data.crops import CropSpec, open_crops
from kit.data.folds import read_folds
from kit.errors import KitError
from kit.export.images import ImageSource
from kit.export.infer import embed, images_needed, plan_splits, prediction_sets
from kit.export.layout import (CHECKPOINT, ONNX, ONNX_FP16, REPORT, checkpoint_stamp, data_dir_of,
                               is_fresh, member_recipe, mtime, oof_children, remove_outputs)
from kit.export.oof import export_oof_member
from kit.export.options import TTA_MODES, ExportOptions
from kit.io import outputs, write_text

PARITY_IMAGES = 4


def flip_training(model_dir: Path, info) -> str:
    """How the member saw mirrored images in training: "twin", "same" or "none".

    From the recipe as run (`augment.flip` in models/<name>/recipe.yaml); without one, "twin"
    for a flip-twin member and "none" otherwise.
    """
    flip = getattr(info, "flip", None)
    if flip is None:
        recipe = member_recipe(model_dir)
        flip = None if recipe is None else recipe.augment.flip
    if flip not in ("twin", "same", "none"):
        flip = "twin" if info.flip_twins else "none"
    return flip


def use_flip_tta(tta: str, model_dir: Path, info) -> bool:
    """Flip TTA on or off. "auto": on for members that trained on mirrored images (twin or same).

    A member that never saw a mirror reads one as another animal (a fluke's pattern is not
    symmetric): averaging it in blurs the identity, so auto leaves it out.
    """
    if tta not in TTA_MODES:
        raise KitError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    if tta == "auto":
        return flip_training(model_dir, info) != "none"
    return tta == "flip"


def parity_inputs(images: Sequence[str], load: Callable[[str], np.ndarray] | None, info, n: int = PARITY_IMAGES,
                  seed: int = 0) -> np.ndarray:
    """A few real preprocessed images when there are some, else seeded noise of the input shape."""
    if load is not None and images:
        return np.stack([load(name) for name in list(images)[:n]]).astype(np.float32)
    h, w = info.input_size
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def export_member(model_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                  options: ExportOptions | None = None, *, progress: bool = True,
                  log: Callable[[str], None] = print, **settings) -> dict:
    """Export, check and (unless `skip_infer`) run one member; returns what export.json holds.
    `settings`: ExportOptions' keys (`batch=16, knn=20`: `knn` > 0 adds the knn view with that many
    neighbours, kit.export.infer), checked once; or `options` whole."""
    if options is None:
        options = ExportOptions.of(**settings)
    elif settings:
        raise TypeError(f"export_member: give options or settings, not both ({', '.join(settings)})")
    model_dir = Path(model_dir)
    children = oof_children(model_dir)
    if children:
        return export_oof_member(model_dir, children, export_member, data, options, progress=progress, log=log)
    if not (model_dir / CHECKPOINT).is_file():
        raise KitError(f"{model_dir}: no {CHECKPOINT}; train it first (python scripts/train.py models/<recipe>.yaml)")
    data_dir = data_dir_of(model_dir, data)
    recorded = options.recorded(data_dir)
    if not options.force and is_fresh(model_dir, recorded, options.skip_infer):
        log(f"{model_dir}: up to date (model.onnx and prediction sets newer than {CHECKPOINT}); --force to redo")
        return json.loads((model_dir / REPORT).read_text())

    from kit.train.model import load_member

    t0 = time.perf_counter()
    stamp = checkpoint_stamp(model_dir)  # before loading: a checkpoint replaced meanwhile reads as stale
    model, info = load_member(model_dir)
    comp, plans, source = _open_data(model_dir, data_dir, info, options, progress, log)

    # model.onnx, the prediction sets and export.json move into place together, once all succeeded
    with outputs(echo=None) as out:
        report = {"model": info.name, "checkpoint_mtime_ns": stamp}
        onnx_for_inference, parity_fp16 = _export_onnx(model_dir, model, info, plans, source, options, report, out, log)
        report["options"], report["sets"] = recorded, []
        if parity_fp16 is not None:
            report["parity_fp16"] = parity_fp16
        if not options.skip_infer:
            _predict(model_dir, model, info, onnx_for_inference, out.staged(model_dir / ONNX), comp, plans, source,
                     data_dir, options, report, out, progress, log)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        write_text(model_dir / REPORT, json.dumps(report, indent=2) + "\n", out)  # staged last: the freshness mark
    return report


def _open_data(model_dir: Path, data_dir: Path | None, info, options: ExportOptions, progress: bool, log):
    """(the competition, its split plans, the image source), or Nones without a competition when
    only the export is asked for; unreadable images are left out of the galleries, said once."""
    if data_dir is None:
        if not options.skip_infer:
            raise KitError(f"{model_dir}: no competition directory; give --data DIR (or data: in the recipe)")
        return None, None, None
    if not data_dir.is_dir():
        raise KitError(f"{data_dir}: competition directory not found (the member's recipe data:, or --data)")
    comp = load_competition(data_dir, check_images=not options.skip_infer)
    folds_csv = data_dir / "folds.csv"
    folds = read_folds(folds_csv, comp.train) if folds_csv.is_file() else None
    plans = plan_splits(comp, folds, info.fold)
    cache = None if options.skip_infer else open_crops(comp, CropSpec.of(info), progress=progress, echo=log)
    source = ImageSource(comp, info, cache)
    unreadable = source.unreadable()
    if unreadable:  # as training did: skipped where they would teach, a blank where a row is due
        plans = [p.without_gallery(unreadable) for p in plans]
        log(f"{model_dir}: warning: {len(unreadable)} image(s) cannot be read; left out of the gallery, and "
            f"scored as blank images where they are queries (first: {next(iter(unreadable.values()))})")
    return comp, plans, source


def _export_onnx(model_dir: Path, model, info, plans, source, options: ExportOptions, report: dict, out,
                 log) -> tuple[Path, dict | None]:
    """model.onnx (and model.fp16.onnx), each checked against the PyTorch member, staged in `out`;
    model.onnx's figures go into `report`. Returns (the staged file inference runs, the fp16 file's
    parity or None)."""
    from kit.export.exporter import ParityError, export_checked, export_fp16_checked

    queries = plans[0].queries if plans else []
    inputs = parity_inputs(queries, source, info)
    try:
        parity = export_checked(model, info, model_dir / ONNX, inputs, out=out)
    except ParityError:
        if mtime(model_dir / ONNX) <= mtime(model_dir / CHECKPOINT):
            remove_outputs(model_dir)  # an earlier checkpoint's: they no longer describe this member
        raise
    size_mb = out.staged(model_dir / ONNX).stat().st_size / 2**20
    log(f"{model_dir}: {ONNX} ({size_mb:.1f} MB, {parity.exporter} exporter), parity {parity.summary()}")
    report.update({"onnx": ONNX, "exporter": parity.exporter,
                   "parity": {"rel_error": parity.rel_error, "max_abs": parity.max_abs,
                              "tolerance": parity.tolerance, "inputs": "images" if queries else "noise"}})
    if not options.fp16:
        return out.staged(model_dir / ONNX), None
    p16 = export_fp16_checked(model, out.staged(model_dir / ONNX), model_dir / ONNX_FP16, inputs, out=out)
    log(f"{model_dir}: {ONNX_FP16}, parity {p16.summary()}")
    return out.staged(model_dir / ONNX_FP16), {"rel_error": p16.rel_error, "tolerance": p16.tolerance}


def _predict(model_dir: Path, model, info, onnx_for_inference: Path, onnx_fp32: Path, comp, plans, source,
             data_dir: Path, options: ExportOptions, report: dict, out, progress: bool, log) -> None:
    """Run the checked file on every image the plans need and stage the member's prediction sets."""
    from kit.export.runtime import OnnxRunner, choose_runner

    flip_tta = use_flip_tta(options.tta, model_dir, info)
    runner, fp16_used, note = choose_runner(onnx_for_inference, onnx_fp32, model, options.provider, options.threads,
                                            options.fp16)
    if note:
        log(f"{model_dir}: {note}")
    images, logit_images = images_needed(plans)
    digest = comp.digest()
    ran_by = (f"onnxruntime, provider {runner.session.get_providers()[0]}" if isinstance(runner, OnnxRunner)
              else f"PyTorch on {runner.device} (onnxruntime here has no CUDA provider)")
    log(f"{model_dir}: inference on {len(images):,} images with {ran_by}" + (" (fp16)" if fp16_used else ""))
    embedded = embed(runner, images, source, flip_twins=bool(info.flip_twins), logit_images=logit_images,
                     tta=flip_tta, batch=options.batch, workers=options.workers, progress=progress, desc=info.name)
    sets = prediction_sets(embedded, info, plans, tta=flip_tta, cosine=options.cosine,
                           new_identities=options.new_identities, knn=options.knn)
    for (view, split), ps in sets.items():
        ps.meta["data"] = str(data_dir.resolve())  # where it was made, for messages
        ps.meta["competition"] = digest  # what it was made on: a blend on another competition is refused
        if fp16_used:
            ps.meta["precision"] = "fp16"
        ps.save(model_dir / "preds" / view / split, out=out)
        report["sets"].append(f"preds/{view}/{split}")
        missing = ps.meta.get("without_centre", 0)
        if missing:
            log(f"{model_dir}: warning: {missing} trained identities have no {split} gallery image; "
                "their cosine is -1")
    report.update(provider=runner.provider, tta="flip" if flip_tta else "none", images=len(images),
                  images_per_second=round(embedded.images_per_second, 2), batch=options.batch)
    log(f"{model_dir}: {len(sets)} prediction sets in {model_dir / 'preds'} "
        f"({embedded.images_per_second:.1f} images/s on {runner.provider})")
