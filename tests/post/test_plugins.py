"""A step and a calibration added and removed through the registries alone: the recipe parser, the
tunable parameters, the tuner's search space, the pipeline's order, the ablation and the docs
table all pick them up, and forget them once unregistered."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from kit.config import Interval, Tuning, param
from kit.errors import KitError
from kit.post.files import format_ablation
from kit.post.inputs import prepare
from kit.post.pipeline import run
from kit.post.plugins import CALIBRATIONS, STEPS, Calibration, Step, StepParams, docs_table, steps_in_order
from kit.post.recipe import load_recipe, recipe_from_dict
from kit.tune.space import search_space

CALLS: list[str] = []


class Noop(Step):
    """Does nothing, between new_whale_groups (25) and balance (30); says when it ran."""

    name = "noop"
    order = 27
    help = "nothing (a test's step)"

    @dataclass(frozen=True)
    class Params(StepParams):
        strength: float = param(0.5, check=Interval(0, 1), tune=Tuning(0.0, 1.0), help="unused")

    @staticmethod
    def apply(state, params, inputs) -> None:
        CALLS.append(f"noop {params.strength} after new_whale: {state.threshold is not None}")


class Square(Calibration):
    """scores ** power, clipped at 0: a calibration computed once per member (`transform`)."""

    name = "square"
    help = "max(x, 0) ** power (a test's calibration)"
    nonnegative = True

    @dataclass(frozen=True)
    class Params:
        power: float = param(2.0, check=Interval(0, None, "neither"), tune=Tuning(0.5, 4.0, log=True))

    @staticmethod
    def transform(scores, params):
        return np.maximum(scores, 0).astype(np.float32) ** np.float32(params.power)


@pytest.fixture
def plugins():
    STEPS.register(Noop)
    CALIBRATIONS.register(Square)
    CALLS.clear()
    yield
    STEPS.unregister("noop")
    CALIBRATIONS.unregister("square")


def _with(project, steps: dict, calibration: dict | None = None) -> Path:
    raw = yaml.safe_load(Path(project["recipe"]).read_text())
    raw["steps"] = steps
    if calibration is not None:
        raw["members"][2]["calibration"] = calibration
    path = Path(project["recipe"]).with_name("plugins.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


STEPS_WITH_NOOP = {"leak": {"max_distance": 0}, "new_whale": {"threshold": 0.5}, "noop": {"strength": 0.25},
                   "balance": {}}


def test_a_registered_step_is_parsed_tuned_run_in_order_and_documented(plugins, project):
    recipe = load_recipe(_with(project, STEPS_WITH_NOOP))
    assert [s.name for s in steps_in_order()] == ["leak", "new_whale", "new_whale_groups", "noop", "balance"]
    assert recipe.steps.noop == Noop.Params(strength=0.25)
    assert recipe_from_dict(recipe.to_dict(), recipe.source) == recipe  # dumps and reloads
    assert recipe.tunable_params()["steps.noop.strength"] == 0.25
    space = {p.name: p for p in search_space(recipe.with_params({"tune": {"free": ["steps.noop.*"]}}))}
    assert (space["steps.noop.strength"].low, space["steps.noop.strength"].high) == (0.0, 1.0)
    assert recipe.with_params({"steps.noop.strength": 0.75}).steps.noop.strength == 0.75
    with pytest.raises(KitError, match=r"steps.noop.strength = 2 is out of range; expected a number in \[0, 1\]"):
        recipe.with_params({"steps.noop.strength": 2})

    inputs = prepare(recipe, "val")
    result = run(recipe, inputs)
    assert CALLS == ["noop 0.25 after new_whale: True"]
    assert list(result.score_by_step) == ["blend", "+ leak", "+ new_whale", "+ noop", "+ balance"]
    assert result.score_by_step["+ noop"] == result.score_by_step["+ new_whale"]  # it did nothing
    assert "+ noop" in format_ablation(result, "val")
    without = run(recipe.with_params({"steps.noop.enabled": False}), inputs)
    assert np.array_equal(without.top5, result.top5) and "+ noop" not in without.score_by_step
    assert "| **noop** (27) |" in docs_table() and "| `strength` | 0.5 | in [0, 1] | [0, 1] | unused |" in docs_table()


def test_a_registered_calibration_blends_and_tunes(plugins, project):
    base = load_recipe(_with(project, {}))
    squared = load_recipe(_with(project, {}, {"method": "square", "power": 3.0}))
    assert squared.members[2].calibration.params == Square.Params(power=3.0)
    assert squared.tunable_params()["members.2.calibration.power"] == 3.0
    inputs = prepare(squared, "val")
    blended = run(squared, inputs, keep_scores=True).blended
    # by hand: the other two members as the recipe calibrates them, this one squared, weighted means
    others = run(squared.with_params({"members.2.weight": 0.0}), inputs, keep_scores=True).blended
    cosines = inputs.members[2].scores
    w = [m.weight for m in squared.members]
    expected = (others * (w[0] + w[1]) + w[2] * np.maximum(cosines, 0) ** 3) / sum(w)
    np.testing.assert_allclose(blended, expected, rtol=1e-5, atol=1e-6)
    assert "| **square** |" in docs_table()
    with pytest.raises(KitError, match=r"calibration.power = 0 is out of range"):
        squared.with_params({"members.2.calibration.power": 0})
    assert base.members[2].calibration.method == "affine"


def test_unregistered_they_are_unknown_again(project):
    with pytest.raises(KitError, match=r"unknown key 'steps.noop' \(did you mean 'steps.*'\?\)|unknown key 'steps.noop'"):
        load_recipe(_with(project, STEPS_WITH_NOOP))
    with pytest.raises(KitError, match=r"calibration.method is 'square'; expected one of auto, "):
        load_recipe(_with(project, {}, {"method": "square"}))
    assert "noop" not in docs_table() and "square" not in docs_table()


def test_a_second_plugin_of_one_name_is_refused():
    with pytest.raises(ValueError, match="two steps named 'leak'"):
        STEPS.register(type("Leak2", (Noop,), {"name": "leak"}))


def test_the_docs_table_is_current():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text()
    assert docs_table() in docs, "docs/recipes.md: regenerate the plug-in tables with python -m kit.post.plugins"


def test_a_step_that_costs_is_said():
    """An ablation row whose whole interval lies below 0 says so, in blend.py's table and the report's."""
    from kit.metrics import Scorer, metric
    from kit.post.pipeline import Result
    from kit.report.html import ablation_section

    n = 200
    ap = {"blend": np.ones(n), "+ leak": np.ones(n), "+ balance": np.r_[np.zeros(40), np.ones(n - 40)]}
    result = Result(images=[f"{i}.jpg" for i in range(n)], vocabulary=["a"], unknown_code=0,
                    top5=np.zeros((n, 5), np.int64), top_codes=np.zeros((n, 1), np.int64),
                    top_scores=np.zeros((n, 1), np.float32), pinned=np.empty((n, 0), np.int64),
                    swapped=np.zeros(n, bool), threshold=None, marks_by_step=ap,
                    score_by_step={k: float(v.mean()) for k, v in ap.items()}, marks=ap["+ balance"],
                    scorer=Scorer(metric("map5"), np.zeros(n, np.int64), 0))
    table = format_ablation(result, "val").splitlines()
    assert "COSTS" in next(line for line in table if "+ balance" in line)
    on_test = next(line for line in format_ablation(result, "test", on_test=True).splitlines() if "+ balance" in line)
    assert "COSTS" not in on_test and "not for deciding" in on_test  # the test truth measures, never decides
    assert "within the noise" in next(line for line in table if "+ leak" in line)
    assert "(costs)" in ablation_section({"val": result})
