"""What a trial scores (`Objective`): a trial's recipe on the tuning part of the validation images,
its new_whale threshold (or share, or P(new) model) fitted on the other cross-validation parts of
each, so that the score is of images the fit did not see; the held-out part is kept out of the
search to measure what tuning gained."""
from __future__ import annotations

from typing import Any

import numpy as np

from kit import ranking
from kit.errors import KitError
from kit.post import fits, pipeline
from kit.post.compare import Gain, holdout_split, paired_gain
from kit.post.inputs import LEAK_SEARCH_DISTANCE, prepare
from kit.post.recipe import BlendRecipe
from kit.tune.space import Param, to_recipe_values

# fitted inside each trial, never proposed by the sampler: the step's threshold, or its share
FITTED = ("steps.new_whale.threshold", "steps.new_whale.proportion")


class Objective:
    """The cross-validated metric (the recipe's) of a trial's recipe on the tuning part of the validation images."""

    def __init__(self, recipe: BlendRecipe, space: list[Param], holdout: float, seed: int, parts: int | None = None):
        # leak candidates up to the largest distance a trial may ask for (a range may widen it)
        leak = [int(p.high) for p in space if p.name == "steps.leak.max_distance"]
        distance = max([LEAK_SEARCH_DISTANCE, recipe.steps.leak.max_distance] + leak) if leak else None
        self.inputs = prepare(recipe, "val", leak_search_distance=distance)
        self.inputs.keep_calibrated = True  # trials mostly move weights: the members' probabilities are cached
        if self.inputs.truth is None:
            raise KitError(f"{recipe.source}: the validation split has no truth to tune against")
        self.tune_idx, self.hold_idx = holdout_split(self.inputs.truth, self.inputs.unknown_code, holdout, seed)
        # automatic weights come from the tuning part only: the held-out part judges them too
        # what the recipe fits on validation (calibrations, automatic weights, a fitted new_whale threshold):
        # fitted on the tuning part, as the untuned recipe, so that the held-out part judges them too
        self.recipe = fits.resolve(recipe, self.inputs, self.tune_idx)
        # a P(new) model is fitted again for each trial's weights, cross-fitted like the threshold
        self.probability = pipeline.fits_probability(recipe)
        if self.probability:
            self.recipe = self.recipe.with_params({"steps.new_whale.fit": "probability"})
        fitted = [p for p in space if p.name in FITTED]
        self.fit_key = fitted[0].name if fitted and recipe.steps.active("new_whale") is not None else None
        self.by_share = self.fit_key == FITTED[1]  # a proportion step: the fitted threshold's share
        self.bounds = (fitted[0].low, fitted[0].high) if self.fit_key in recipe.tune.range_of else None
        self.space = [p for p in space if p.name not in FITTED]  # what the sampler proposes
        self.n_parts = min(recipe.tune.parts if parts is None else parts, max(len(self.tune_idx), 1))
        self.part = ranking.cv_parts(self.inputs.truth[self.tune_idx], self.inputs.unknown_code, self.n_parts, seed)
        self.scorer = self.inputs.scorer.rows(self.tune_idx)  # the tuning part's: what a trial scores

    @property
    def fit_threshold(self) -> bool:
        return self.fit_key is not None

    @property
    def cross_fits(self) -> bool:
        """Whether each tuning image is scored by a new_whale rule fitted on the other parts."""
        return (self.fit_threshold or self.probability) and self.n_parts > 1

    @property
    def untuned(self) -> BlendRecipe:
        """The untuned recipe with everything it fits fitted on the tuning part."""
        return self.finish({}, None)

    @property
    def note(self) -> str:
        title = self.scorer.title
        if self.probability:
            return (f": {self.n_parts}-fold cross-fitted {title}, the P(new) model fitted on the other parts of each"
                    if self.n_parts > 1 else f": {title} with the P(new) model fitted on them")
        what = "share" if self.by_share else "threshold"
        if self.fit_threshold and self.n_parts > 1:
            return f": {self.n_parts}-fold cross-validated {title}, the new_whale {what} fitted on the other parts of each"
        if self.fit_threshold:
            return f": {title} with the new_whale {what} fitted on them"
        return f": {title}"

    def recipe_for(self, values: dict[str, Any]) -> BlendRecipe:
        return self.recipe.with_params(to_recipe_values(self.recipe, values)) if values else self.recipe

    def start_values(self) -> dict[str, Any]:
        """The untuned recipe's values of the sampled parameters (the study's first trial)."""
        current = self.recipe.tunable_params()
        return {p.name: min(max(current[p.name], p.low), p.high) for p in self.space}

    def _fit(self, recipe: BlendRecipe) -> tuple[ranking.PositionTable, float, float]:
        """(the tuning part's position table, the threshold or share fitted on all of it, its score)."""
        table = pipeline.position_table(recipe, self.inputs).rows(self.tune_idx)
        fit = ranking.best_share if self.by_share else ranking.best_threshold
        return (table, *fit(table, self.bounds, self.scorer))

    def left_out_marks(self, recipe: BlendRecipe) -> np.ndarray:
        """Each tuning image's mark, scored by a threshold (or share) it did not help choose (the
        objective is their metric, `self.scorer`)."""
        if self.probability:
            recipe = recipe.with_params({"steps.new_whale.fit": "probability"})  # a fitted model: fitted again per part
            if self.n_parts == 1:
                return pipeline.run(fits.fit_new_whale(recipe, self.inputs, self.tune_idx), self.inputs).marks[self.tune_idx]
            return fits.cross_fitted_marks(recipe, self.inputs, self.tune_idx, self.part, self.n_parts)
        if not self.fit_threshold:
            return pipeline.run(recipe, self.inputs).marks[self.tune_idx]
        table, value, _ = self._fit(recipe)
        if self.n_parts == 1:
            return table.marks_at(table.threshold_for_share(value) if self.by_share else value)
        return ranking.cross_validated(table, self.part, self.n_parts, self.bounds, self.by_share, self.scorer)[1]

    def evaluate(self, recipe: BlendRecipe) -> tuple[float, float | None]:
        """(objective, the threshold or share fitted on the whole tuning part, or None if not fitted)."""
        if self.probability:
            return self.scorer.score(self.left_out_marks(recipe)), None
        if not self.fit_threshold:
            return self.scorer.score(pipeline.run(recipe, self.inputs).marks[self.tune_idx]), None
        table, value, whole = self._fit(recipe)
        if self.n_parts > 1:
            whole = ranking.cross_validated(table, self.part, self.n_parts, self.bounds, self.by_share, self.scorer)[0]
        return whole, value

    def finish(self, values: dict[str, Any], fitted: float | None) -> BlendRecipe:
        """The recipe of a trial's values, its threshold (or share) fitted on the tuning part."""
        recipe = self.recipe_for(values)
        if self.probability:
            return fits.fit_new_whale(recipe, self.inputs, self.tune_idx)
        return recipe if fitted is None else recipe.with_params({self.fit_key: fitted})

    def scores(self, recipe: BlendRecipe) -> dict[str, float]:
        marks, scorer = pipeline.run(recipe, self.inputs).marks, self.inputs.scorer
        part = lambda idx: scorer.rows(idx).score(marks[idx]) if len(idx) else float("nan")  # noqa: E731
        return {"tune": part(self.tune_idx), "holdout": part(self.hold_idx), "all": scorer.score(marks)}

    def holdout_gain(self, tuned: BlendRecipe, untuned: BlendRecipe) -> Gain:
        a, b = pipeline.run(tuned, self.inputs).marks, pipeline.run(untuned, self.inputs).marks
        return paired_gain(a[self.hold_idx], b[self.hold_idx], self.inputs.scorer.rows(self.hold_idx))

    def __call__(self, trial) -> float:
        values = {p.name: p.suggest(trial) for p in self.space}
        return self.evaluate(self.recipe_for(values))[0]  # the fitted value: found again for the best trial
