"""One evaluation of a blend recipe (`evaluate`): val (when there is one) and test prepared and run
once, every fit made on val, the numbers blend.py prints, and the report's diagnostics (the members
alone, their errors' correlation, the threshold curve, reliability curves); writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kit import ranking
from kit.errors import KitError
from kit.post import baseline, new_whale, new_whale_model, pseudo
from kit.post.fits import (fit_calibrations, fit_new_whale, judge, new_whale_data, resolve_weights,
                           with_data_defaults)
from kit.post.inputs import Inputs, prepare, val_skip_reason
from kit.post.pipeline import Result, blend_matrix, fits_probability, fitted_key, position_table, run, with_weights
from kit.post.recipe import BlendRecipe, load_recipe
from kit.post.weights import WeightReport


def pseudo_evidence(recipe: BlendRecipe, inputs: Inputs, result: Result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On validation: each image's pseudo-label confidence, whether the rule may pick it (its top-1
    first in the final list), whether its top-1 is its animal."""
    top1 = result.top_codes[:, 0]
    return pseudo_confidence(recipe, inputs, top1), top1 == result.top5[:, 0], top1 == inputs.truth


def pseudo_confidence(recipe: BlendRecipe, inputs: Inputs, codes: np.ndarray) -> np.ndarray | None:
    """The calibrated probability of `codes` (one per image): see kit.post.pseudo. None when no
    member gives probabilities."""
    recipe = with_weights(recipe, inputs)
    if not any(mi is not None and m.weight > 0 and mi.scores is not None
               and pseudo.is_probability(m.calibration.resolved(mi.auto_method).method, mi.kind)
               for mi, m in zip(inputs.members, recipe.members)):
        return None
    probs = blend_matrix(recipe, inputs, only=pseudo.is_probability)
    return probs[np.arange(len(codes)), codes]


def _summary(result: Result, inputs: Inputs) -> dict:
    """The numbers of one split; its scores keyed by the metric's name (`map5`, `map5_by_step`), as score.py's."""
    out = {"images": len(inputs.images), "new_whale_share": result.new_whale_share,
           "threshold": result.threshold, "leaked": result.n_leaked, "swapped": result.n_swapped}
    if result.score_by_step:
        name = result.scorer.name
        out[f"{name}_by_step"] = dict(result.score_by_step)
        out["gain_by_step"] = {step: gain.to_dict() for step, _, gain in result.step_gains() if gain is not None}
        out[name] = result.score
    return out


