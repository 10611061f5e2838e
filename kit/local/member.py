"""A local member: the matcher's inlier counts as prediction sets, blended like any member.

    python scripts/match.py blends/demo.yaml [--name local] [--identities 50] [--extractor sift] ...

The blend recipe given is the *shortlist*: its members, blended as it says (calibrations and
automatic weights fitted on validation), rank each query's identities, and the query is matched
against the gallery photos of the top `identities` of them (all of them when there are no more),
plus the identities of its leak candidates (train photos within the recipe's phash distance). An
identity's score is its best photo's inlier count; identities off the shortlist score 0. The sets
have the shortlist's columns, so they blend beside its members:

    models/<name>/local.json                      what ran, and how fast
    models/<name>/preds/local/{val|oof,test}/     kind `inliers` (docs/design.md)

The gallery of a validation query is the train photos of known identities outside its fold (a
held-out photo is never matched against itself, nor its fold's others); of a test query, every
train photo of a known identity. With `flip: same` a query is matched mirrored too, and keeps the
better count (a member whose mirrors keep the identity); `none` (also right for `twin` subjects: a
mirror is another animal) matches it as it is.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from kit.data.competition import load_competition
from kit.data.folds import ALL_FOLDS, read_folds
from kit.errors import KitError
from kit.io import cpu_count, outputs, write_text
from kit.local.features import FeatureCache, FeatureSpec, open_features
from kit.local.match import MatchCfg, inliers, matching_vectors, one_thread_each
from kit.post import fits, pipeline
from kit.post.inputs import Inputs, prepare, val_skip_reason
from kit.post.recipe import BlendRecipe, load_recipe
from kit.predset import PredictionSet
from kit.progress import progress as progress_bar

VIEW = "local"


@dataclass(frozen=True)
class LocalCfg:
    name: str = "local"
    identities: int = 50  # the shortlist's length per query
    flip: str = "none"  # none | same
    features: FeatureSpec = field(default_factory=FeatureSpec)
    match: MatchCfg = field(default_factory=MatchCfg)

    def __post_init__(self):
        if self.identities < 1:
            raise KitError(f"--identities must be >= 1, got {self.identities}")
        if self.flip not in ("none", "same"):
            raise KitError(f"--flip {self.flip!r}: none or same (a twin's mirror is another animal: none)")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise KitError(f"--name {self.name!r} must be a plain directory name")


@dataclass
class SplitPlan:
    split: str  # val | oof | test
    images: list[str]
    query_rows: np.ndarray  # (N,) their rows in the feature cache
    shortlist: np.ndarray  # (N, B) int64 column codes, -1 padded
    gallery: list[np.ndarray]  # per query: feature-cache rows of its gallery photos
    owners: list[np.ndarray]  # per query: the column of each of those photos


def build_local_member(shortlist_recipe: str | Path, cfg: LocalCfg = LocalCfg(), *, models: str | Path = "models",
                       progress: bool = True, workers: int | None = None, echo: Callable[[str], None] = print) -> Path:
    """Match every validation and test query against its shortlist's gallery photos; write the sets."""
    recipe = load_recipe(shortlist_recipe)
    if any(m.view == VIEW for m in recipe.members):
        raise KitError(f"{shortlist_recipe}: the shortlist's members must not include a local member (view: local)")
    out = Path(models) / cfg.name
    comp = load_competition(recipe.data)
    spec = replace(cfg.features, use_boxes=cfg.features.use_boxes and comp.boxes is not None,
                   mirror=cfg.flip == "same")
    skip = val_skip_reason(recipe)
    if skip:
        raise KitError(f"{shortlist_recipe}: a local member needs the validation split to calibrate on: {skip}")
    val, test = prepare(recipe, "val"), prepare(recipe, "test")
    recipe = fits.with_data_defaults(recipe, val)
    ranker = pipeline.with_weights(fits.fit_calibrations(recipe, val), val)  # as blend.py weighs them
    features = open_features(comp, spec, progress=progress, workers=workers, echo=echo)
    folds = read_folds(Path(recipe.data) / "folds.csv", comp.train)
    plans = [_plan(recipe, ranker, inputs, comp, folds, features, cfg) for inputs in (val, test)]

    sets, pairs, seconds = {}, 0, 0.0
    for plan, inputs in zip(plans, (val, test)):
        start = time.perf_counter()
        scores = _match_split(plan, features, inputs.n_columns, cfg, progress, workers)
        seconds += time.perf_counter() - start
        pairs += sum(len(g) for g in plan.gallery) * (2 if cfg.flip == "same" else 1)
        meta = {"kind": "inliers", "model": cfg.name, "split": plan.split, "data": str(Path(recipe.data).resolve()),
                "shortlist": str(shortlist_recipe), "identities": cfg.identities}
        if plan.split == "val":
            meta["fold"] = recipe.fold
        sets[plan.split] = PredictionSet(scores, plan.images, list(inputs.labels[:inputs.n_columns]), meta)
        echo(f"  {plan.split}: {len(plan.images):,} queries, {sum(len(g) for g in plan.gallery):,} verified pairs")
    rate = pairs / seconds if seconds > 0 else 0.0
    with outputs(echo=None) as staged:  # the sets and local.json together, or none of them
        for split, ps in sets.items():
            ps.save(out / "preds" / VIEW / split, staged)
        write_text(out / "local.json", json.dumps({
            "name": cfg.name, "shortlist": str(shortlist_recipe), "data": str(Path(recipe.data).resolve()),
            "identities": cfg.identities, "flip": cfg.flip, "features": asdict(spec), "match": asdict(cfg.match),
            "cache": str(features.directory), "bad_images": sorted(features.reasons),
            "pairs": pairs, "seconds": round(seconds, 2), "pairs_per_s": round(rate, 1)}, indent=1) + "\n", staged)
    echo(f"{out}: local member, {pairs:,} verified pairs in {seconds:.0f} s ({rate:,.0f} pairs/s on "
         f"{workers or cpu_count()} thread(s)); blend it as {{model: {out}, view: {VIEW}}}")
    return out


