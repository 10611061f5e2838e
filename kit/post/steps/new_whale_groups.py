"""The unknown label per group (Happywhale 2022's 4th and 6th places: a threshold per species, +0.005).

Species differ in how often an animal is new and in how confident a model is about them, so one
threshold is too high for some and too low for others. An image's group is the group of its blended
top-1 identity (a `group` column of train.csv: each identity belongs to one species), the same rule
on validation and test, so no truth is read. For the images of each group named in `thresholds`
(or `shares`), the unknown label goes in before the first identity scoring below that group's
threshold (or at the threshold that puts it first in that share of the group's images); images of
other groups keep what the new_whale step decided. The vote of top-5 CSV members still places it
no later than its own position.

    steps:
      new_whale: {}                                                 # the rest: validation's share
      new_whale_groups: {by: species, thresholds: {beluga: 0.35, humpback_whale: 0.6}}
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.config import Interval, Invalid, Tuning, param
from kit.errors import KitError
from kit.post import new_whale
from kit.post.plugins import STEPS, Step, StepParams
from kit.ranking import insert_positions, threshold_for_proportion


@STEPS.register
class NewWhaleGroups(Step):
    name = "new_whale_groups"
    order = 25  # after new_whale: it overrides the placement for the groups it names
    help = ("a new_whale threshold (or share) per group of identities, e.g. per species; an image's group "
            "is its top-1 identity's")
    exclusive = ("thresholds", "shares")

    @dataclass(frozen=True)
    class Params(StepParams):
        by: str = param("species", help="the train.csv column that groups the identities (the loader keeps `species`)")
        thresholds: dict[str, float] | None = param(None, tune=Tuning(0.0, 1.0),
                                                    help="group -> the blended score below which it goes in")
        shares: dict[str, float] | None = param(None, check=Interval(0, 1), tune=Tuning(0.0, 0.9),
                                                help="group -> the share of the group's images that get it first")

        def validate(self) -> None:
            if self.thresholds is None and self.shares is None:
                raise Invalid("needs thresholds or shares (group -> value)")

    @staticmethod
    def apply(state, params, inputs) -> None:
        group_of_code, names = _groups(inputs, params.by)
        rules = params.thresholds if params.thresholds is not None else params.shares
        unknown = sorted(set(rules) - set(names))
        if unknown:
            raise KitError(f"steps.new_whale_groups: group {unknown[0]!r} is no {params.by} of "
                           f"{inputs.competition.root / 'train.csv'} (its groups: {', '.join(names)})")
        group = group_of_code[state.top[:, 0]]  # each image: its top-1 identity's group (-1: none)
        vote_at = new_whale.vote_positions(state.scores, state.vote)
        at = state.new_whale_at.copy()
        for name, value in rules.items():
            rows = group == names.index(name)
            if not rows.any():
                continue
            scores, votes = state.scores[rows], vote_at[rows]
            if params.thresholds is None:  # the share counts the images the vote already put first
                first = votes == 0
                value = threshold_for_proportion(scores[~first, 0], value, int(first.sum()))
            at[rows] = new_whale.combine(votes, insert_positions(scores, value))
            state.fixed[rows] = True  # the new_whale threshold no longer moves these (the threshold search knows)
        state.new_whale_at = at


def _groups(inputs, column: str) -> tuple[np.ndarray, list[str]]:
    """(group index per label code, -1 for none; the group names), from train.csv's `column`; once per inputs."""
    key = ("new_whale_groups", column)
    if key not in inputs.plugin_cache:
        train = inputs.competition.train
        if column not in train.columns:
            raise KitError(f"steps.new_whale_groups: {inputs.competition.root / 'train.csv'} has no {column!r} column "
                           f"to group the identities by")
        by_label = dict(zip(train["label"], train[column].astype(str)))
        names = sorted(set(by_label.values()))
        index = {n: i for i, n in enumerate(names)}
        codes = np.array([index.get(by_label.get(label), -1) if c != inputs.unknown_code else -1
                          for c, label in enumerate(inputs.labels)] + [-1], np.int64)  # the last: an empty slot (-1)
        inputs.plugin_cache[key] = (codes, names)
    return inputs.plugin_cache[key]
