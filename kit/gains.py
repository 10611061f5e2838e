"""What each method since 2019 gains here: measured on a competition the demo has trained, each
gain over its baseline with the paired bootstrap interval, on validation and on the test truth.

Run after `scripts/demo.py` (its members, blend and competition are the baselines; "the networks'
blend" is the demo's members through their logit and cosine views, automatic weights, one new_whale
threshold fitted on validation: the demo's blend without the knn views and P(new) it adds):
- sub-center ArcFace with dynamic margins, GeM over two stages, the head at 10x the learning rate
  and (Happywhale layout only) the auxiliary species head: the demo's ResNet trained again with
  each (`models/resnet18_tiny[-<DIR>]-<variant>`), its logits alone with the new_whale threshold fitted on
  validation, against the demo's ResNet the same way;
- the knn view: the networks' blend (below) plus each member's knn view (K = 20, rank-calibrated like
  the cosine views), against the networks' blend; automatic weights both;
- ensemble selection: the networks' blend with `weights: select` (kit/post/selection.py) against its
  automatic weights;
- the unknown label by P(new) (kit/post/new_whale_model.py, `fit: probability`): the networks' blend,
  and the blend with the matcher and selected weights, against the same with one fitted threshold
  (and the networks' blend against one fitted share);
- new_whale per species (Happywhale layout only): a threshold per species fitted on validation
  (species with 8+ validation images whose top-1 is of it), against the one fitted threshold;
- the local matcher (kit/local: SIFT, USAC MAGSAC inliers on the demo blend's top LOCAL_IDENTITIES
  identities, its calibration fitted on validation): alone, and added to the networks' blend (automatic
  weights, and `weights: select`), each against the networks' blend (automatic weights);
- one pseudo-label round of the demo's ResNet (logit and cosine views) at confidence 0.8, and one
  gated at precision 0.9 on validation (`pseudo.precision`, kit/post/pseudo.py), each against round 0.
Validation is where thresholds are fitted, so its gains are optimistic; the test truth is not.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from kit import ranking
from kit.data.competition import load_competition
from kit.demo import KNN
from kit.errors import KitError
from kit.export.member import export_member
from kit.local.member import LocalCfg, build_local_member
from kit.post import fits, pipeline
from kit.post.compare import Gain
from kit.post.inputs import prepare
from kit.post.pipeline import Result, gain_over
from kit.post.recipe import BlendRecipe, load_recipe, save_recipe
from kit.rounds import pseudo_rounds
from kit.train.loop import train
from kit.train.recipe import load_recipe as load_train_recipe
from kit.train.recipe import recipe_from_dict
from kit.tune.members import with_own_threshold

BASE = "resnet18_tiny"  # the demo's ResNet: models/resnet18_tiny, or models/resnet18_tiny-<DIR> (demo.py --data DIR)
VARIANTS = {  # the recipe keys each method changes, one line of YAML each
    # as models/happywhale_full.yaml sets them: m = 0.5 * n^-0.25 + 0.05, 0.55 rad for a lone image to 0.3 at
    # 16 images, about the tiny recipe's one margin (0.3) on average
    "subcenter-dynamic": {"head": {"subcenters": 2, "margin_a": 0.5, "margin_lambda": 0.25, "margin": 0.05}},
    "gem2": {"model": {"pool": "gem", "pool_stages": 2}},
    "head-lr10": {"optim": {"head_lr": 10.0}},
    "species-head": {"head": {"species_weight": 1.0}},  # where train.csv has species
}
MIN_GROUP = 8
LOCAL_IDENTITIES = 20
PRECISION = 0.9  # the gated pseudo-label round's target (pseudo.precision)


@dataclasses.dataclass
class Row:
    method: str
    baseline: str
    val: Gain
    test: Gain | None
    val_score: tuple[float, float]  # (baseline, method), the recipe's metric
    test_score: tuple[float, float] | None


def _fitted(recipe: BlendRecipe, fit: str | None = None) -> tuple[Result, Result]:
    """The runs on val and test of the recipe with its new_whale threshold fitted on all of val
    (`fit`: with `steps.new_whale.fit` threshold, share or probability instead)."""
    if fit is not None:
        recipe = recipe.with_params({"steps.new_whale": {"fit": fit}})
    val, test = prepare(recipe, "val"), prepare(recipe, "test")
    recipe = fits.with_data_defaults(recipe, val)
    recipe = pipeline.with_weights(fits.fit_calibrations(recipe, val), val)
    fitted = fits.fit_new_whale(recipe, val) if fit is not None else with_own_threshold(recipe, val, np.arange(len(val.images)))
    return pipeline.run(fitted, val), pipeline.run(fitted, test)


def _row(method: str, baseline: str, before: tuple[Result, Result], after: tuple[Result, Result]) -> Row:
    """`after` over `before` on val and test (where test has truth) under the recipe's metric."""
    val = gain_over(before[0], after[0])
    test = gain_over(before[1], after[1])
    return Row(method, baseline, val, test, (before[0].score, after[0].score),
               None if test is None else (before[1].score, after[1].score))