@dataclass
class Reliability:
    """How far a member's top-1 probability is from how often its top-1 is right (validation)."""

    confidence: np.ndarray  # mean top-1 probability per non-empty bin
    accuracy: np.ndarray  # share of those images whose top-1 is their animal
    counts: np.ndarray  # images per bin
    ece: float  # expected calibration error: the count-weighted mean |accuracy - confidence|


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> Reliability:
    """Equal-width bins of the top-1 probability over [0, 1]."""
    which = np.minimum((np.clip(confidence, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf = np.bincount(which, weights=confidence, minlength=bins)
    acc = np.bincount(which, weights=correct.astype(float), minlength=bins)
    full = counts > 0
    conf, acc = conf[full] / counts[full], acc[full] / counts[full]
    ece = float(np.sum(counts[full] * np.abs(acc - conf)) / max(len(confidence), 1))
    return Reliability(conf, acc, counts[full], ece)


@dataclass
class MemberAlone:
    """One member blended alone on validation, without and with the recipe's steps, under its metric."""

    name: str
    kind: str
    weight: float
    score_bare: float
    score_with_steps: float
    marks_bare: np.ndarray  # each image's mark without steps
    reliability: Reliability | None = None  # when its calibration gives probabilities


@dataclass
class Diagnostics:
    """What the report shows beyond blend.py's numbers, computed with the evaluation (the report only renders)."""

    members: list[MemberAlone]
    blend_bare: float  # the blend without steps
    marks_correlation: np.ndarray | None  # the members' per-image marks' correlation (blend alone), two or more members
    # the metric and the new_whale-first share at each threshold, everything else as the recipe has it
    threshold_curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    # a P(new) model's cross-fitted P(new) against how often the animal is new (new_whale: fit: probability)
    new_whale_reliability: Reliability | None = None
    # pseudo.precision: by the number of validation images a cut keeps (most confident first), their
    # share right and its 95% lower bound
    pseudo_curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def diagnose(recipe: BlendRecipe, inputs: Inputs, result: Result) -> Diagnostics:
    """The members alone, their errors' correlation and the threshold curve on validation."""
    bare = recipe.without_steps()
    members = []
    for i, (m, mi) in enumerate(zip(recipe.members, inputs.members)):
        if mi is None or m.weight <= 0:
            continue
        alone_bare = run(bare.only_member(i), inputs)
        curve = None
        if mi.scores is not None and inputs.truth is not None and m.calibration.resolved(mi.auto_method).plugin \
                .yields_probability(mi.kind):
            probs = blend_matrix(recipe.only_member(i), inputs)
            top1 = probs.argmax(axis=1)
            curve = reliability(probs[np.arange(len(top1)), top1], top1 == inputs.truth)
        members.append(MemberAlone(m.name, mi.kind, m.weight, alone_bare.score,
                                   run(recipe.only_member(i), inputs).score, alone_bare.marks, curve))
    correlation = None
    if len(members) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = np.nan_to_num(np.corrcoef(np.vstack([a.marks_bare for a in members])), nan=0.0)
    curve = None
    if recipe.steps.active("new_whale"):
        table = position_table(recipe, inputs)
        # the share counts what comes first in the final list: a leak label where the leak pinned one
        pinned = result.pinned[:, 0] if result.pinned.shape[1] else np.full(len(result.top5), -1)
        grid = np.unique(np.concatenate([np.linspace(0, 1, 41), np.quantile(result.top_scores[:, 0], np.linspace(0, 1, 41))]))
        maps, shares = [], []
        grouped_first = result.fixed & (result.new_whale_at == 0)  # new_whale_groups placed these, whatever t
        for t in grid:
            first = np.where(result.fixed, grouped_first, np.minimum(ranking.insert_positions(table.scores, t), table.cap) == 0)
            maps.append(inputs.scorer.score(table.marks_at(t)))
            shares.append(np.where(pinned >= 0, pinned == inputs.unknown_code, first).mean())
        curve = (grid, np.array(maps), np.array(shares))
    out = Diagnostics(members, run(bare, inputs).score, correlation, curve)
    step = recipe.steps.active("new_whale")
    if step is not None and step.model is not None and inputs.truth is not None:
        d = new_whale_data(recipe, inputs)
        n_parts = max(1, min(recipe.tune.parts, len(inputs.truth)))
        part = ranking.cv_parts(inputs.truth, inputs.unknown_code, n_parts, recipe.tune.seed)
        q = new_whale_model.cross_fit(d.x, d.is_new, d.bare.top_scores, d.truth_column, part, n_parts,
                                      inputs.metric.credit)[1]
        out.new_whale_reliability = reliability(q, d.is_new)
    if recipe.pseudo.enabled and recipe.pseudo.precision is not None and inputs.truth is not None:
        confidence, eligible, correct = pseudo_evidence(recipe, inputs, result)
        if confidence is not None:
            _, kept, right = pseudo.cuts(confidence, eligible, correct)  # the cuts the gate chooses among
            if len(kept):
                out.pseudo_curve = (kept, right / kept, pseudo.wilson(right, kept)[0])
    return out


@dataclass
class BlendRun:
    """One evaluation of a recipe: weights resolved once, val and test run, the report's diagnostics
    on val. The report renders it as it is."""

    recipe: BlendRecipe  # as run: automatic weights resolved
    weights: WeightReport | None  # how the automatic weights came about (None: the recipe's own)
    test: tuple[Inputs, Result]
    val: tuple[Inputs, Result] | None = None
    val_skipped: str | None = None
    summary: dict = field(default_factory=dict)  # the numbers blend.py prints (and --json)
    diagnostics: Diagnostics | None = None  # with a validation split
    # the blend against new_whale alone and its best member on validation (kit/post/baseline.py), and
    # the lines that say where it falls short: printed by blend.py, on top of the report
    bars: baseline.Bars | None = None
    warnings: list[str] = field(default_factory=list)


def evaluate(recipe: BlendRecipe | str | Path, diagnostics: bool = True) -> BlendRun:
    """Prepare and run a recipe on val (when there is one) and test, with the report's diagnostics
    unless told not to; writes nothing."""
    if not isinstance(recipe, BlendRecipe):
        recipe = load_recipe(recipe)
    skip = val_skip_reason(recipe)
    val_inputs = None if skip else prepare(recipe, "val")
    test_inputs = prepare(recipe, "test")
    recipe = with_data_defaults(recipe, val_inputs, skip or "")
    if val_inputs is not None:  # never on test: without validation a calibration to fit is an error (its transform says so)
        recipe = fit_calibrations(recipe, val_inputs)
    recipe, weights = resolve_weights(recipe, val_inputs, test_inputs)
    bars = None if val_inputs is None else judge(recipe, val_inputs)  # before the fit: it cross-validates it
    fitted = "steps.new_whale.model" if fits_probability(recipe) else fitted_key(recipe)
    if fitted is not None:
        if val_inputs is None:
            raise KitError(f"{recipe.source}: steps.new_whale.fit needs the validation split, but {skip}; "
                           f"give a threshold or a proportion")
        recipe = fit_new_whale(recipe, val_inputs)
    val = None if val_inputs is None else (val_inputs, run(recipe, val_inputs))
    out = BlendRun(recipe, weights, (test_inputs, run(recipe, test_inputs)), val, skip,
                   diagnostics=None if val is None or not diagnostics else diagnose(recipe, *val), bars=bars,
                   warnings=bars.lines() if bars is not None else [])
    out.summary = {"recipe": recipe.source, "name": recipe.name, "metric": recipe.metric}
    if weights is not None:
        out.summary["weights"] = {"basis": weights.basis, **{n: float(w) for n, w in zip(weights.names, weights.weights)}}
    if val is not None:
        out.summary["val"] = _summary(val[1], val[0])
        if fitted is not None:
            value = recipe.steps.new_whale.model if fitted.endswith("model") else recipe.tunable_params()[fitted]
            out.summary["val"]["fitted"] = {"key": fitted, "value": value,
                                            f"cross_validated_{bars.scorer.name}": bars.score}
        if bars is not None:
            out.summary["val"]["bars"] = bars.to_dict()
    out.summary["test"] = _summary(out.test[1], test_inputs)
    out.summary["warnings"] = list(out.warnings)
    return out
