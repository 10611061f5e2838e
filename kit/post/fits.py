"""What is fitted on the validation split before a run, each a recipe in, the recipe with the fitted
values written in, out: the data's defaults (`with_data_defaults`: new_whale's unknown share),
calibrations that learn from validation (`fit_calibrations`), the automatic weights once for both
splits (`resolve_weights`), the new_whale threshold, share or P(new) model (`fit_new_whale`, exact;
`cross_fitted_marks` scores it on images it did not see), and the bars a blend is judged by (`judge`).
Nothing here reads the test truth: a fit asked of the test split is refused.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kit import ranking
from kit.errors import KitError
from kit.post import baseline, blend, new_whale, new_whale_model
from kit.post import weights as auto
from kit.post.compare import paired_gain
from kit.post.inputs import Inputs
from kit.post.pipeline import (Result, fits_probability, fitted_key, member_firsts, position_table, run, unfitted,
                               weight_report, with_weights)
from kit.post.plugins import steps_in_order
from kit.post.recipe import BlendRecipe
from kit.post.weights import WeightReport
from kit.ranking import assemble


def with_data_defaults(recipe: BlendRecipe, val_inputs: Inputs | None, why_none: str = "") -> BlendRecipe:
    """The recipe with what its steps take from the data when it leaves it out (new_whale without a
    threshold or proportion: validation's unknown share, over all its images), worked out here where
    the data is loaded, not while the recipe is parsed. `val_inputs`: the validation split (None
    without one: `why_none` says why, in the message of a step that needs it)."""
    changes = {}
    for step in steps_in_order():
        params = recipe.steps.get(step.name)
        if params is None:
            continue
        try:
            filled = step.data_defaults(params, val_inputs)
        except KitError as e:
            raise KitError(f"{recipe.source}: {e}{f' ({why_none})' if why_none else ''}") from None
        changes.update({f"steps.{step.name}.{key}": value for key, value in filled.items()})
    return recipe.with_params(changes) if changes else recipe


def fit_calibrations(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> BlendRecipe:
    """The recipe with each member calibration that is fitted on validation (`needs_fit`: a matcher's
    inlier counts) fitted on `rows` of these inputs (default: all), its parameters written in; the
    recipe itself when none is. Resolve these first: weights and thresholds are fitted on calibrated scores."""
    changes = {}
    for i, (m, mi) in enumerate(zip(recipe.members, inputs.members)):
        if mi is None or mi.scores is None:
            continue
        cal = m.calibration.resolved(mi.auto_method)
        if not cal.plugin.needs_fit(cal.params):
            continue
        if inputs.split == "test":  # never fitted on the test truth, whoever asks
            raise KitError(f"{recipe.source}: members[{i}] ({m.name}): calibration {cal.method} is fitted on validation "
                           f"images, never on the test images; give its parameters")
        if inputs.truth is None:
            raise KitError(f"{recipe.source}: members[{i}] ({m.name}): calibration {cal.method} is fitted on validation "
                           f"images with truth, and the {inputs.split} images have none; give its parameters")
        idx = np.arange(len(inputs.images)) if rows is None else np.asarray(rows)
        truth = np.where(inputs.truth < inputs.n_columns, inputs.truth, -1)  # a column, or none of them
        fitted = cal.plugin.fit(mi.scores[idx], truth[idx])
        changes[f"members.{i}.calibration"] = {"method": cal.method, **{k: v for k, v in cal.values if k not in fitted},
                                               **fitted}
    return recipe.with_params(changes) if changes else recipe


def resolve(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> BlendRecipe:
    """Everything the recipe fits on validation, fitted on `rows` of these inputs, in the order they
    depend on each other: the data's defaults (on all of these inputs, as blend.py fills them),
    calibrations, automatic weights, the new_whale threshold."""
    recipe = with_data_defaults(recipe, inputs)
    recipe = with_weights(fit_calibrations(recipe, inputs, rows), inputs, rows)
    return fit_new_whale(recipe, inputs, rows)


@dataclass
class NewWhaleData:
    """What a P(new) model is fitted on and scored with (kit/post/new_whale_model.py), per image."""

    x: np.ndarray  # (N, 4) features
    is_new: np.ndarray  # bool (N,)
    truth_column: np.ndarray  # int64 (N,) the true identity's column in the top-K, -1: none
    bare: Result  # the recipe run without its new_whale step (the vote's positions, the leak, the swap)


def new_whale_data(recipe: BlendRecipe, inputs: Inputs) -> NewWhaleData:
    bare = run(recipe.with_params({"steps.new_whale.enabled": False}), inputs)
    firsts, weights = member_firsts(with_weights(recipe, inputs), inputs)
    x = new_whale_model.features(bare.top_scores, bare.top_codes[:, 0], firsts, weights)
    is_new = inputs.truth == inputs.unknown_code
    hit = (bare.top_codes == inputs.truth[:, None]) & ~is_new[:, None]
    return NewWhaleData(x, is_new, np.where(hit.any(axis=1), hit.argmax(axis=1), -1), bare)


def _marks_at(data: NewWhaleData, at: np.ndarray, inputs: Inputs) -> np.ndarray:
    """Each image's mark with the unknown label at `at` (the vote's place where earlier; a
    new_whale_groups row where that step put it)."""
    b = data.bare
    at = np.where(b.fixed, b.new_whale_at, new_whale.combine(b.new_whale_at, at))
    return inputs.scorer.marks(assemble(b.top_codes, b.pinned, at, b.swapped, inputs.unknown_code))


def cross_fitted_marks(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray, part: np.ndarray,
                       n_parts: int) -> np.ndarray:
    """The marks of `rows` (part: each row's part) with the unknown label placed by a P(new) model
    fitted on the other parts only: no image is scored by a model that saw it."""
    d = new_whale_data(recipe, inputs)
    x, is_new, scores, column = d.x[rows], d.is_new[rows], d.bare.top_scores[rows], d.truth_column[rows]
    at = np.zeros(len(inputs.images), np.int64)
    at[rows] = new_whale_model.cross_fit(x, is_new, scores, column, part, n_parts, inputs.metric.credit)[0]
    return _marks_at(d, at, inputs)[rows]


def fit_new_whale(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> BlendRecipe:
    """The recipe with `steps.new_whale.fit` resolved: the threshold (or share) that scores best under
    the recipe's metric on `rows` of these inputs (default: all), found exactly
    (kit.ranking.best_threshold / best_share), or the P(new) model fitted there; the recipe itself when it fits nothing. Like automatic weights:
    resolved once on validation, then carried to test. Resolve the weights first."""
    key = fitted_key(recipe)
    if key is None and not fits_probability(recipe):
        return recipe
    if inputs.split == "test":  # never fitted on the test truth, whoever asks
        raise KitError(f"{recipe.source}: steps.new_whale.fit is fitted on validation images, never on the test images")
    if inputs.truth is None:
        raise KitError(f"{recipe.source}: steps.new_whale.fit needs validation images with truth to fit on; "
                       f"the {inputs.split} images have none (give a threshold or a proportion)")
    if key is None:
        d = new_whale_data(recipe, inputs)
        idx = np.arange(len(inputs.images)) if rows is None else np.asarray(rows)
        model = new_whale_model.fit(d.x[idx], d.is_new[idx], d.bare.top_scores[idx], d.truth_column[idx])
        return recipe.with_params({"steps.new_whale.model": model})
    table, scorer = position_table(unfitted(recipe), inputs), inputs.scorer
    if rows is not None:
        table, scorer = table.rows(np.asarray(rows)), scorer.rows(rows)
    fit = ranking.best_threshold if key.endswith("threshold") else ranking.best_share
    return recipe.with_params({key: fit(table, None, scorer)[0]})


def rule_marks(recipe: BlendRecipe, inputs: Inputs, part: np.ndarray, n_parts: int) -> tuple[np.ndarray, bool]:
    """(each image's mark under the recipe's new_whale rule, whether it was cross-validated): a
    fitted threshold or share scored on each part by the value fitted on the others; else as it runs."""
    key = fitted_key(recipe)
    if fits_probability(recipe):
        return cross_fitted_marks(recipe, inputs, np.arange(len(inputs.images)), part, n_parts), True
    if key is None:
        return run(recipe, inputs).marks, False
    table = position_table(unfitted(recipe), inputs)
    return ranking.cross_validated(table, part, n_parts, by_share=key.endswith("proportion"), scorer=inputs.scorer)[1], True


def judge(recipe: BlendRecipe, inputs: Inputs) -> baseline.Bars | None:
    """The blend (weights resolved, its fit not yet) against new_whale alone and its best member on
    these inputs (kit/post/baseline.py says how, and what the bars mean); None without truth."""
    if inputs.truth is None or not len(inputs.truth):
        return None
    n_parts = max(1, min(recipe.tune.parts, len(inputs.truth)))
    part = ranking.cv_parts(inputs.truth, inputs.unknown_code, n_parts, recipe.tune.seed)
    scorer = inputs.scorer
    blend, cross_validated = rule_marks(recipe, inputs, part, n_parts)
    trivial = scorer.unknown_everywhere()
    bars = baseline.Bars(blend, trivial, paired_gain(blend, trivial, scorer), cross_validated,
                         inputs.labels[inputs.unknown_code], scorer)
    present = [i for i, (m, mi) in enumerate(zip(recipe.members, inputs.members)) if mi is not None and m.weight > 0]
    if len(present) > 1:
        alone = {}
        for i in present:
            m = recipe.members[i]
            solo = recipe.only_member(i)
            if m.scored:  # in its own calibration, so that its top-1 score means something
                solo = fit_calibrations(solo.with_params({f"members.{i}.calibration": {"method": "auto"}}), inputs)
            solo = solo.with_params({"steps.new_whale.fit": "threshold", "steps.new_whale.enabled": True})
            alone[m.name] = rule_marks(solo, inputs, part, n_parts)[0]
        bars.best_member = max(alone, key=lambda name: scorer.score(alone[name]))
        bars.member = alone[bars.best_member]
        bars.over_member = paired_gain(blend, bars.member, scorer)
    return bars


def resolve_weights(recipe: BlendRecipe, val: Inputs | None, test: Inputs) -> tuple[BlendRecipe, WeightReport | None]:
    """Automatic weights, once for both splits: from the validation errors when every member has
    validation predictions, else from the members' agreement on test."""
    if not recipe.auto_weights:
        return recipe, None
    basis = val if val is not None and all(mi is not None for mi in val.members) else test
    if recipe.weights == "select" and basis is test:
        raise KitError(f"{recipe.source}: weights: select chooses the weights on validation, and "
                       + ("there is no validation split" if val is None else
                          f"{recipe.members[[mi is None for mi in val.members].index(True)].name} has no validation predictions"))
    if basis is test:  # the members' agreement there, never the test truth a synthetic competition carries
        basis = dataclasses.replace(test, truth=None, scorer=None)
    report = weight_report(recipe, basis)
    return recipe.with_params({f"members.{i}.weight": float(w) for i, w in enumerate(report.weights)}), report
