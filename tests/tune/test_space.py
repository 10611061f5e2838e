"""The search space a recipe opens: its names, kinds and ranges; weights and threshold by default, free,
pins and narrowed ranges; bad names."""
import pytest

from kit.errors import KitError
from kit.post.recipe import recipe_from_dict
from kit.tune.space import Param, every_param, search_space, to_recipe_values

MEMBERS = [
    {"model": "models/a", "view": "logit", "weight": 1.0, "calibration": {"method": "softmax", "temperature": 1.0}},
    {"model": "models/b", "view": "logit", "weight": 0.5},
    {"model": "models/c", "view": "cosine", "weight": 0.5, "calibration": {"method": "affine", "scale": 8.0, "shift": -2.0}},
]
STEPS = {"leak": {"max_distance": 1}, "new_whale": {"threshold": 0.5}, "balance": {"margin": 0.3, "min_count": 2}}
EVERYTHING = [
    "members.0.weight", "members.0.calibration.temperature",
    "members.1.weight", "members.1.calibration.temperature",
    "members.2.weight", "members.2.calibration.scale", "members.2.calibration.shift",
    "steps.leak.max_distance", "steps.new_whale.threshold", "steps.balance.margin", "steps.balance.min_count",
]
DEFAULT = ["members.0.weight", "members.1.weight", "members.2.weight", "steps.new_whale.threshold"]


def recipe(members=MEMBERS, steps=STEPS, **tune):
    raw = {"name": "final", "data": "data/small", "members": members, "steps": steps}
    if tune:
        raw["tune"] = tune
    return recipe_from_dict(raw, "blends/final.yaml")


def by_name(space):
    return {p.name: p for p in space}


def test_every_param_is_every_tunable_value():
    r = recipe()
    space = by_name(every_param(r))
    assert list(space) == EVERYTHING == list(r.tunable_params())
    assert space["members.0.weight"] == Param("members.0.weight", 0.0, 1.0)
    assert space["members.0.calibration.temperature"] == Param("members.0.calibration.temperature", 0.05, 20.0, log=True)
    assert space["members.2.calibration.scale"].log and not space["members.2.calibration.shift"].log
    assert space["steps.leak.max_distance"] == Param("steps.leak.max_distance", 0, 8, integer=True)
    assert space["steps.balance.min_count"].integer and not space["steps.balance.margin"].integer
    # no free, no pin, no range: the tuner searches the weights and the threshold
    assert [p.name for p in search_space(r)] == DEFAULT
    # free opens the rest, by glob
    assert search_space(recipe(free=["*"])) == every_param(r)
    assert [p.name for p in search_space(recipe(free=["steps.balance.*"]))] == DEFAULT + ["steps.balance.margin", "steps.balance.min_count"]


def test_space_follows_the_recipe():
    # one member: its weight changes nothing
    one = by_name(every_param(recipe(members=MEMBERS[:1])))
    assert "members.0.weight" not in one and "members.0.calibration.temperature" in one
    # a disabled or omitted step opens nothing; a proportion is tuned instead of a threshold
    steps = {"leak": {"enabled": False, "max_distance": 1}, "new_whale": {"proportion": 0.3}}
    names = by_name(every_param(recipe(steps=steps)))
    assert not any(n.startswith(("steps.leak", "steps.balance")) for n in names)
    assert names["steps.new_whale.proportion"] == Param("steps.new_whale.proportion", 0.0, 0.7)  # the step's tuning range
    assert "steps.new_whale.threshold" not in names


def test_pins_and_ranges():
    r = recipe(free=["*"], pin=["members.*.weight", "steps.leak.max_distance"],
               ranges={"steps.new_whale.threshold": [0.3, 0.6], "members.0.calibration.temperature": [0.5, 2.0],
                       "steps.balance.min_count": [2, 4]})
    space = by_name(search_space(r))
    assert list(space) == [n for n in EVERYTHING if not n.endswith(".weight") and n != "steps.leak.max_distance"]
    assert space["steps.new_whale.threshold"] == Param("steps.new_whale.threshold", 0.3, 0.6)
    assert space["members.0.calibration.temperature"] == Param("members.0.calibration.temperature", 0.5, 2.0, log=True)
    assert space["steps.balance.min_count"] == Param("steps.balance.min_count", 2, 4, integer=True)
    assert space["steps.balance.margin"] == Param("steps.balance.margin", 0.0, 1.0)  # untouched
    # pins are glob patterns over the dotted names
    assert set(by_name(search_space(recipe(free=["*"], pin=["members.*"])))) == {n for n in EVERYTHING if n.startswith("steps.")}
    assert search_space(recipe(pin=["*"])) == []
    assert [p.name for p in search_space(recipe(pin=["members.*"]))] == ["steps.new_whale.threshold"]


