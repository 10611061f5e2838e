"""The post-processing pipeline, pure: prepared inputs in, a result out (blend.py, tune and the report).

    inputs = prepare(recipe, "val")      # kit/post/inputs.py: loads, aligns, checks; heavy, once
    result = run(recipe, inputs)         # blend -> leak -> new_whale -> balance -> top-5; ms
    result.score_by_step                 # the recipe's metric: {"blend": .., "+ leak": .., "+ new_whale": .., ...}
    run(recipe.with_params({"steps.new_whale.threshold": 0.4}), inputs)   # same inputs, new params

Also here, because a run needs them: the blend itself (`blend_top`), the automatic weights it
resolves from its inputs (`weight_report`, `with_weights`), and the position table the threshold
search reads. What is fitted on validation before a run (calibrations, the new_whale threshold or
P(new) model, the bars a blend is judged by) is kit/post/fits.py's; one evaluation of a recipe on
val and test, with the report's diagnostics, kit/post/evaluation.py's; writing the files
kit/post/files.py's (`blend_files`, what scripts/blend.py does).

The state every step edits is small: the blended top-K identities and scores per image
(K = 10), the unknown label's blended vote, the leak's pinned labels, where new_whale is
inserted, and which images swap top-1/2; `kit.ranking.assemble` turns it into the top-5 in one numba pass.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kit import ranking
from kit.errors import KitError
from kit.metric import K as TOP
from kit.post import blend, new_whale, selection
from kit.post import weights as auto
from kit.metrics import Scorer
from kit.post.compare import Gain, paired_gains
from kit.post.inputs import Inputs, member_key
from kit.post.plugins import steps_in_order
from kit.post.recipe import BlendRecipe
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
    # the recipe's metric (inputs.scorer) after each step, and each image's mark there; empty without truth
    score_by_step: dict[str, float] = field(default_factory=dict)
    marks_by_step: dict[str, np.ndarray] = field(default_factory=dict)
    marks: np.ndarray | None = None  # each image's mark for the final top-5 (AP@5 under MAP@5)
    scorer: Scorer | None = None
    truth: np.ndarray | None = None
    blended: np.ndarray | None = None  # float32 (N, C), only with run(..., keep_scores=True)
    recipe: BlendRecipe | None = None  # the recipe run, weights resolved

    @property
    def score(self) -> float | None:
        """The recipe's metric of the final top-5 (None without truth)."""
        return None if self.marks is None else self.scorer.score(self.marks)

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
        """(step, the metric after it, its gain over the step before with the paired bootstrap interval)."""
        names = list(self.marks_by_step)
        gains = paired_gains([(self.marks_by_step[b], self.marks_by_step[a]) for a, b in zip(names, names[1:])],
                             self.scorer)
        return [(n, self.score_by_step[n], None if k == 0 else gains[k - 1]) for k, n in enumerate(names)]


def gain_over(before: Result | None, after: Result | None) -> Gain | None:
    """after - before under the recipe's metric, with its paired interval, over the same images;
    None where either has no truth."""
    if before is None or after is None or before.marks is None or after.marks is None \
            or len(before.marks) != len(after.marks):
        return None
    return paired_gains([(after.marks, before.marks)], before.scorer)[0]


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
            score[name] = inputs.scorer.rows(rows).score(run(resolved.without_steps(), inputs).marks[rows])
        if score["equal"] > score["aware"]:
            report = auto.equal(report)
    return report


def _select(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray) -> selection.Selection:
    """Ensemble selection (kit/post/selection.py) on `rows`: a weight vector scores the metric of the
    recipe's steps on a resample of them, its new_whale threshold (or share) fitted there when the
    recipe fits it, as fit_new_whale would (a fitted threshold stands in for a P(new) model, which
    would be refitted for every candidate on every resample)."""
    if fits_probability(recipe):
        recipe = recipe.with_params({"steps.new_whale.fit": "threshold"})
    key = fitted_key(recipe)
    base = unfitted(recipe)
    fit = None if key is None else ranking.best_threshold if key.endswith("threshold") else ranking.best_share
    memo: dict[tuple, Any] = {}  # weights -> the position table (or marks) on every image

    def score(w: np.ndarray, sample: np.ndarray) -> float:
        k = tuple(np.round(w, 9))
        if k not in memo:
            r = base.with_params({f"members.{i}.weight": float(x) for i, x in enumerate(w)})
            memo[k] = run(r, inputs).marks if fit is None else position_table(r, inputs)
        got, scorer = memo[k], inputs.scorer.rows(rows[sample])
        return scorer.score(got[rows[sample]]) if fit is None else fit(got.rows(rows[sample]), None, scorer)[1]

    return selection.select(score, len(recipe.members), len(rows))


def with_weights(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray | None = None) -> BlendRecipe:
    """The recipe itself, or with automatic weights resolved from these inputs (see weight_report)."""
    if not recipe.auto_weights:
        return recipe
    report = weight_report(recipe, inputs, rows)
    return recipe.with_params({f"members.{i}.weight": float(w) for i, w in enumerate(report.weights)})


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


def run(recipe: BlendRecipe, inputs: Inputs, keep_scores: bool = False) -> Result:
    """blend -> leak -> new_whale -> balance -> top-5 on prepared inputs; the recipe's metric after
    each step when the split has truth (inputs.scorer). A few milliseconds at Kaggle validation scale. Automatic weights are
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

    scorer = inputs.scorer
    if scorer is not None:
        by_step["blend"] = scorer.marks(top5())
    for step in steps_in_order():
        params = recipe.steps.active(step.name)
        if params is None:
            continue
        step.apply(state, params, inputs)
        if scorer is not None:
            by_step[f"+ {step.name}"] = scorer.marks(top5())
    final = top5()
    return Result(
        images=inputs.images, vocabulary=inputs.labels, unknown_code=inputs.unknown_code, top5=final,
        top_codes=top, top_scores=scores, pinned=state.pinned, swapped=state.swap, threshold=state.threshold,
        new_whale_at=state.new_whale_at, vote=vote, fixed=state.fixed,
        score_by_step={k: scorer.score(v) for k, v in by_step.items()}, marks_by_step=by_step,
        marks=None if scorer is None else scorer.marks(final), scorer=scorer, truth=truth, blended=blended, recipe=recipe,
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
    threshold would score under the recipe's metric (kit.ranking.PositionTable); needs truth."""
    if inputs.truth is None:
        raise KitError(f"{recipe.source}: the {inputs.split} images have no truth to choose a threshold on")
    bare = run(recipe.with_params({"steps.new_whale.enabled": False}), inputs)
    last = ranking.POSITIONS - 1
    cap = np.where(bare.new_whale_at < 0, last, np.minimum(bare.new_whale_at, last))
    table = ranking.position_table(bare.top_codes, bare.top_scores, inputs.truth, inputs.unknown_code,
                                   bare.pinned, bare.swapped, cap, inputs.scorer.metric.per_image)
    fixed = np.flatnonzero(bare.fixed)
    if len(fixed):  # placed by new_whale_groups: the same mark at any threshold; the vote's place for shares
        table.marks[fixed] = table.marks[fixed, cap[fixed]][:, None]
        vote = new_whale.vote_positions(bare.top_scores, bare.vote)[fixed]
        table.cap[fixed] = np.where(vote < 0, last, np.minimum(vote, last))
    return table