def _plan(recipe: BlendRecipe, ranker: BlendRecipe, inputs: Inputs, comp, folds, features: FeatureCache,
          cfg: LocalCfg) -> SplitPlan:
    """Each query's shortlist (top identities of the blend, and its leak candidates') and gallery."""
    n_columns = inputs.n_columns
    b = min(cfg.identities, n_columns)
    codes = pipeline.blend_top(ranker, inputs, b)[0] if b < n_columns else np.tile(np.arange(n_columns), (len(inputs), 1))
    leak_step = recipe.steps.active("leak")
    if inputs.leak is not None and leak_step is not None:  # the duplicates' identities join the shortlist
        m = inputs.leak.matches
        near = m.distance <= leak_step.max_distance
        extra = [[] for _ in range(len(inputs))]
        for q, label in zip(m.query[near], inputs.leak.label[near]):
            if label < n_columns:
                extra[q].append(int(label))
        width = max([codes.shape[1]] + [codes.shape[1] + len(e) for e in extra])
        padded = np.full((len(inputs), width), -1, np.int64)
        for q in range(len(inputs)):
            row = list(dict.fromkeys([int(c) for c in codes[q] if c >= 0] + extra[q]))
            padded[q, :len(row)] = row
        codes = padded

    # the gallery: train photos of known identities (columns), their fold
    code_of = {lab: c for c, lab in enumerate(inputs.labels[:n_columns])}
    rows_of = features.rows(comp.relative_path(name, "train") for name in folds["image"])
    col = np.array([code_of.get(lab, -1) for lab in folds["label"]], np.int64)
    fold = folds["fold"].to_numpy()
    usable = (col >= 0) & ~features.bad[rows_of]
    by_code: dict[int, np.ndarray] = {}
    for c in np.unique(col[usable]):
        by_code[int(c)] = np.flatnonzero(usable & (col == c))
    if inputs.split == "val":
        split = "oof" if recipe.fold == ALL_FOLDS else "val"
        query_fold = dict(zip(folds["image"], fold))
        query_rows = features.rows(comp.relative_path(name, "train") for name in inputs.images)
    else:
        split = "test"
        query_fold = {}
        query_rows = features.rows(comp.relative_path(name, "test") for name in inputs.images)
    gallery, owners = [], []
    for q, name in enumerate(inputs.images):
        own = query_fold.get(name)
        idx = [by_code.get(int(c), np.empty(0, np.int64)) for c in codes[q] if c >= 0]
        idx = np.concatenate(idx) if idx else np.empty(0, np.int64)
        if own is not None:  # never the query's own fold (for an integer fold: its held-out photos)
            idx = idx[fold[idx] != own]
        gallery.append(rows_of[idx])
        owners.append(col[idx])
    return SplitPlan(split, list(inputs.images), query_rows, codes, gallery, owners)


def _match_split(plan: SplitPlan, features: FeatureCache, n_columns: int, cfg: LocalCfg, progress: bool,
                 workers: int | None) -> np.ndarray:
    """(N, C) float32 inlier counts: each query's best photo per shortlisted identity, 0 elsewhere."""
    extractor, query_rows = features.spec.extractor, plan.query_rows
    scores = np.zeros((len(plan.images), n_columns), np.float32)

    def vectors(row: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(features.count[row])  # computed again each time: a few microseconds, no memory held
        return np.asarray(features.xy[row, :n]), matching_vectors(np.asarray(features.desc[row, :n]), extractor)

    def one(q: int) -> None:
        rows, owners = plan.gallery[q], plan.owners[q]
        if not len(rows):
            return
        gallery = [vectors(int(r)) for r in rows]
        views = [vectors(int(query_rows[q]))]
        if cfg.flip == "same" and features.mirrored is not None:
            xy_m, desc_m, count_m = features.mirrored
            n = int(count_m[query_rows[q]])
            views.append((np.asarray(xy_m[query_rows[q], :n]), matching_vectors(np.asarray(desc_m[query_rows[q], :n]),
                                                                              extractor)))
        best = np.zeros(len(rows), np.int32)
        for xy, vec in views:
            best = np.maximum(best, inliers(xy, vec, gallery, extractor, cfg.match))
        np.maximum.at(scores[q], owners, best.astype(np.float32))

    with one_thread_each(), ThreadPoolExecutor(max_workers=workers or cpu_count(), thread_name_prefix="match") as pool, \
            progress_bar(len(plan.images), f"matching {plan.split}", "query", enabled=progress) as bar:
        for _ in pool.map(one, range(len(plan.images))):
            bar.update(1)
    return scores