@pytest.mark.parametrize("tune, message", [
    ({"pin": ["members.*.wieght"]}, r"tune.pin: 'members.\*.wieght' matches no tunable parameter; they are: members.0.weight"),
    ({"pin": ["steps.leak.distance"]}, r"tune.pin: 'steps.leak.distance' matches no"),
    ({"free": ["steps.balance.marign"]}, r"tune.free: 'steps.balance.marign' matches no"),
    ({"ranges": {"steps.new_whale.treshold": [0.1, 0.2]}}, r"tune.ranges: 'steps.new_whale.treshold' is not searched"),
    ({"ranges": {"members.3.weight": [0.1, 0.2]}}, r"tune.ranges: 'members.3.weight' is not searched"),
    ({"ranges": {"steps.balance.margin": [0.1, 0.2]}}, r"tune.ranges: 'steps.balance.margin' is not searched; .*\(tune.free opens more\)"),
    ({"ranges": {"members.0.calibration.temperature": [0.0, 2.0]}},
     r"tune.ranges.members.0.calibration.temperature: searched on a log scale, its low end must be > 0"),
    ({"ranges": {"steps.new_whale.threshold": [0.6, 0.3]}}, r"tune.ranges.steps.new_whale.threshold = \[0.6, 0.3\] is not allowed; expected \[low, high\] with low < high"),
    ({"pinn": ["members.*.weight"]}, r"unknown key 'tune.pinn' \(did you mean 'pin'\?\)"),
])
def test_bad_pins_and_ranges_name_the_key(tune, message):
    if "ranges" in tune and "calibration" in str(tune):
        tune = {"free": ["*"], **tune}
    with pytest.raises(KitError, match=r"^blends/final.yaml: " + message):
        search_space(recipe(**tune))


@pytest.mark.parametrize("name, bounds, message", [
    ("members.0.weight", [-1, 1], r"members.0.weight = -1.0 is out of range; expected a number >= 0"),
    ("steps.balance.min_count", [0, 3], r"steps.balance.min_count = 0 is out of range; expected an integer >= 1"),
    ("steps.balance.margin", [-0.5, 0.5], r"steps.balance.margin = -0.5 is out of range; expected a number >= 0"),
])
def test_a_range_the_recipe_cannot_take_is_refused_up_front(name, bounds, message):
    """Found before the study starts, naming the range, not as a failed trial mid-study."""
    with pytest.raises(KitError, match=rf"^blends/final.yaml: tune.ranges.{name}: \[.*\] .*{message}"):
        search_space(recipe(free=["*"], ranges={name: bounds}))


def test_an_integer_range_keeps_its_whole_numbers():
    space = by_name(search_space(recipe(free=["*"], ranges={"steps.balance.min_count": [1.5, 4.5], "steps.leak.max_distance": [0, 12]})))
    assert space["steps.balance.min_count"] == Param("steps.balance.min_count", 2, 4, integer=True)
    assert space["steps.leak.max_distance"] == Param("steps.leak.max_distance", 0, 12, integer=True)  # wider is allowed
    with pytest.raises(KitError, match=r"tune.ranges.steps.balance.min_count: \[2.2, 2.8\] holds no whole number"):
        search_space(recipe(free=["*"], ranges={"steps.balance.min_count": [2.2, 2.8]}))


def test_trial_values_to_recipe_values():
    r = recipe()
    # every weight tuned: only their ratios matter, written normalised
    got = to_recipe_values(r, {"members.0.weight": 0.2, "members.1.weight": 0.6, "members.2.weight": 0.2, "steps.balance.margin": 0.4})
    assert got == pytest.approx({"members.0.weight": 0.2, "members.1.weight": 0.6, "members.2.weight": 0.2, "steps.balance.margin": 0.4})
    got = to_recipe_values(r, {"members.0.weight": 1.0, "members.1.weight": 0.5, "members.2.weight": 0.5})
    assert got == pytest.approx({"members.0.weight": 0.5, "members.1.weight": 0.25, "members.2.weight": 0.25})
    assert to_recipe_values(r, {f"members.{i}.weight": 0.0 for i in range(3)}) == pytest.approx(
        {f"members.{i}.weight": 1 / 3 for i in range(3)})
    # some weights pinned: the tuned ones are left as they are (the pinned ones set the scale)
    assert to_recipe_values(r, {"members.0.weight": 0.7}) == {"members.0.weight": 0.7}
