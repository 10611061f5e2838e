"""Inference into prediction sets: one pass over every image a member needs, then two views.

One pass embeds the union of the queries (the member's validation fold and the test images) and
the gallery (labelled train images); with flip TTA (by default for members trained on mirrored
images: kit.export.member.use_flip_tta) each batch goes through the network once as
[originals; mirrored], so a batch of N images is a network batch of 2N. From that pass:

- the `logit` view: TTA-folded identity logits (kit.export.tta), columns = the member's K
  trained identities (`MemberInfo.classes`), meta `activation` from the member;
- the `cosine` view: cosine between the query embedding and each identity's centre
  (kit.export.centres), columns = the same K identities by default, so a member's two views and
  all members align by name; `new_identities=True` appends the gallery identities the member was
  not trained on (sorted) after them;
- the `knn` view (with `knn=K`): each identity's best cosine among the query's K nearest gallery
  images, mirrored gallery images included when flip TTA runs (Happywhale 2022's 1st place);
  identities with no image among them get -1. Same columns as the cosine view; a new gallery
  identity needs no retraining.

Galleries (never containing the images being scored):
- val: train images outside the member's held-out fold (folds.csv), the unknown label excluded.
  The fold's images are the queries, so none of them can match itself.
- test: all labelled train images, the held-out fold included: at test time those labels are
  as good as any, and each held-out identity gains an image. (So a val centre has one image
  fewer than the test centre for the fold's identities: a test cosine is slightly higher on
  average. Thresholds tuned on val stay on the safe side.)

For a flip-twin member the mirrored gallery images form the twins' centres, and the mirrored
query is scored against them, averaged with the original against the own centres, the same
rule as for logits. Other members average the two views' unit embeddings first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.export.centres import (
    TRIM,
    TRIM_MIN,
    cosine_scores,
    identity_centres,
    knn_scores,
    nearest_image_scores,
    scores_for,
)
from kit.export.images import prefetch_batches
from kit.export.options import COSINE_MODES
from kit.export.tta import fold_logits, hflip, l2_normalise, merge_embeddings
from kit.predset import PredictionSet
from kit.progress import progress as progress_bar

VIEWS = ("logit", "cosine", "knn")


@dataclass
class Embedded:
    """What the network said about each image: folded logits (queries only) and unit embeddings."""

    images: list[str]
    embedding: np.ndarray  # (N, D) unit, original images
    embedding_flip: np.ndarray | None  # (N, D) unit, mirrored images; None without TTA
    logits: np.ndarray  # (Q, K) TTA-folded, rows for `logit_images`
    logit_images: list[str]
    provider: str = ""
    seconds: float = 0.0
    _row: dict = field(default_factory=dict, repr=False)
    _logit_row: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._row = {n: i for i, n in enumerate(self.images)}
        self._logit_row = {n: i for i, n in enumerate(self.logit_images)}

    def rows(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter((self._row[n] for n in names), dtype=np.int64, count=len(names))

    def logits_of(self, names: Sequence[str]) -> np.ndarray:
        idx = np.fromiter((self._logit_row[n] for n in names), dtype=np.int64, count=len(names))
        return self.logits[idx]

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds else 0.0


def embed(runner: Callable, images: Sequence[str], load: Callable[[str], np.ndarray], *,
          flip_twins: bool, logit_images: Sequence[str] = (), tta: bool = True, batch: int = 32,
          workers: int | None = None, progress: bool = True, desc: str = "infer") -> Embedded:
    """Run `runner` over `images` (decoded by `load` on a thread pool, `batch` at a time).

    Keeps the TTA-folded logits only for `logit_images` (a subset of `images`): a gallery needs
    only embeddings, and K logits for every train image would cost N x K floats.
    """
    images = list(images)
    want = set(logit_images)
    if not want <= set(images):
        raise ValueError("logit_images must be a subset of images")
    keep_order = [n for n in images if n in want]
    emb = flip = logits = None
    n_logit = 0
    start = time.perf_counter()
    bar = progress_bar(len(images), desc, "img", enabled=progress)
    try:
        done = 0
        for x in prefetch_batches(images, load, batch, workers=workers):
            b = len(x)
            both = np.concatenate([x, hflip(x)]) if tta else x
            lo, em = runner(both)
            lo_o, lo_f = (lo[:b], lo[b:]) if tta else (lo, None)
            em_o, em_f = (em[:b], em[b:]) if tta else (em, None)
            if emb is None:
                d = em.shape[1]
                emb = np.empty((len(images), d), dtype=np.float32)
                flip = np.empty((len(images), d), dtype=np.float32) if tta else None
                k = lo.shape[1] // 2 if flip_twins else lo.shape[1]
                logits = np.empty((len(keep_order), k), dtype=np.float32)
            emb[done:done + b] = l2_normalise(em_o)
            if tta:
                flip[done:done + b] = l2_normalise(em_f)
            sel = np.fromiter((images[done + i] in want for i in range(b)), dtype=bool, count=b)
            if sel.any():
                folded = fold_logits(lo_o[sel], None if lo_f is None else lo_f[sel], flip_twins)
                logits[n_logit:n_logit + len(folded)] = folded
                n_logit += len(folded)
            done += b
            bar.update(b)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if emb is None:
        emb = np.zeros((0, 0), dtype=np.float32)
        logits = np.zeros((0, 0), dtype=np.float32)
    return Embedded(images, emb, flip, logits, keep_order, getattr(runner, "provider", ""), seconds)


@dataclass
class SplitPlan:
    """The images one split scores, and the gallery its centres come from."""

    split: str
    queries: list[str]
    gallery: list[str]
    gallery_labels: list[str]
    gallery_note: str

    def without_gallery(self, names: Collection[str]) -> SplitPlan:
        """This plan with `names` (unreadable images) left out of the gallery."""
        keep = [i for i, n in enumerate(self.gallery) if n not in names]
        return SplitPlan(self.split, self.queries, [self.gallery[i] for i in keep],
                         [self.gallery_labels[i] for i in keep], self.gallery_note)


def plan_splits(competition, folds: pd.DataFrame | None, fold: int) -> list[SplitPlan]:
    """val (the member's held-out fold; absent for a member trained on everything) and test."""
    unknown = competition.unknown
    plans = []
    if fold != -1:
        if folds is None:
            raise KitError(f"{competition.root}: no folds.csv, but the member holds out fold {fold}; "
                           f"run `python scripts/prepare.py {competition.root}`")
        held = folds["fold"].to_numpy() == fold
        if not held.any():
            raise KitError(f"{competition.root}/folds.csv: fold {fold} (the member's) has no images")
        gal = folds[~held & (folds["label"] != unknown).to_numpy()]
        plans.append(SplitPlan("val", folds.loc[held, "image"].tolist(), gal["image"].tolist(),
                               gal["label"].tolist(), f"train outside fold {fold}, {unknown} excluded"))
    train = competition.train[competition.train["label"] != unknown]
    plans.append(SplitPlan("test", list(competition.test_images), train["image"].tolist(),
                           train["label"].tolist(), f"all train, {unknown} excluded"))
    return plans


def cosine_matrix(e: Embedded, plan: SplitPlan, *, flip_twins: bool, mode: str = "centre",
                  trim: float = TRIM, trim_min: int = TRIM_MIN) -> tuple[list[str], np.ndarray]:
    """(gallery identities sorted, Q x C cosine scores) for one split."""
    if mode not in COSINE_MODES:
        raise KitError(f"cosine mode must be one of {', '.join(COSINE_MODES)}, got {mode!r}")
    q, g = e.rows(plan.queries), e.rows(plan.gallery)

    def score(queries: np.ndarray, gallery: np.ndarray) -> tuple[list[str], np.ndarray]:
        if mode == "nearest":
            return nearest_image_scores(queries, gallery, plan.gallery_labels)
        classes, centres = identity_centres(gallery, plan.gallery_labels, trim=trim, trim_min=trim_min)
        return classes, cosine_scores(queries, centres)

    if e.embedding_flip is None:
        return score(e.embedding[q], e.embedding[g])
    if flip_twins:
        classes, own = score(e.embedding[q], e.embedding[g])
        _, twin = score(e.embedding_flip[q], e.embedding_flip[g])
        return classes, (own + twin) / 2
    return score(merge_embeddings(e.embedding[q], e.embedding_flip[q]),
                 merge_embeddings(e.embedding[g], e.embedding_flip[g]))


def knn_matrix(e: Embedded, plan: SplitPlan, *, flip_twins: bool, k: int) -> tuple[list[str], np.ndarray]:
    """(gallery identities sorted, Q x C kNN scores) for one split: like with like, a flip-twin
    member's mirrored query against the mirrored gallery; another member's merged query against
    both the gallery and its mirrors (a mirrored fluke is still its animal)."""
    q, g = e.rows(plan.queries), e.rows(plan.gallery)
    if e.embedding_flip is None:
        pairs = [(e.embedding[q], e.embedding[g])]
    elif flip_twins:
        pairs = [(e.embedding[q], e.embedding[g]), (e.embedding_flip[q], e.embedding_flip[g])]
    else:
        merged = merge_embeddings(e.embedding[q], e.embedding_flip[q])
        pairs = [(merged, e.embedding[g]), (merged, e.embedding_flip[g])]
    return knn_scores(pairs, plan.gallery_labels, k)


def prediction_sets(e: Embedded, info, plans: Sequence[SplitPlan], *, tta: bool, cosine: str = "centre",
                    new_identities: bool = False, knn: int = 0,
                    views: Sequence[str] = VIEWS) -> dict[tuple[str, str], PredictionSet]:
    """{(view, split): PredictionSet} for a member's embedded images (the knn view with `knn` > 0)."""
    classes = list(info.classes)
    flip_twins = bool(info.flip_twins)
    base = {"model": info.name, "fold": int(info.fold), "tta": "flip" if tta else "none", "provider": e.provider}
    out = {}
    for plan in plans:
        if "logit" in views:
            scores = e.logits_of(plan.queries)
            if scores.shape[1] != len(classes):
                raise KitError(f"{info.name}: the network gives {scores.shape[1]} identity logits "
                               f"but classes.txt lists {len(classes)}")
            meta = {"kind": "logit", "split": plan.split, "activation": info.activation, **base}
            out["logit", plan.split] = PredictionSet(np.ascontiguousarray(scores, dtype=np.float32),
                                                     list(plan.queries), classes, meta)
        if "cosine" in views:
            have, scores = cosine_matrix(e, plan, flip_twins=flip_twins, mode=cosine)
            trained = set(classes)
            extra = [c for c in have if c not in trained] if new_identities else []
            columns = classes + extra
            no_centre = sorted(set(classes) - set(have))
            meta = {"kind": "cosine", "split": plan.split, **base, "cosine": cosine,
                    "gallery": plan.gallery_note, "gallery_images": len(plan.gallery),
                    "new_identities": len(extra), "without_centre": len(no_centre)}
            if cosine == "centre":
                meta.update(trim=TRIM, trim_min=TRIM_MIN)
            out["cosine", plan.split] = PredictionSet(scores_for(columns, have, scores, missing=-1.0),
                                                      list(plan.queries), columns, meta)
        if "knn" in views and knn > 0:
            have, scores = knn_matrix(e, plan, flip_twins=flip_twins, k=knn)
            extra = [c for c in have if c not in set(classes)] if new_identities else []
            meta = {"kind": "cosine", "split": plan.split, **base, "cosine": "knn", "knn": knn,
                    "gallery": plan.gallery_note, "gallery_images": len(plan.gallery), "new_identities": len(extra)}
            out["knn", plan.split] = PredictionSet(scores_for(classes + extra, have, scores, missing=-1.0),
                                                   list(plan.queries), classes + extra, meta)
    return out


def images_needed(plans: Sequence[SplitPlan]) -> tuple[list[str], list[str]]:
    """(every image to run, in a stable order; the queries, whose logits are kept)."""
    seen: dict[str, None] = {}
    queries: dict[str, None] = {}
    for p in plans:
        for n in p.queries:
            seen[n] = None
            queries[n] = None
    for p in plans:
        for n in p.gallery:
            seen[n] = None
    return list(seen), list(queries)
