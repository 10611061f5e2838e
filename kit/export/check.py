"""Does the exported member score what the PyTorch member scores? Local MAP@5, both ways.

`map5_parity(model_dir)` runs the same inference pipeline (same images, same preprocessing,
same TTA fold-back, same gallery) once with onnxruntime over `model.onnx` and once with the
eager PyTorch network, turns each prediction set into top-5 lists with `new_whale` inserted at
a threshold (kit.ranking) and scores both with kit.metric's MAP@5 against the truth: the validation fold's labels (folds.csv), and `test_truth.csv` where the
competition has one (synthetic ones do). Each view gets its own threshold, the best on the
validation fold (a cosine and a probability are not on one scale: one threshold for both made a
strong cosine view look weak), the same for both runtimes; 0.5 where there is no validation fold.

The submission rule here is deliberately the plain one (top 5 by score, `new_whale` at the first
rank whose probability, or cosine, falls below the threshold): it checks the export, not the
post-processing, which lives in kit/post.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.data import load_competition
from kit.data.crops import CropSpec, open_crops
from kit.data.folds import fold_truth, read_folds
from kit.errors import KitError
from kit.export.images import ImageSource
from kit.export.infer import embed, images_needed, plan_splits, prediction_sets
from kit.export.layout import CHECKPOINT, ONNX, checkpoint_stamp, data_dir_of, oof_children, read_report
from kit.export.member import use_flip_tta
from kit.metric import map5
from kit.predset import PredictionSet, reindex
from kit.predset import load as load_set
from kit.ranking import top5_with_unknown
from kit.train.validate import evaluate_probs

THRESHOLD = {"logit": 0.5, "cosine": 0.5}  # probability for logits, cosine for the cosine view


def to_probability(ps: PredictionSet) -> np.ndarray:
    """Scores a threshold can be read on: softmax/sigmoid of logits; cosines and probs as they are."""
    s = np.asarray(ps.scores, dtype=np.float64)
    if ps.kind != "logit":
        return s
    if ps.meta.get("activation") == "sigmoid":
        return 1.0 / (1.0 + np.exp(-s))
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def truth_codes(ps: PredictionSet, truth: pd.DataFrame, unknown: str) -> np.ndarray:
    """The truth of `ps`'s images as its column codes: C for the unknown label, -2 (never a hit) for
    an identity it has no column for (truth: columns image, label)."""
    index = {c: i for i, c in enumerate(ps.classes)}
    labels = truth.set_index("image").loc[list(ps.images), "label"]
    return np.array([len(ps.classes) if lab == unknown else index.get(lab, -2) for lab in labels], np.int64)


def predset_map5(ps: PredictionSet, truth: pd.DataFrame, unknown: str, threshold: float) -> float:
    """MAP@5 of `ps`, the unknown label inserted at `threshold`."""
    codes = top5_with_unknown(to_probability(ps), threshold, len(ps.classes))
    return map5(codes, truth_codes(ps, truth, unknown))


def own_threshold(ps: PredictionSet, truth: pd.DataFrame, unknown: str, default: float) -> float:
    """The view's best new_whale threshold on these images (exact, kit.ranking); `default` when the
    best is never to insert it."""
    codes = truth_codes(ps, truth, unknown)
    targets = np.where(codes == len(ps.classes), -1, codes)  # -2 (no column) stays a miss
    best = evaluate_probs(to_probability(ps), targets)["threshold"]
    return default if best is None else float(best)


@dataclass
class Map5Row:
    view: str
    split: str
    images: int
    map5_onnx: float
    map5_torch: float
    max_score_diff: float  # max |onnx - torch| over the whole prediction set
    threshold: float = 0.5  # where new_whale was inserted (the view's own, fitted on validation)

    @property
    def diff(self) -> float:
        return abs(self.map5_onnx - self.map5_torch)


def map5_parity(model_dir: str | os.PathLike, data: str | os.PathLike | None = None, *, batch: int = 32,
                threshold: dict | None = None, tta: str = "auto", provider: str = "cpu",
                progress: bool = False) -> list[Map5Row]:
    """Local MAP@5 of each (view, split) prediction set from ONNX and from eager PyTorch."""
    from kit.export.runtime import OnnxRunner, TorchRunner

    model_dir = Path(model_dir)
    if oof_children(model_dir):
        raise KitError(f"{model_dir}: an out-of-fold member; MAP@5 parity is checked per fold member "
                       f"({model_dir}/fold<k>/), not on its combined oof and test sets")
    threshold = None if threshold is None else {**THRESHOLD, **threshold}
    if not (model_dir / ONNX).is_file():
        raise KitError(f"{model_dir}: no {ONNX}; run scripts/export.py first")
    report = read_report(model_dir)
    if report is None:
        raise KitError(f"{model_dir}: {ONNX} was not exported from the current {CHECKPOINT} (training went on?); "
                       f"run scripts/export.py {model_dir} again")
    from kit.train.model import load_member

    model, info = load_member(model_dir)
    tta = use_flip_tta(tta, model_dir, info)
    if checkpoint_stamp(model_dir) != report["checkpoint_mtime_ns"]:
        raise KitError(f"{model_dir}: {CHECKPOINT} changed while being read (training is running); try again when it stops")
    data_dir = data_dir_of(model_dir, data)
    if data_dir is None:
        raise KitError(f"{model_dir}: give the competition directory (data)")
    comp = load_competition(data_dir)
    folds_csv = Path(data_dir) / "folds.csv"
    folds = read_folds(folds_csv, comp.train) if folds_csv.is_file() else None
    plans = plan_splits(comp, folds, info.fold)
    source = ImageSource(comp, info, open_crops(comp, CropSpec.of(info), progress=progress))
    images, queries = images_needed(plans)

    def run(runner) -> dict:
        e = embed(runner, images, source, flip_twins=bool(info.flip_twins), logit_images=queries, tta=tta,
                  batch=batch, progress=progress, desc=runner.provider)
        return prediction_sets(e, info, plans, tta=tta)

    torch_sets = run(TorchRunner(model))
    # The ONNX side: the prediction sets export wrote (what the blender reads), when they are there
    # and were made the same way; else the same pipeline over model.onnx, in memory.
    saved = {}
    for view, split in torch_sets:
        d = model_dir / "preds" / view / split
        if f"preds/{view}/{split}" in report.get("sets", ()):
            ps = load_set(d, mmap=False)
            if (ps.meta.get("tta") == ("flip" if tta else "none") and ps.meta.get("cosine", "centre") == "centre"
                    and not ps.meta.get("new_identities")):
                saved[view, split] = ps
    onnx_sets = saved if len(saved) == len(torch_sets) else run(OnnxRunner(model_dir / ONNX, provider))
    truths = {}
    if folds is not None and info.fold != -1:
        held = folds[folds["fold"] == info.fold]
        truths["val"] = held[["image"]].assign(label=fold_truth(folds, held, comp.unknown))  # new to the fold: unknown
    if comp.truth is not None:
        truths["test"] = comp.truth
    if threshold is None:  # each view its own: the best on the validation fold, from the ONNX set
        threshold = dict(THRESHOLD)
        for (view, split), ps in onnx_sets.items():
            if split == "val" and "val" in truths:
                threshold[view] = own_threshold(ps, truths["val"], comp.unknown, THRESHOLD[view])
    rows = []
    for (view, split), ps in onnx_sets.items():
        if split not in truths:
            continue
        pt = torch_sets[view, split]
        pt = PredictionSet(reindex(pt, ps.images, ps.classes), ps.images, ps.classes, pt.meta)
        rows.append(Map5Row(
            view, split, len(ps.images),
            predset_map5(ps, truths[split], comp.unknown, threshold[view]),
            predset_map5(pt, truths[split], comp.unknown, threshold[view]),
            float(np.abs(np.asarray(ps.scores, np.float64) - pt.scores).max(initial=0.0)),
            threshold[view],
        ))
    return rows