def _deep(base: dict, over: dict) -> dict:
    return {**base, **{k: _deep(base.get(k, {}), v) if isinstance(v, dict) else v for k, v in over.items()}}


def _member_alone(demo: BlendRecipe, model: str, name: str) -> BlendRecipe:
    return demo.with_params({"name": name, "members": [{"model": model, "view": "logit"}],
                             "steps": {"new_whale": {"threshold": 0.5}}})


def measure(blend: str | Path, echo: Callable[[str], None] = print) -> list[Row]:
    # the baseline of the blend-level rows: the demo's networks as the demo blended them before issue 24
    # (each member's logit and cosine views, automatic weights, one new_whale threshold fitted on
    # validation); the demo adds the knn views and P(new) now, two of the rows below
    demo = load_recipe(blend)
    demo = demo.with_params({"members": [m.to_dict() for m in demo.members if m.view != "knn"],
                             "steps.new_whale": {"fit": "threshold"}})
    data = Path(demo.data)
    base = next((m.model for m in demo.members if m.scored and Path(m.model).name.startswith(BASE)), None)
    if base is None:
        raise KitError(f"{demo.source}: no member models/{BASE}*: give the demo's blend recipe (blends/demo*.yaml)")
    has_species = "species" in load_competition(data, check_images=False).train
    rows = _variant_rows(demo, base, has_species, echo)

    echo("knn views: exporting the demo's members with --knn")
    for m in {m.model for m in demo.members if m.scored}:
        export_member(m, knn=KNN, progress=False, log=lambda line: None)
    knn = demo.with_params({"name": "gains-knn", "members": [m.to_dict() for m in demo.members] + [
        {"model": m, "view": "knn", "calibration": {"method": "rank"}}
        for m in dict.fromkeys(m.model for m in demo.members if m.scored)]})
    plain = demo.with_params({"name": "gains-plain"})
    blend_alone = _fitted(plain)
    rows.append(_row("knn view", "the networks' blend", blend_alone, _fitted(knn)))
    rows.append(_row("weights: select", "the networks' blend", blend_alone,
                     _fitted(plain.with_params(name="gains-select", weights="select"))))
    by_p = _fitted(plain, "probability")
    rows.append(_row("new_whale: P(new)", "one fitted threshold", _fitted(plain, "threshold"), by_p))
    rows.append(_row("new_whale: P(new)", "one fitted share", _fitted(plain, "share"), by_p))

    rows += _local_rows(demo, plain, blend, base, blend_alone, echo)
    if has_species:
        grouped = _species(plain)
        if grouped is None:
            echo(f"new_whale per species: no species has {MIN_GROUP}+ validation images of its own; not measured")
        else:
            rows.append(_row("new_whale per species", "one fitted threshold", blend_alone, grouped))

    rows += _pseudo_rows(demo, blend, base, echo)
    return rows


def _variant_rows(demo: BlendRecipe, base: str, has_species: bool, echo) -> list[Row]:
    """Each training variant of the demo's ResNet (VARIANTS), trained and exported, against the ResNet alone."""
    data = Path(demo.data)
    rows = []
    base_alone = _fitted(_member_alone(demo, base, "gains-base"))
    src = load_train_recipe(f"{base}/recipe.yaml", checkpoint=True)
    for name, change in VARIANTS.items():
        if "species_weight" in change.get("head", {}) and not has_species:
            continue
        out = Path(f"{base}-{name}")
        raw = _deep(src.to_dict(), {**change, "name": out.name, "data": str(data)})
        recipe = recipe_from_dict(raw, f"gains: {name}")
        # this variant's own directory: resumed when its recipe is this one, else trained again (a kit
        # whose variant changed, another demo's ResNet underneath)
        resume = (out / "checkpoint.pt").is_file() and (out / "recipe.yaml").is_file() and \
            load_train_recipe(out / "recipe.yaml", checkpoint=True) == recipe
        echo(f"{out}: training" + (" (resumed)" if resume else ""))
        train(recipe, out=out, resume=resume, force=not resume, progress=False)
        export_member(out, progress=False, log=lambda line: None)
        rows.append(_row(name, "the demo's ResNet alone", base_alone, _fitted(_member_alone(demo, str(out), f"gains-{name}"))))
    return rows


