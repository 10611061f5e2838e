"""The unknown label by threshold (2019's 3rd place), by share (kit/post/new_whale.py), or by a
calibrated P(new) at the expected-AP@5-optimal place (kit/post/new_whale_model.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kit.config import Interval, Tuning, param
from kit.data.competition import load_competition
from kit.data.folds import ALL_FOLDS, held_unknown_share, read_folds
from kit.errors import KitError
from kit.post import new_whale, new_whale_model
from kit.post.plugins import STEPS, RecipeContext, Step, StepParams
from kit.ranking import insert_positions


@STEPS.register
class NewWhale(Step):
    name = "new_whale"
    order = 20
    help = ("insert the unknown label before the first identity scoring below a threshold, or at a share of "
            "images, or by the threshold (or share) that scores best on validation, or where a P(new) model "
            "fitted on validation puts it; none given: validation's unknown share")
    exclusive = ("threshold", "proportion", "fit", "model")

    @dataclass(frozen=True)
    class Params(StepParams):
        threshold: float | None = param(0.5, tune=Tuning(0.0, 1.0), help="the blended score below which it goes in")
        proportion: float | None = param(None, check=Interval(0, 1), tune=Tuning(0.0, 0.7),
                                         help="the share of images that get it first")
        fit: Literal["threshold", "share", "probability"] | None = param(
            None, help="threshold or share: the one that scores best on the validation images, found exactly "
                       "before the blend runs and used on test (kit.post.pipeline.fit_new_whale); probability: "
                       "a P(new) model fitted there (kit/post/new_whale_model.py), the unknown label where it "
                       "maximises the expected AP@5")
        model: dict[str, float] | None = param(
            None, help="a fitted P(new) model (what fit: probability writes): bias, top1, margin, entropy, "
                       "agreement; id_bias, id_score, id_share, id_rank")

    @classmethod
    def defaults(cls, context: RecipeContext) -> dict[str, Any]:
        # A share means the same for any member set; a threshold of 0.5 does not (its share moved
        # from 0% to 66% between blends).
        return {"threshold": None, "proportion": validation_unknown_share(context)}

    @staticmethod
    def apply(state, params, inputs) -> None:
        if params.fit is not None:  # evaluate() and the tuner fit it first; reaching here unfitted is a bug
            raise KitError(f"steps.new_whale.fit: {params.fit} is fitted on validation before the blend runs "
                           f"(kit.post.pipeline.fit_new_whale), not by the step")
        if params.model is not None:
            missing = [k for k in new_whale_model.KEYS if k not in params.model]
            if missing:
                raise KitError(f"steps.new_whale.model lacks {', '.join(missing)} (it holds {', '.join(new_whale_model.KEYS)}: "
                               f"let fit: probability write it)")
            firsts, weights = state.member_firsts()
            x = new_whale_model.features(state.scores, state.top[:, 0], firsts, weights)
            state.new_whale_at = new_whale.combine(state.new_whale_at,
                                                   new_whale_model.positions(params.model, x, state.scores))
            return
        state.threshold = new_whale.threshold_of(params, state.scores[:, 0], state.new_whale_at == 0)
        state.new_whale_at = new_whale.combine(state.new_whale_at,
                                               insert_positions(state.scores, state.threshold))


def validation_unknown_share(context: RecipeContext) -> float:
    """The unknown label's share among the validation images of the recipe's fold (every fold's for `all`)."""
    folds_csv = Path(context.data) / "folds.csv"
    if context.fold == -1 or not folds_csv.is_file():
        why = "fold is -1" if context.fold == -1 else f"{folds_csv} is missing"
        raise KitError(f"{context.source}: steps.new_whale gives neither threshold nor proportion, so it would take "
                       f"validation's unknown share, but {why}; give one")
    comp = load_competition(context.data, check_images=False)
    folds = read_folds(folds_csv, comp.train)
    held = folds[folds["fold"] >= 0] if context.fold == ALL_FOLDS else folds[folds["fold"] == context.fold]
    if not len(held):
        raise KitError(f"{folds_csv}: fold {context.fold} holds no image; steps.new_whale needs a threshold or a proportion")
    return round(held_unknown_share(folds, held, comp.unknown), 4)  # an identity new to its fold counts as unknown
