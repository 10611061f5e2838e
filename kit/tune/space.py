"""The search space a blend recipe opens to the tuner, and how a trial's values become a recipe.

Parameters are named by their dotted path in the recipe (`members.0.weight`,
`members.1.calibration.temperature`, `steps.new_whale.threshold`, `steps.leak.max_distance`,
`steps.balance.margin`, `steps.balance.min_count`): the names `BlendRecipe.tunable_params` lists,
so a trial's values apply as they are (`BlendRecipe.with_params`), and the recipe's `tune.free`,
`tune.pin` (glob patterns, e.g. `members.*.weight`) and `tune.ranges` use the same names.

The range of each parameter is its plug-in's (the `tune=Tuning(...)` of a step's or calibration's
field, kit/post/plugins.py); the weights' is WEIGHT_RANGE.

By default the tuner searches the member weights and the new_whale threshold (or share) only
(`recipe.DEFAULT_TUNED`): a few hundred validation images support a handful of numbers, not the
calibrations and step constants of every member. `tune.free` opens more, `tune.pin` closes any.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

from kit.config import Tuning, tuning_of
from kit.errors import KitError
from kit.post.plugins import AUTO_BY_VIEW, STEPS
from kit.post.recipe import DEFAULT_TUNED

WEIGHT_RANGE = Tuning(0.0, 1.0)


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial) -> float | int:
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def every_param(recipe) -> list[Param]:
    """Every tunable value of the recipe's active steps and members, with the ranges above."""
    space = []
    for name, value in recipe.tunable_params().items():
        if name.startswith("steps.") and not recipe.steps.active(name.split(".")[1]):
            continue
        if name.endswith(".weight") and len(recipe.members) == 1:
            continue  # one member: its weight changes nothing
        t = tuning(recipe, name)
        space.append(Param(name, t.low, t.high, t.log, integer=isinstance(value, int) and not isinstance(value, bool)))
    return space


def tuning(recipe, name: str) -> Tuning:
    """The search range of a tunable parameter: its plug-in field's, or the weights'."""
    parts = name.split(".")
    if parts[0] == "steps":
        return tuning_of(STEPS[parts[1]].Params, parts[2])
    if parts[-1] == "weight":
        return WEIGHT_RANGE
    m = recipe.members[int(parts[1])]  # members.<i>.calibration.<key>
    return tuning_of(m.calibration.resolved(AUTO_BY_VIEW[m.view]).plugin.Params, parts[3])


def search_space(recipe) -> list[Param]:
    """The weights and the new_whale threshold, plus what `tune.free` opens, less what `tune.pin`
    closes, with ranges narrowed as the recipe says."""
    cfg, source = recipe.tune, recipe.source
    space = every_param(recipe)
    names = [p.name for p in space]
    for key in ("free", "pin"):
        for pattern in getattr(cfg, key):
            if not fnmatch.filter(names, pattern):
                raise KitError(f"{source}: tune.{key}: {pattern!r} matches no tunable parameter; they are: {', '.join(names)}")
    opened = DEFAULT_TUNED + cfg.free
    space = [p for p in space if any(fnmatch.fnmatch(p.name, pattern) for pattern in opened)]
    names = [p.name for p in space]
    ranges = cfg.range_of
    for name in ranges:
        if name not in names:
            raise KitError(f"{source}: tune.ranges: {name!r} is not searched; searched: {', '.join(names) or 'nothing'} "
                           f"(tune.free opens more)")
    out = []
    for p in space:
        if any(fnmatch.fnmatch(p.name, pattern) for pattern in cfg.pin):
            continue
        if p.name in ranges:
            low, high = ranges[p.name]
            if p.log and low <= 0:
                raise KitError(f"{source}: tune.ranges.{p.name}: searched on a log scale, its low end must be > 0")
            if p.integer:
                low, high = math.ceil(low), math.floor(high)
                if low > high:
                    raise KitError(f"{source}: tune.ranges.{p.name}: {list(ranges[p.name])} holds no whole number")
            for end in (low, high):  # found now, not as a failed trial in the middle of the study
                try:
                    recipe.with_params({p.name: end})
                except KitError as e:
                    raise KitError(f"{source}: tune.ranges.{p.name}: [{low:g}, {high:g}] goes beyond what the recipe "
                                   f"accepts: {str(e).removeprefix(f'{source}: ')}") from None
            p = Param(p.name, low, high, p.log, p.integer)
        out.append(p)
    return out


def to_recipe_values(recipe, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's raw values → recipe values. The blend is a weighted mean, so only the weights'
    ratios matter; when every weight is tuned they are normalised to sum 1 for a readable recipe."""
    out = dict(values)
    weights = {k: v for k, v in values.items() if k.endswith(".weight")}
    if weights and len(weights) == len(recipe.members):
        total = sum(weights.values())
        for k, v in weights.items():
            out[k] = v / total if total > 0 else 1.0 / len(weights)
    return out
