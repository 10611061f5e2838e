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
    """Cross-validated MAP@5 of a trial's recipe on the tuning part of the validation images."""

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
        if self.probability:
            return (f": {self.n_parts}-fold cross-fitted MAP@5, the P(new) model fitted on the other parts of each"
                    if self.n_parts > 1 else ": MAP@5 with the P(new) model fitted on them")
        what = "share" if self.by_share else "threshold"
        if self.fit_threshold and self.n_parts > 1:
            return f": {self.n_parts}-fold cross-validated MAP@5, the new_whale {what} fitted on the other parts of each"
        if self.fit_threshold:
            return f": MAP@5 with the new_whale {what} fitted on them"
        return ": MAP@5"

    def recipe_for(self, values: dict[str, Any]) -> BlendRecipe:
        return self.recipe.with_params(to_recipe_values(self.recipe, values)) if values else self.recipe

    def start_values(self) -> dict[str, Any]:
        """The untuned recipe's values of the sampled parameters (the study's first trial)."""
        current = self.recipe.tunable_params()
        return {p.name: min(max(current[p.name], p.low), p.high) for p in self.space}

    def _fit(self, recipe: BlendRecipe) -> tuple[ranking.PositionTable, float, float]:
        """(the tuning part's position table, the threshold or share fitted on all of it, its MAP@5)."""
        table = pipeline.position_table(recipe, self.inputs).rows(self.tune_idx)
        fit = ranking.best_share if self.by_share else ranking.best_threshold
        return (table, *fit(table, self.bounds))

    def left_out_ap(self, recipe: BlendRecipe) -> np.ndarray:
        """Per-image AP@5 on the tuning part, each image scored by a threshold (or share) it did not
        help choose (the objective is their mean)."""
        if self.probability:
            recipe = recipe.with_params({"steps.new_whale.fit": "probability"})  # a fitted model: fitted again per part
            if self.n_parts == 1:
                return pipeline.run(fits.fit_new_whale(recipe, self.inputs, self.tune_idx), self.inputs).ap[self.tune_idx]
            return fits.cross_fitted_ap(recipe, self.inputs, self.tune_idx, self.part, self.n_parts)
        if not self.fit_threshold:
            return pipeline.run(recipe, self.inputs).ap[self.tune_idx]
        table, value, _ = self._fit(recipe)
        if self.n_parts == 1:
            return table.ap_at(table.threshold_for_share(value) if self.by_share else value)
        return ranking.cross_validated(table, self.part, self.n_parts, self.bounds, self.by_share)[1]

    def evaluate(self, recipe: BlendRecipe) -> tuple[float, float | None]:
        """(objective, the threshold or share fitted on the whole tuning part, or None if not fitted)."""
        if self.probability:
            ap = self.left_out_ap(recipe)
            return float(ap.mean()) if len(ap) else 0.0, None
        if not self.fit_threshold:
            ap = pipeline.run(recipe, self.inputs).ap
            return float(ap[self.tune_idx].mean()) if len(self.tune_idx) else 0.0, None
        table, value, whole = self._fit(recipe)
        if self.n_parts > 1:
            whole = ranking.cross_validated(table, self.part, self.n_parts, self.bounds, self.by_share)[0]
        return whole, value

    def finish(self, values: dict[str, Any], fitted: float | None) -> BlendRecipe:
        """The recipe of a trial's values, its threshold (or share) fitted on the tuning part."""
        recipe = self.recipe_for(values)
        if self.probability:
            return fits.fit_new_whale(recipe, self.inputs, self.tune_idx)
        return recipe if fitted is None else recipe.with_params({self.fit_key: fitted})

    def scores(self, recipe: BlendRecipe) -> dict[str, float]:
        ap = pipeline.run(recipe, self.inputs).ap
        part = lambda idx: float(ap[idx].mean()) if len(idx) else float("nan")
        return {"tune": part(self.tune_idx), "holdout": part(self.hold_idx), "all": float(ap.mean())}

    def holdout_gain(self, tuned: BlendRecipe, untuned: BlendRecipe) -> Gain:
        a, b = pipeline.run(tuned, self.inputs).ap, pipeline.run(untuned, self.inputs).ap
        return paired_gain(a[self.hold_idx], b[self.hold_idx])

    def __call__(self, trial) -> float:
        values = {p.name: p.suggest(trial) for p in self.space}
        return self.evaluate(self.recipe_for(values))[0]  # the fitted value: found again for the best trial
