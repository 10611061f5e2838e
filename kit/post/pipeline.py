"""The post-processing pipeline, pure: prepared inputs in, a result out (blend.py, tune and the report).

    inputs = prepare(recipe, "val")      # kit/post/inputs.py: loads, aligns, checks; heavy, once
    result = run(recipe, inputs)         # blend -> leak -> new_whale -> balance -> top-5; ms
    result.map5_by_step                  # {"blend": .., "+ leak": .., "+ new_whale": .., "+ balance": ..}
    run(recipe.with_params({"steps.new_whale.threshold": 0.4}), inputs)   # same inputs, new params

Also here: what is fitted on validation before a run (calibrations, automatic weights or ensemble
selection, the new_whale threshold or P(new) model: `resolve`), the bars a blend is judged by, the
report's diagnostics, and `evaluate(recipe)`: val and test run once, nothing written. Writing the
files is kit/post/files.py's (`blend_files`, what scripts/blend.py does).

The state every step edits is small: the blended top-K identities and scores per image
(K = 10), the unknown label's blended vote, the leak's pinned labels, where new_whale is
inserted, and which images swap top-1/2; `kit.ranking.assemble` turns it into the top-5 in one numba pass.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kit import ranking
from kit.errors import KitError
from kit.metric import K as TOP
from kit.metric import average_precision
from kit.post import baseline, blend, leak, new_whale, new_whale_model, pseudo, selection
from kit.post import weights as auto
from kit.post.compare import Gain, paired_gain, paired_gains
from kit.post.inputs import Inputs, member_key, prepare, val_skip_reason
from kit.post.plugins import steps_in_order
from kit.post.recipe import BlendRecipe, load_recipe
from kit.post.weights import WeightReport
from kit.ranking import assemble

TOP_K = 10  # ranked identities kept per image: 5 + up to 5 leak labels they may duplicate


@dataclass
class State:
    """What the steps edit; `assemble` makes the top-5 from it."""

    top: np.ndarray  # int64 (N, K) blended top-K codes
    scores: np.ndarray  # float32 (N, K) their blended scores
    vote: np.ndarray  # float32 (N,) the unknown label's blended vote (top-5 CSV members)
    pinned: np.ndarray  # int64 (N, P) leak labels, -1 padded
    new_whale_at: np.ndarray  # int64 (N,) rank position of new_whale, -1: none (the vote's, then the step's)
    swap: np.ndarray  # bool (N,) swap top-1 and top-2
    threshold: float | None = None
    # bool (N,): rows whose unknown-label position a later step set whatever the new_whale threshold
    # (new_whale_groups); the threshold search leaves them where that step put them
    fixed: np.ndarray | None = None
    # () -> (each member's first label (N, M) codes, the members' weights (M,)): for a P(new) model
    member_firsts: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None


@dataclass
class Result:
    images: list[str]
    vocabulary: list[str]
    unknown_code: int
    top5: np.ndarray  # int64 (N, 5) label codes, -1 empty
    top_codes: np.ndarray  # int64 (N, K) blended top-K identities, before the steps
    top_scores: np.ndarray  # float32 (N, K) their blended scores (top_scores[:, 0]: top-1 confidence)
    pinned: np.ndarray  # int64 (N, P) leak labels
    swapped: np.ndarray  # bool (N,)
    threshold: float | None  # the new_whale threshold used (also when set by proportion)
    new_whale_at: np.ndarray | None = None  # int64 (N,) where the unknown label went in the ranking (-1: not)
    vote: np.ndarray | None = None  # float32 (N,) the unknown label's blended vote
    fixed: np.ndarray | None = None  # bool (N,) State.fixed: placed by a step the threshold does not move
    map5_by_step: dict[str, float] = field(default_factory=dict)  # empty without truth
    ap_by_step: dict[str, np.ndarray] = field(default_factory=dict)  # per-image AP@5 after each step
    ap: np.ndarray | None = None  # per-image AP@5 of the final top-5
    truth: np.ndarray | None = None
    blended: np.ndarray | None = None  # float32 (N, C), only with run(..., keep_scores=True)
    recipe: BlendRecipe | None = None  # the recipe run, weights resolved

    @property
    def map5(self) -> float | None:
        return None if self.ap is None else float(self.ap.mean()) if len(self.ap) else 0.0

    @property
    def labels(self) -> list[list[str]]:
        vocab = np.asarray(self.vocabulary + [""], dtype=object)  # -1 -> ""
        return [[lab for lab in row if lab] for row in vocab[self.top5].tolist()]

    @property
    def new_whale_share(self) -> float:
        return float((self.top5[:, 0] == self.unknown_code).mean()) if len(self.top5) else 0.0

    @property
    def new_whale_later_share(self) -> float:
        """Share of images with the unknown label at ranks 2-5 (not first, but still scoring)."""
        return float((self.top5[:, 1:] == self.unknown_code).any(axis=1).mean()) if len(self.top5) else 0.0

    @property
    def n_leaked(self) -> int:
        return int((self.pinned[:, 0] >= 0).sum()) if self.pinned.shape[1] else 0

    @property
    def n_swapped(self) -> int:
        return int(self.swapped.sum())

    def step_gains(self) -> list[tuple[str, float, Gain | None]]:
        """(step, MAP@5 after it, its gain over the step before with the paired bootstrap interval)."""
        names = list(self.ap_by_step)
        gains = paired_gains([(self.ap_by_step[b], self.ap_by_step[a]) for a, b in zip(names, names[1:])])
        return [(n, self.map5_by_step[n], None if k == 0 else gains[k - 1]) for k, n in enumerate(names)]


def _blend_parts(recipe: BlendRecipe, inputs: Inputs, only: Callable[[str, str], bool] | None = None):
    """The members' contributions for blend.blend_top_k: calibration and normalised weight each.
    `only(method, kind)` keeps a subset."""
    kept = []
    for mi, m in zip(inputs.members, recipe.members):
        if mi is None or m.weight <= 0:
            continue
        cal = m.calibration.resolved(mi.auto_method) if mi.scores is not None else None
        if only is None or only(cal.method if cal else "ranked", mi.kind):
            kept.append((mi, m, cal))
    total = sum(m.weight for _, m, _ in kept)
    parts, ranked = [], []
    for mi, m, cal in kept:
        w = m.weight / total
        if cal is None:  # a top-5 CSV member: its votes
            ranked.append((mi.codes, w, m.rank_weights))
            continue
        plugin, (p1, p2) = cal.plugin, cal.plugin.kernel_params(cal.params)
        if inputs.keep_calibrated and plugin.kernel != "none":
            parts.append((mi.calibrated(plugin.kernel, p1, p2), "none", 0.0, 0.0, w, None))
        else:
            parts.append((mi.calibration_input(cal), plugin.kernel, p1, p2, w,
                          mi.row_max() if plugin.kernel == "softmax" else None))
    return parts, ranked


def blend_top(recipe: BlendRecipe, inputs: Inputs, k: int = TOP_K, keep: bool = False,
              only: Callable[[str, str], bool] | None = None):
    """(top-k codes, their blended scores, the N x C blend if `keep`, the unknown label's vote): the
    weighted mean of the calibrated members. `only(method, kind)` keeps a subset (weights
    renormalised over it)."""
    recipe = with_weights(recipe, inputs)
    if inputs.keep_calibrated and not keep and only is None:
        cached = _candidate_blend(recipe, inputs)
        if cached is not None:
            candidates, weights = cached
            codes, values = candidates.top_k(weights, k)
            return codes, values, None, np.zeros(len(inputs.images), np.float32)
    parts, ranked = _blend_parts(recipe, inputs, only)
    return blend.blend_top_k(parts, ranked, len(inputs.images), inputs.n_columns, k, keep)


def _candidate_blend(recipe: BlendRecipe, inputs: Inputs):
    """(blend.Candidates, weights) when every member is a scored one calibrated to values >= 0 (a
    probability or a reciprocal rank), the calibrations kept by the inputs; else None."""
    key, xs, weights = [], [], []
    for i, (mi, m) in enumerate(zip(inputs.members, recipe.members)):
        if mi is None:
            continue
        if mi.scores is None:
            return None  # a top-5 CSV member: its votes go through the full kernel
        cal = m.calibration.resolved(mi.auto_method)
        plugin, (p1, p2) = cal.plugin, cal.plugin.kernel_params(cal.params)
        if not plugin.nonnegative:
            return None  # not bounded below: no candidate bound
        xs.append(mi.calibrated(plugin.kernel, p1, p2) if plugin.kernel != "none" else mi.calibration_input(cal))
        key.append((i, cal))
        weights.append(max(m.weight, 0.0))
    total = sum(weights)
    if not xs or total <= 0:
        return None
    key = tuple(key)
    if key not in inputs._candidates:
        inputs._candidates.clear()  # one set of calibrations at a time: they are large
        inputs._candidates[key] = blend.Candidates(xs)
    return inputs._candidates[key], [w / total for w in weights]


def blend_matrix(recipe: BlendRecipe, inputs: Inputs, only: Callable[[str, str], bool] | None = None) -> np.ndarray:
    """The blended scores (N, C), float32."""
    return blend_top(recipe, inputs, 1, True, only)[2]


def weight_report(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> WeightReport:
    """Automatic weights for the recipe's members from these inputs (kit/post/weights.py): from their
    errors on `rows` (default all) where the inputs have truth, else from how they agree."""
    present = [i for i, mi in enumerate(inputs.members) if mi is not None]
    if len(present) < len(recipe.members):
        missing = recipe.members[next(i for i in range(len(recipe.members)) if i not in present)].name
        raise KitError(f"{recipe.source}: automatic weights need every member on the {inputs.split} images; "
                       f"{missing} has none")
    rows = np.arange(len(inputs.images)) if rows is None else np.asarray(rows)
    tops, firsts = [], []
    for i, m in enumerate(recipe.members):
        top, _, _, vote = blend_top(recipe.only_member(i), inputs, TOP)
        mi = inputs.members[i]
        # a member's first label: its vote's unknown label if it ranked it first, else its top identity
        first = np.where((mi.codes[:, 0] == inputs.n_columns) if mi.codes is not None else np.zeros(len(top), bool),
                         inputs.unknown_code, top[:, 0])
        tops.append(top[rows])
        firsts.append(first[rows])
    # the test truth (a synthetic or local competition's) is for scoring only: weights never read it
    truth = None if inputs.truth is None or inputs.split == "test" else inputs.truth[rows]
    report = auto.auto_weights([m.name for m in recipe.members], tops, np.stack(firsts, axis=1), truth, inputs.unknown_code)
    if recipe.weights == "select":
        if truth is None:
            raise KitError(f"{recipe.source}: weights: select chooses the weights on validation images with truth, "
                           + ("never on the test images" if inputs.split == "test" else f"and the {inputs.split} images have none"))
        chosen = _select(recipe, inputs, rows)
        return dataclasses.replace(report, weights=chosen.weights, choice="selected", picks=chosen.counts)
    if truth is not None:  # keep them only if they do at least as well as the plain vote here
        score = {}
        for name, w in (("aware", report.weights), ("equal", np.full(len(report.weights), 1 / len(report.weights)))):
            resolved = recipe.with_params({f"members.{i}.weight": float(x) for i, x in enumerate(w)})
            score[name] = run(resolved.without_steps(), inputs).ap[rows].mean()
        if score["equal"] > score["aware"]:
            report = auto.equal(report)
    return report


def _select(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray) -> selection.Selection:
    """Ensemble selection (kit/post/selection.py) on `rows`: a weight vector scores the MAP@5 of the
    recipe's steps on a resample of them, its new_whale threshold (or share) fitted there when the
    recipe fits it, as fit_new_whale would (a fitted threshold stands in for a P(new) model, which
    would be refitted for every candidate on every resample)."""
    if fits_probability(recipe):
        recipe = recipe.with_params({"steps.new_whale.fit": "threshold"})
    key = fitted_key(recipe)
    base = unfitted(recipe)
    fit = None if key is None else ranking.best_threshold if key.endswith("threshold") else ranking.best_share
    memo: dict[tuple, Any] = {}  # weights -> the position table (or per-image AP) on every image

    def score(w: np.ndarray, sample: np.ndarray) -> float:
        k = tuple(np.round(w, 9))
        if k not in memo:
            r = base.with_params({f"members.{i}.weight": float(x) for i, x in enumerate(w)})
            memo[k] = run(r, inputs).ap if fit is None else position_table(r, inputs)
        got = memo[k]
        return float(got[rows[sample]].mean()) if fit is None else fit(got.rows(rows[sample]))[1]

    return selection.select(score, len(recipe.members), len(rows))


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


def with_weights(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> BlendRecipe:
    """The recipe itself, or with automatic weights resolved from these inputs (see weight_report)."""
    if not recipe.auto_weights:
        return recipe
    report = weight_report(recipe, inputs, rows)
    return recipe.with_params({f"members.{i}.weight": float(w) for i, w in enumerate(report.weights)})


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
    depend on each other: calibrations, automatic weights, the new_whale threshold."""
    recipe = with_weights(fit_calibrations(recipe, inputs, rows), inputs, rows)
    return fit_new_whale(recipe, inputs, rows)


def fitted_key(recipe: BlendRecipe) -> str | None:
    """The dotted key `steps.new_whale.fit` stands for (its threshold or its proportion), or None
    when the recipe fits nothing."""
    step = recipe.steps.active("new_whale")
    if step is None or step.fit not in ("threshold", "share"):  # none, or a P(new) model (fits_probability)
        return None
    return "steps.new_whale." + ("threshold" if step.fit == "threshold" else "proportion")


def unfitted(recipe: BlendRecipe) -> BlendRecipe:
    """A recipe that fits its new_whale step, with a stand-in value in place of the fit (what
    `position_table` needs: the threshold search tries every value anyway)."""
    key = fitted_key(recipe)
    return recipe if key is None else recipe.with_params({key: 0.5 if key.endswith("threshold") else 0.3})


def fits_probability(recipe: BlendRecipe) -> bool:
    """Whether the recipe fits a P(new) model on validation (`steps.new_whale.fit: probability`)."""
    step = recipe.steps.active("new_whale")
    return step is not None and step.fit == "probability"


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


def _ap_at(data: NewWhaleData, at: np.ndarray, inputs: Inputs) -> np.ndarray:
    """Per-image AP@5 with the unknown label at `at` (the vote's place where earlier; a
    new_whale_groups row where that step put it)."""
    b = data.bare
    at = np.where(b.fixed, b.new_whale_at, new_whale.combine(b.new_whale_at, at))
    return average_precision(assemble(b.top_codes, b.pinned, at, b.swapped, inputs.unknown_code), inputs.truth)


def cross_fitted_ap(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray, part: np.ndarray, n_parts: int) -> np.ndarray:
    """Per-image AP@5 of `rows` (part: each row's part) with the unknown label placed by a P(new)
    model fitted on the other parts only: no image is scored by a model that saw it."""
    d = new_whale_data(recipe, inputs)
    x, is_new, scores, column = d.x[rows], d.is_new[rows], d.bare.top_scores[rows], d.truth_column[rows]
    at = np.zeros(len(inputs.images), np.int64)
    at[rows] = new_whale_model.cross_fit(x, is_new, scores, column, part, n_parts)[0]
    return _ap_at(d, at, inputs)[rows]


def fit_new_whale(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> BlendRecipe:
    """The recipe with `steps.new_whale.fit` resolved: the threshold (or share) that scores best on
    `rows` of these inputs (default: all), found exactly (kit.ranking.best_threshold / best_share),
    or the P(new) model fitted there; the recipe itself when it fits nothing. Like automatic weights:
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
    table = position_table(unfitted(recipe), inputs)
    if rows is not None:
        table = table.rows(np.asarray(rows))
    fit = ranking.best_threshold if key.endswith("threshold") else ranking.best_share
    return recipe.with_params({key: fit(table)[0]})


def rule_ap(recipe: BlendRecipe, inputs: Inputs, part: np.ndarray, n_parts: int) -> tuple[np.ndarray, bool]:
    """(per-image AP@5 of the recipe's new_whale rule, whether it was cross-validated): a fitted
    threshold or share scored on each part by the value fitted on the others; else as it runs."""
    key = fitted_key(recipe)
    if fits_probability(recipe):
        return cross_fitted_ap(recipe, inputs, np.arange(len(inputs.images)), part, n_parts), True
    if key is None:
        return run(recipe, inputs).ap, False
    table = position_table(unfitted(recipe), inputs)
    return ranking.cross_validated(table, part, n_parts, by_share=key.endswith("proportion"))[1], True


def judge(recipe: BlendRecipe, inputs: Inputs) -> baseline.Bars | None:
    """The blend (weights resolved, its fit not yet) against new_whale alone and its best member on
    these inputs (kit/post/baseline.py says how, and what the bars mean); None without truth."""
    if inputs.truth is None or not len(inputs.truth):
        return None
    n_parts = max(1, min(recipe.tune.parts, len(inputs.truth)))
    part = ranking.cv_parts(inputs.truth, inputs.unknown_code, n_parts, recipe.tune.seed)
    blend, cross_validated = rule_ap(recipe, inputs, part, n_parts)
    trivial = (inputs.truth == inputs.unknown_code).astype(float)
    bars = baseline.Bars(blend, trivial, paired_gain(blend, trivial), cross_validated, inputs.labels[inputs.unknown_code])
    present = [i for i, (m, mi) in enumerate(zip(recipe.members, inputs.members)) if mi is not None and m.weight > 0]
    if len(present) > 1:
        alone = {}
        for i in present:
            m = recipe.members[i]
            solo = recipe.only_member(i)
            if m.scored:  # in its own calibration, so that its top-1 score means something
                solo = fit_calibrations(solo.with_params({f"members.{i}.calibration": {"method": "auto"}}), inputs)
            solo = solo.with_params({"steps.new_whale.fit": "threshold", "steps.new_whale.enabled": True})
            alone[m.name] = rule_ap(solo, inputs, part, n_parts)[0]
        bars.best_member = max(alone, key=lambda name: alone[name].mean())
        bars.member = alone[bars.best_member]
        bars.over_member = paired_gain(blend, bars.member)
    return bars


def run(recipe: BlendRecipe, inputs: Inputs, keep_scores: bool = False) -> Result:
    """blend -> leak -> new_whale -> balance -> top-5 on prepared inputs; MAP@5 after each step
    when the split has truth. A few milliseconds at Kaggle validation scale. Automatic weights are
    resolved from these inputs (resolve them once with `with_weights` to carry them to another split)."""
    keys = tuple(member_key(m) for m in recipe.members)
    if keys != inputs.member_keys:
        raise KitError(f"{recipe.source}: the recipe's members differ from those the inputs were prepared for; prepare() again")
    recipe = with_weights(recipe, inputs)
    top, scores, blended, vote = blend_top(recipe, inputs, TOP_K, keep_scores)
    n = len(inputs.images)
    state = State(top, scores, vote, np.empty((n, 0), np.int64), new_whale.vote_positions(scores, vote),
                  np.zeros(n, np.bool_), fixed=np.zeros(n, np.bool_), member_firsts=lambda: member_firsts(recipe, inputs))
    by_step: dict[str, np.ndarray] = {}
    truth = inputs.truth

    def top5() -> np.ndarray:
        return assemble(state.top, state.pinned, state.new_whale_at, state.swap, inputs.unknown_code)

    if truth is not None:
        by_step["blend"] = average_precision(top5(), truth)
    for step in steps_in_order():
        params = recipe.steps.active(step.name)
        if params is None:
            continue
        step.apply(state, params, inputs)
        if truth is not None:
            by_step[f"+ {step.name}"] = average_precision(top5(), truth)
    final = top5()
    return Result(
        images=inputs.images, vocabulary=inputs.labels, unknown_code=inputs.unknown_code, top5=final,
        top_codes=top, top_scores=scores, pinned=state.pinned, swapped=state.swap, threshold=state.threshold,
        new_whale_at=state.new_whale_at, vote=vote, fixed=state.fixed,
        map5_by_step={k: float(v.mean()) if len(v) else 0.0 for k, v in by_step.items()}, ap_by_step=by_step,
        ap=None if truth is None else average_precision(final, truth), truth=truth, blended=blended, recipe=recipe,
    )


def member_firsts(recipe: BlendRecipe, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) each weighted member's first label (a top-5 CSV member's unknown label where it ranked
    it first), and the members' weights (M,); each member's computed once per calibration."""
    firsts, weights = [], []
    for i, (m, mi) in enumerate(zip(recipe.members, inputs.members)):
        if mi is None or m.weight <= 0:
            continue
        key = ("member_first", i, m.calibration.resolved(mi.auto_method) if mi.scores is not None else None)
        if key not in inputs.plugin_cache:
            if mi.scores is None:
                first = np.where(mi.codes[:, 0] == inputs.n_columns, inputs.unknown_code, mi.codes[:, 0])
            else:
                first = blend_top(recipe.only_member(i), inputs, 1)[0][:, 0]
            inputs.plugin_cache[key] = first
        firsts.append(inputs.plugin_cache[key])
        weights.append(m.weight)
    return (np.stack(firsts, axis=1) if firsts else np.empty((len(inputs.images), 0), np.int64)), np.asarray(weights)


def position_table(recipe: BlendRecipe, inputs: Inputs) -> ranking.PositionTable:
    """Everything the recipe does but the new_whale step's threshold, as a table of what any
    threshold would score (kit.ranking.PositionTable); needs truth."""
    if inputs.truth is None:
        raise KitError(f"{recipe.source}: the {inputs.split} images have no truth to choose a threshold on")
    bare = run(recipe.with_params({"steps.new_whale.enabled": False}), inputs)
    last = ranking.POSITIONS - 1
    cap = np.where(bare.new_whale_at < 0, last, np.minimum(bare.new_whale_at, last))
    table = ranking.position_table(bare.top_codes, bare.top_scores, inputs.truth, inputs.unknown_code,
                                   bare.pinned, bare.swapped, cap)
    fixed = np.flatnonzero(bare.fixed)
    if len(fixed):  # placed by new_whale_groups: the same AP at any threshold; the vote's place for shares
        table.ap[fixed] = table.ap[fixed, cap[fixed]][:, None]
        vote = new_whale.vote_positions(bare.top_scores, bare.vote)[fixed]
        table.cap[fixed] = np.where(vote < 0, last, np.minimum(vote, last))
    return table


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
    out = {"images": len(inputs.images), "new_whale_share": result.new_whale_share,
           "threshold": result.threshold, "leaked": result.n_leaked, "swapped": result.n_swapped}
    if result.map5_by_step:
        out["map5_by_step"] = dict(result.map5_by_step)
        out["gain_by_step"] = {step: gain.to_dict() for step, _, gain in result.step_gains() if gain is not None}
        out["map5"] = result.map5
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
    """One member blended alone on validation, without and with the recipe's steps."""

    name: str
    kind: str
    weight: float
    map5_bare: float
    map5_with_steps: float
    ap_bare: np.ndarray  # per-image AP@5 without steps
    reliability: Reliability | None = None  # when its calibration gives probabilities


@dataclass
class Diagnostics:
    """What the report shows beyond blend.py's numbers, computed with the evaluation (the report only renders)."""

    members: list[MemberAlone]
    blend_bare: float  # the blend without steps
    ap_correlation: np.ndarray | None  # the members' per-image AP@5 correlation (blend alone), two or more members
    # MAP@5 and the new_whale-first share at each threshold, everything else as the recipe has it
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
        members.append(MemberAlone(m.name, mi.kind, m.weight, alone_bare.map5,
                                   run(recipe.only_member(i), inputs).map5, alone_bare.ap, curve))
    correlation = None
    if len(members) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = np.nan_to_num(np.corrcoef(np.vstack([a.ap_bare for a in members])), nan=0.0)
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
            maps.append(table.ap_at(t).mean())
            shares.append(np.where(pinned >= 0, pinned == inputs.unknown_code, first).mean())
        curve = (grid, np.array(maps), np.array(shares))
    out = Diagnostics(members, run(bare, inputs).map5, correlation, curve)
    step = recipe.steps.active("new_whale")
    if step is not None and step.model is not None and inputs.truth is not None:
        d = new_whale_data(recipe, inputs)
        n_parts = max(1, min(recipe.tune.parts, len(inputs.truth)))
        part = ranking.cv_parts(inputs.truth, inputs.unknown_code, n_parts, recipe.tune.seed)
        q = new_whale_model.cross_fit(d.x, d.is_new, d.bare.top_scores, d.truth_column, part, n_parts)[1]
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
        basis = dataclasses.replace(test, truth=None)
    report = weight_report(recipe, basis)
    return recipe.with_params({f"members.{i}.weight": float(w) for i, w in enumerate(report.weights)}), report


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
    out.summary = {"recipe": recipe.source, "name": recipe.name}
    if weights is not None:
        out.summary["weights"] = {"basis": weights.basis, **{n: float(w) for n, w in zip(weights.names, weights.weights)}}
    if val is not None:
        out.summary["val"] = _summary(val[1], val[0])
        if fitted is not None:
            value = recipe.steps.new_whale.model if fitted.endswith("model") else recipe.tunable_params()[fitted]
            out.summary["val"]["fitted"] = {"key": fitted, "value": value, "cross_validated_map5": float(bars.blend.mean())}
        if bars is not None:
            out.summary["val"]["bars"] = bars.to_dict()
    out.summary["test"] = _summary(out.test[1], test_inputs)
    out.summary["warnings"] = list(out.warnings)
    return out