def _local_rows(demo: BlendRecipe, plain: BlendRecipe, blend: str | Path, base: str, blend_alone, echo) -> list[Row]:
    """The local matcher on the networks' shortlist: alone, added to the blend, selected, with P(new)."""
    rows = []
    echo(f"the local matcher: the demo blend's top {LOCAL_IDENTITIES} identities of each query")
    shortlist = Path(blend).with_name("gains-plain.yaml")
    save_recipe(plain, shortlist, note=["the networks' blend, for kit/gains.py's local matcher shortlist"])
    local = build_local_member(shortlist, LocalCfg(f"local{Path(base).name.removeprefix(BASE)}", LOCAL_IDENTITIES),
                               progress=False, echo=echo)
    member = {"model": str(local), "view": "local"}
    rows.append(_row("local matcher alone", "the networks' blend", blend_alone,
                     _fitted(demo.with_params({"name": "gains-local", "members": [member]}))))
    with_local = demo.with_params({"name": "gains-with-local", "members": [m.to_dict() for m in demo.members] + [member]})
    rows.append(_row("+ local matcher", "the networks' blend", blend_alone, _fitted(with_local)))
    selected = with_local.with_params(name="gains-with-local-select", weights="select")
    rows.append(_row("+ local matcher, weights: select", "the networks' blend", blend_alone, _fitted(selected)))
    rows.append(_row("+ local matcher, select, P(new)", "the same, one fitted threshold", _fitted(selected, "threshold"),
                     _fitted(selected, "probability")))
    return rows


def _pseudo_rows(demo: BlendRecipe, blend: str | Path, base: str, echo) -> list[Row]:
    """One pseudo-label round of the demo's ResNet, by a fixed cut and gated by precision on validation."""
    rows = []
    echo("one pseudo-label round of the demo's ResNet")
    resnet = demo.with_params({"name": "gains-resnet", "members": [
        {"model": base, "view": "logit"}, {"model": base, "view": "cosine", "calibration": {"method": "rank"}}],
        "pseudo": {"threshold": 0.8}})
    path = Path(blend).with_name("gains-resnet.yaml")
    save_recipe(resnet, path, note=["the demo's ResNet alone, for kit/gains.py's pseudo-label round"])
    rounds = pseudo_rounds(path, 1, echo=echo)
    rows.append(_round_row("pseudo-labels, 1 round (0.8)", rounds))

    echo(f"one pseudo-label round of the demo's ResNet, gated at precision {PRECISION:g} on validation")
    gated = Path(f"{base}-gated")  # its own round directories (<m>-gated-pl1): the 0.8 round's are taken
    if not gated.exists():
        gated.symlink_to(Path(base).name, target_is_directory=True)
    path = Path(blend).with_name("gains-resnet-gated.yaml")
    save_recipe(resnet.with_params({"name": "gains-resnet-gated", "pseudo": {"precision": PRECISION},
                                    "members.0.model": str(gated), "members.1.model": str(gated)}),
                path, note=["the demo's ResNet alone, for kit/gains.py's gated pseudo-label round"])
    rounds = pseudo_rounds(path, 1, echo=echo)
    rows.append(_round_row(f"pseudo-labels, 1 round (precision {PRECISION:g})", rounds))
    return rows


def _round_row(method: str, rounds) -> Row:
    """Round 1 over round 0; a round the gate did not run leaves round 0 as it was (a gain of 0)."""
    first, last = rounds[0], rounds[-1]
    val, test = last.val_gain, last.test_gain
    if len(rounds) == 1:  # round 0 against itself: exactly 0
        method += ": not run, no cut reached it"
        val, test = gain_over(first.val, first.val), gain_over(first.test, first.test)
    return Row(method, "round 0", val, test, (first.val_score, last.val_score),
               None if test is None else (first.test_score, last.test_score))


def _species(recipe: BlendRecipe) -> tuple[Result, Result] | None:
    """The recipe's fitted threshold, then a threshold per species fitted on the val images whose top-1 is of it
    (None: no species has MIN_GROUP of them)."""
    val, test = prepare(recipe, "val"), prepare(recipe, "test")
    recipe = fits.with_data_defaults(recipe, val)
    recipe = with_own_threshold(pipeline.with_weights(recipe, val), val, np.arange(len(val.images)))
    table = pipeline.position_table(recipe, val)
    species = dict(zip(val.competition.train["label"], val.competition.train["species"].astype(str)))
    top1 = pipeline.run(recipe, val).top_codes[:, 0]
    group = np.array([species.get(val.labels[c], "") if c >= 0 else "" for c in top1], dtype=object)
    thresholds = {}
    for g in sorted(set(group) - {""}):
        rows = np.flatnonzero(group == g)
        if len(rows) >= MIN_GROUP:
            thresholds[g] = ranking.best_threshold(table.rows(rows), None, val.scorer.rows(rows))[0]
    if not thresholds:
        return None
    grouped = recipe.with_params({"steps.new_whale_groups.thresholds": thresholds})
    return pipeline.run(grouped, val), pipeline.run(grouped, test)


def format_gains(rows: list[Row], title: str) -> str:
    def cell(pair, gain) -> str:
        if gain is None:
            return f"{'—':<40}"
        noise = "" if gain.significant else " (noise)"
        return f"{pair[0]:.4f} → {pair[1]:.4f} {gain.value:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}]{noise}"

    lines = [title, "| method | over | validation (fitted there) | test truth |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.baseline} | {cell(r.val_score, r.val)} | {cell(r.test_score, r.test)} |")
    return "\n".join(lines)
