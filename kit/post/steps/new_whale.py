"""The unknown label by threshold (2019's 3rd place), by share (kit/post/new_whale.py), or by a
calibrated P(new) at the expected-AP@5-optimal place (kit/post/new_whale_model.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from kit.config import Interval, Tuning, param
from kit.errors import KitError
from kit.post import new_whale, new_whale_model
from kit.post.plugins import STEPS, Step, StepParams
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
                       "before the blend runs and used on test (kit.post.fits.fit_new_whale); probability: "
                       "a P(new) model fitted there (kit/post/new_whale_model.py), the unknown label where it "
                       "maximises the expected AP@5")
        model: dict[str, float] | None = param(
            None, help="a fitted P(new) model (what fit: probability writes): bias, top1, margin, entropy, "
                       "agreement; id_bias, id_score, id_share, id_rank")

    @classmethod
    def data_defaults(cls, params, val_inputs) -> dict[str, Any]:
        # None given: validation's unknown share. A share means the same for any member set; a
        # threshold of 0.5 does not (its share moved from 0% to 66% between blends).
        if any(getattr(params, key) is not None for key in cls.exclusive):
            return {}
        if val_inputs is None or val_inputs.truth is None:
            raise KitError("steps.new_whale gives neither threshold nor proportion, so it would take validation's "
                           "unknown share, but there is no validation split; give one")
        return {"proportion": validation_unknown_share(val_inputs)}

    @staticmethod
    def apply(state, params, inputs) -> None:
        if all(getattr(params, key) is None for key in NewWhale.exclusive):  # a bug: callers fill it first
            raise KitError("steps.new_whale: validation's unknown share is filled where the data is loaded "
                           "(kit.post.fits.with_data_defaults), not by the step")
        if params.fit is not None:  # evaluate() and the tuner fit it first; reaching here unfitted is a bug
            raise KitError(f"steps.new_whale.fit: {params.fit} is fitted on validation before the blend runs "
                           f"(kit.post.fits.fit_new_whale), not by the step")
        if params.model is not None:
            missing = [k for k in new_whale_model.KEYS if k not in params.model]
            if missing:
                raise KitError(f"steps.new_whale.model lacks {', '.join(missing)} (it holds {', '.join(new_whale_model.KEYS)}: "
                               f"let fit: probability write it)")
            firsts, weights = state.member_firsts()
            x = new_whale_model.features(state.scores, state.top[:, 0], firsts, weights)
            state.new_whale_at = new_whale.combine(state.new_whale_at,
                                                   new_whale_model.positions(params.model, x, state.scores,
                                                                             inputs.metric.credit))
            return
        state.threshold = new_whale.threshold_of(params, state.scores[:, 0], state.new_whale_at == 0)
        state.new_whale_at = new_whale.combine(state.new_whale_at,
                                               insert_positions(state.scores, state.threshold))


def validation_unknown_share(val_inputs) -> float:
    """The unknown label's share among the validation images (those of the recipe's fold, every
    fold's for `all`); an identity new to its fold counts as unknown (kit.data.folds.fold_truth)."""
    return round(float(np.mean(val_inputs.truth == val_inputs.unknown_code)), 4)
