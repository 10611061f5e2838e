"""The blend recipe (`blends/<name>.yaml`): validated once at load into frozen dataclasses.

```yaml
name: final                      # submissions/<name>.csv, submissions/<name>.pseudo.csv
metric: map5                     # the competition's metric (kit/metrics): map5 | top1 | animalclef
data: data/small                 # competition dir (train.csv, folds.csv, hashes.csv, ...)
fold: 0                          # the fold the members held out (their `val` prediction sets);
                                 # `all`: out-of-fold members (their `oof` sets: every fold's images)
weights: auto                    # members' weights omitted: auto (sqrt(skill) / near-copies) or select
                                 # (ensemble selection on validation, kit/post/selection.py)
members:
  - model: models/resnet18_tiny  # prediction sets under <model>/preds/<view>/{val,oof,test}
    view: logit                  # logit | cosine
    weight: 1.0                  # omit every weight for `auto` (kit/post/weights.py)
    calibration: {method: softmax, temperature: 1.0}
  - submission: teammate.csv     # a top-5 CSV (test); `val_submission:` its val twin (optional)
    weight: 0.5
    rank_weights: [1, 0.5, 0.333, 0.25, 0.2]   # its vote per rank (the default: MAP@5's credit)
steps:                           # fixed order leak -> new_whale -> balance; omit or `enabled: false`
  leak: {max_distance: 0}
  new_whale: {threshold: 0.5}    # or {proportion: 0.276}; {fit: threshold}: the best on validation;
                                 # {fit: probability}: a P(new) model fitted there (kit/post/new_whale_model.py);
                                 # {} = the unknown share of validation
  balance: {margin: 0.3, min_count: 2}
pseudo: {threshold: 0.96}        # or {precision: 0.9}: the loosest cut that reaches it on validation
output: submissions
tune: {free: [steps.balance.*], pin: [], ranges: {}, holdout: 0.3, parts: 5, seed: 0}
```

Weights: all given, or none (`auto`, or `weights: select`). A top-5 CSV member votes for every
label it lists, the unknown label included (the 2nd place's vote): rank r earns `rank_weights[r]`
times the member's weight (docs/design.md, "The blend").

Steps and calibrations are plug-ins (kit/post/plugins.py): `steps:` takes every registered step,
run in the steps' order; a member's `calibration:` any registered method with its keys, or `auto`
(when omitted): the set's meta, its `activation` for logits, `affine` for cosines, `none` for
probabilities. docs/recipes.md has the table of both, with every key's default and range.

Paths are relative to the current directory (the project root), like the scripts' arguments.
Every unknown key, wrong type or out-of-range value is a KitError naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from kit.config import (Interval, Invalid, OneOf, Rule, build, check_keys, checked, did_you_mean, dump_yaml, edit, hints_of,
                        keys_of, mapping, param, read_yaml, validate_all)
from kit.data.folds import ALL_FOLDS  # `fold: all`: out-of-fold members
from kit.errors import KitError
from kit.io import Outputs, write_text
from kit.metrics import DEFAULT as DEFAULT_METRIC
from kit.metrics import METRICS
from kit.post.plugins import AUTO_BY_VIEW, CALIBRATIONS, STEPS, steps_in_order, tunable_fields

VIEWS = ("logit", "cosine", "knn", "local")  # knn: export --knn K (kit/export/infer.py), cosines like the cosine view;
# local: scripts/match.py's inlier counts (kit/local)
AUTO = "auto"
# How omitted member weights are chosen: sqrt(skill) / near-copies (kit/post/weights.py), or
# ensemble selection on the validation MAP@5 (kit/post/selection.py)
WEIGHT_CHOICES = ("auto", "select")
# What tune.py searches unless the recipe's `tune.free` opens more: the weights and the unknown
# label's threshold (or share). Calibrations, the leak distance and the balance constants have
# sensible defaults and, searched on a few hundred images, mostly fit noise.
DEFAULT_TUNED = ("members.*.weight", "steps.new_whale.*")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TEXT = Rule(lambda v: bool(v.strip()), "a non-empty string")


def _inside(output: str) -> bool:
    """A shared recipe writes where its reader expects: under the folder blend.py runs in, or an absolute path."""
    return bool(output.strip()) and ".." not in Path(output).parts


# ---------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Calibration:
    """A member's calibration: a registered method and the keys the recipe gives (the rest are the
    method's defaults); `auto` resolves per prediction set (`resolved`). Its keys are its method's:
    it parses (`from_config`) and takes edits (`edited`) itself."""

    method: str = AUTO
    values: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_config(cls, raw: Any, source: str, where: str, validate: bool = True) -> "Calibration":
        raw = mapping(raw, source, where)
        method = raw.get("method", AUTO)
        methods = (AUTO, *CALIBRATIONS)
        if method not in methods:
            raise KitError(f"{source}: {where}method is {method!r}{did_you_mean(method, methods)}; "
                           f"expected one of {', '.join(methods)}")
        fields = _calibration_fields(method)
        every_key = {f.name for cal in CALIBRATIONS.values() for f in dataclasses.fields(cal.Params)}
        for key in raw:
            if key != "method" and key in every_key and key not in fields:
                raise KitError(f"{source}: {where}{key} does not apply to method {method}; "
                               f"its keys: {', '.join(('method', *fields))}")
        check_keys(raw, ("method", *fields), source, where)
        values = tuple((key, _calibration_value(fields[key], key, raw[key], source, where))
                       for key in fields if raw.get(key) is not None)
        return cls(method, values)

    def edited(self, parts: list[str], value: Any, source: str, where: str) -> "Calibration":
        """Set the method (its values kept, each checked against the new method) or one value."""
        if parts == ["method"]:
            return Calibration.from_config({"method": value, **dict(self.values)}, source, where)
        fields = _calibration_fields(self.method)
        if len(parts) != 1 or parts[0] not in fields:
            raise KitError(f"{source}: {where + '.'.join(parts)!r}: no key {parts[0]!r} of calibration {self.method}"
                           f"{did_you_mean(parts[0], fields)}")
        values = {**dict(self.values), parts[0]: _calibration_value(fields[parts[0]], parts[0], value, source, where)}
        return Calibration(self.method, tuple((k, values[k]) for k in fields if k in values))  # the method's key order

    def resolved(self, auto_method: str) -> "Calibration":
        """The calibration with `auto` replaced by the prediction set's own method."""
        if self.method != AUTO:
            return self
        keys = {f.name for f in dataclasses.fields(CALIBRATIONS[auto_method].Params)}
        return Calibration(auto_method, tuple((k, v) for k, v in self.values if k in keys))

    @property
    def plugin(self):
        return CALIBRATIONS[self.method]

    @property
    def params(self):
        """The method's parameters, defaults filled in (not for `auto`: resolve it first)."""
        return self.plugin.Params(**dict(self.values))

    def to_dict(self) -> dict:
        return {"method": self.method, **dict(self.values)}


def _calibration_fields(method: str) -> dict[str, type]:
    """key -> the Params class that defines it: the method's, or for `auto` those of every method it
    may stand for (each key checked by the method defining it)."""
    owners = [CALIBRATIONS[method]] if method != AUTO else [CALIBRATIONS[m] for m in AUTO_BY_VIEW.values()]
    return {f.name: owner.Params for owner in owners for f in dataclasses.fields(owner.Params)}


def _calibration_value(params_cls: type, key: str, value: Any, source: str, where: str) -> Any:
    return checked(keys_of(params_cls)[key], hints_of(params_cls)[key], value, source, where + key)


@dataclass(frozen=True)
class Member:
    """A scored member (`model` + `view`) or a top-5 CSV member (`submission`)."""

    model: str | None = param(None, check=TEXT, help="a trained member's folder (its preds/<view>/<split>)")
    view: Literal["logit", "cosine", "knn", "local"] | None = param(None, help="which of its prediction sets")
    weight: float | None = param(None, check=Interval(0, None), help="omit every member's for automatic weights")
    calibration: Calibration = param(default_factory=Calibration)
    submission: str | None = param(None, check=TEXT, help="a top-5 CSV on test")
    val_submission: str | None = param(None, check=TEXT, help="its twin on the validation images")
    rank_weights: tuple[float, ...] | None = param(
        None, check=Rule(lambda v: 1 <= len(v) <= 5 and min(v) >= 0, "a list of 1 to 5 numbers >= 0 (rank 1 first)"),
        help="a CSV member's vote per rank; omitted: 1, 1/2, ..., 1/5 (MAP@5's credit)")

    NULL_IS_DEFAULT: ClassVar[bool] = True  # `weight:` left empty in a hand-written recipe: no weight
    SCORED_KEYS: ClassVar[tuple[str, ...]] = ("model", "view", "weight", "calibration")
    CSV_KEYS: ClassVar[tuple[str, ...]] = ("submission", "val_submission", "weight", "rank_weights")

    def __post_init__(self):
        if self.rank_weights is not None and len(self.rank_weights) < 5:  # the ranks not given vote nothing
            object.__setattr__(self, "rank_weights", tuple(self.rank_weights) + (0.0,) * (5 - len(self.rank_weights)))

    def validate(self) -> None:
        if (self.model is None) == (self.submission is None):
            raise Invalid("give exactly one of `model:` (a trained member) or `submission:` (a top-5 CSV)")
        keys = self.SCORED_KEYS if self.scored else self.CSV_KEYS
        for key in keys_of(Member):
            default = Calibration() if key == "calibration" else None
            if key not in keys and getattr(self, key) != default:
                raise Invalid(f"is not a key of a {'trained' if self.scored else 'top-5 CSV'} member; "
                              f"its keys: {', '.join(keys)}", key)
        if self.scored and self.view is None:
            raise Invalid(f"is missing: which of the member's prediction sets ({', '.join(VIEWS)})", "view")

    @property
    def scored(self) -> bool:
        return self.model is not None

    @property
    def name(self) -> str:
        if self.scored:
            return f"{Path(self.model).name}/{self.view}"
        return Path(self.submission).name

    def preds_dir(self, split: str) -> Path:
        """The prediction set of a split directory name: val, oof or test."""
        return Path(self.model) / "preds" / self.view / split

    def submission_path(self, split: str) -> Path | None:
        path = self.submission if split == "test" else self.val_submission
        return None if path is None else Path(path)

    def to_dict(self) -> dict:
        weight = {} if self.weight is None else {"weight": self.weight}
        if self.scored:
            return {"model": self.model, "view": self.view, **weight, "calibration": self.calibration.to_dict()}
        out: dict[str, Any] = {"submission": self.submission}
        if self.val_submission is not None:
            out["val_submission"] = self.val_submission
        out.update(weight)
        if self.rank_weights is not None:
            out["rank_weights"] = list(self.rank_weights)
        return out


@dataclass(frozen=True)
class Steps:
    """The recipe's steps by name, in the registry's order, each its plug-in's Params; a step the
    recipe omits is absent (off). `steps.leak` reads one (None when omitted). Its keys are the
    registry's: it parses (`from_config`) and takes edits (`edited`) itself."""

    items: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_config(cls, raw: Any, source: str, where: str, validate: bool = True) -> "Steps":
        raw = mapping(raw, source, where)
        order = steps_in_order()
        check_keys(raw, [step.name for step in order], source, where)
        return cls(tuple((step.name, _step(step, raw[step.name], source, where + step.name + ".", validate))
                         for step in order if step.name in raw))

    def children(self):
        """(name, parameters) of each step the recipe has: what `validate_all` walks."""
        return self.items

    def validate(self) -> None:
        for name, params in self.items:  # edits may have set two of a step's exclusive keys
            given = [k for k in STEPS[name].exclusive if getattr(params, k) is not None]
            if len(given) > 1:
                raise Invalid(f"{name}: give one of {', '.join(STEPS[name].exclusive)}, not more ({', '.join(given)})")

    def edited(self, parts: list[str], value: Any, source: str, where: str) -> "Steps":
        """Set a step's key ("new_whale", "threshold"): of its exclusive keys, the others are cleared;
        a key of an omitted step adds that step."""
        name = parts[0]
        if name not in STEPS:
            raise KitError(f"{source}: {where + '.'.join(parts)!r}: no step {name!r}{did_you_mean(name, STEPS)}")
        step = STEPS[name]
        items = dict(self.items)
        if len(parts) == 1:  # the whole step, from its mapping
            items[name] = _step(step, value, source, f"{where}{name}.", validate=False)
            return Steps(tuple((s.name, items[s.name]) for s in steps_in_order() if s.name in items))
        current = self.get(name)
        if current is None:
            current = _step(step, {}, source, f"{where}{name}.", validate=False)
        if parts[1] in step.exclusive and getattr(current, parts[1]) is None:  # another of them given: cleared
            current = dataclasses.replace(current, **{k: None for k in step.exclusive})
        items[name] = edit(current, ".".join(parts[1:]), value, source, f"{where}{name}.")
        return Steps(tuple((s.name, items[s.name]) for s in steps_in_order() if s.name in items))

    def get(self, name: str):
        return dict(self.items).get(name)

    def active(self, name: str):
        """The step's parameters if the recipe runs it, else None."""
        step = self.get(name)
        return step if step is not None and step.enabled else None

    def __getattr__(self, name: str):
        if name in STEPS:
            return self.get(name)
        raise AttributeError(name)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for name, step in self.items:
            d = {k: v for k, v in dataclasses.asdict(step).items() if v is not None and k != "enabled"}
            out[name] = d if step.enabled else {"enabled": False, **d}
        return out


def _step(step, raw: Any, source: str, where: str, validate: bool = True):
    """A step's section -> its Params: types and constraints from the dataclass; of its exclusive
    keys at most one given (the others None). None given is the step's to read (new_whale: the
    unknown share of validation, filled where the data is loaded: kit.post.fits.with_data_defaults)."""
    raw = mapping(raw, source, where)
    given = [k for k in step.exclusive if raw.get(k) is not None]
    if len(given) > 1:
        raise KitError(f"{source}: {where[:-1]}: give one of {', '.join(step.exclusive)}, not more")
    raw = {k: v for k, v in raw.items() if not (k in step.exclusive and v is None)}
    fill = {k: None for k in step.exclusive if k not in given}
    return build(step.Params, raw, source, where, fill=fill, validate=validate)


@dataclass(frozen=True)
class Pseudo:
    """The test images whose top-1 becomes a pseudo-label for the next round: above `threshold`, or
    above the loosest cut whose precision on validation reaches `precision` (the lower end of its
    95% interval; kit/post/pseudo.py, `gate`). Neither given: threshold 0.96."""

    enabled: bool = param(True, help="false: write no pseudo-labels")
    threshold: float | None = param(None, check=Interval(0, 1), help="the confidence above which (default 0.96)")
    precision: float | None = param(None, check=Interval(0, 1, closed="right"),
                                    help="the precision on validation the cut must reach, in place of threshold")

    exclusive: ClassVar[tuple[str, ...]] = ("threshold", "precision")
    NULL_IS_DEFAULT: ClassVar[bool] = True

    def __post_init__(self):
        if self.threshold is None and self.precision is None:
            object.__setattr__(self, "threshold", 0.96)

    def validate(self) -> None:
        if self.threshold is not None and self.precision is not None:
            raise Invalid("give threshold or precision, not both")

    def to_dict(self) -> dict:
        return {**({} if self.enabled else {"enabled": False}),
                **({"precision": self.precision} if self.precision is not None else {"threshold": self.threshold})}


PATTERNS = Rule(lambda v: all(p.strip() for p in v), "a list of dotted parameter names or glob patterns")


@dataclass(frozen=True)
class TuneCfg:
    """What `scripts/tune.py` may change: the weights and the new_whale threshold (DEFAULT_TUNED),
    plus what `free` opens (glob patterns of the dotted paths `tunable_params` lists), less `pin`,
    within `ranges` where given. `holdout` is the share of the validation images kept out of the
    search to measure what tuning gained; `parts` the cross-validation parts of the rest (1: none).
    `accept`: `significant` keeps the untuned values unless the best trial beats them on the tuning
    part with a paired interval above 0; `best` takes the best trial whatever the evidence."""

    free: tuple[str, ...] = param((), check=PATTERNS, help="what the search opens besides the weights and new_whale")
    pin: tuple[str, ...] = param((), check=PATTERNS, help="what it keeps at the recipe's values")
    ranges: dict[str, tuple[float, float]] = param(default_factory=dict, check=Rule(
        lambda b: b[0] < b[1], "[low, high] with low < high"), help="parameter -> [low, high] searched")
    holdout: float = param(0.3, check=Interval(0, 0.9), help="the share of validation kept out of the search")
    parts: int = param(5, check=Interval(1, 20), help="cross-validation parts of the rest (1: none)")
    accept: Literal["significant", "best"] = param("significant", help="when the best trial replaces the recipe's values")
    seed: int = param(0, help="the sampler's and the split's seed")

    NULL_IS_DEFAULT: ClassVar[bool] = True  # `free:` left empty: nothing opened

    @property
    def range_of(self) -> dict[str, tuple[float, float]]:
        return dict(self.ranges)

    def to_dict(self) -> dict:
        return {"free": list(self.free), "pin": list(self.pin), "ranges": {n: list(b) for n, b in self.ranges.items()},
                "holdout": self.holdout, "parts": self.parts, "accept": self.accept, "seed": self.seed}


@dataclass(frozen=True)
class BlendRecipe:
    name: str = param(check=Rule(lambda v: bool(_NAME.match(v)), "a usable file name (letters, digits, _ . - only)"),
                      help="submissions/<name>.csv, submissions/<name>.pseudo.csv")
    data: str = param(check=TEXT, help="the competition folder")
    members: tuple[Member, ...] = param(check=Rule(bool, "a non-empty list of members (model: ... or submission: ...)"))
    fold: int | Literal["all"] = param(0, check=Rule(lambda f: f == ALL_FOLDS or f >= -1, "an integer >= -1 or all"),
                                        help="the fold the members held out; all: out-of-fold members")
    weights: Literal["auto", "select"] = param(
        "auto", help="members' weights omitted: auto (sqrt(skill) / near-copies) or select (ensemble selection)")
    metric: str = param(DEFAULT_METRIC, check=OneOf(lambda: METRICS),
                        help="the competition's metric (kit/metrics): what every fit, trial and table scores")
    steps: Steps = param(default_factory=Steps)
    pseudo: Pseudo = param(default_factory=Pseudo)
    output: str = param("submissions", check=Rule(_inside, "a folder under the one blend.py runs in (no '..'), "
                                                           "or an absolute path"))
    tune: TuneCfg = param(default_factory=TuneCfg)
    source: str = param("<recipe>", key=False)  # the file it came from (messages)

    NULL_IS_DEFAULT: ClassVar[bool] = True  # `fold:`, `output:` left empty: their defaults

    def validate(self) -> None:
        seen: dict[str, int] = {}
        for i, m in enumerate(self.members):
            key = f"{m.model}|{m.view}" if m.scored else f"submission|{m.submission}"
            if key in seen:
                raise Invalid(f"members[{i}] repeats members[{seen[key]}] ({m.name})")
            seen[key] = i
        given = [m.weight is not None for m in self.members]
        if any(given) and not all(given):
            raise Invalid(f"members[{given.index(False)}] has no weight but others do: give every member a weight, "
                          f"or none for automatic weights")
        if all(given) and sum(m.weight for m in self.members) <= 0:
            raise Invalid("members: the weights sum to 0; at least one must be positive")
        if self.weights == "select" and all(given):
            raise Invalid("is select, which chooses the members' weights on validation: omit every member's weight",
                          "weights")

    @property
    def val_split(self) -> str:
        """The members' validation prediction sets: `oof` for out-of-fold members, else `val`."""
        return "oof" if self.fold == ALL_FOLDS else "val"

    @property
    def auto_weights(self) -> bool:
        return self.members[0].weight is None

    @property
    def submission_path(self) -> Path:
        return Path(self.output) / f"{self.name}.csv"

    @property
    def pseudo_path(self) -> Path:
        return Path(self.output) / f"{self.name}.pseudo.csv"

    def to_dict(self) -> dict:
        """The recipe as plain data, in the YAML's shape; `recipe_from_dict` reads it back equal."""
        out: dict[str, Any] = {
            "name": self.name,
            "data": self.data,
            "fold": self.fold,
            "members": [m.to_dict() for m in self.members],
            "steps": self.steps.to_dict(),
            "pseudo": self.pseudo.to_dict(),
            "output": self.output,
        }
        if self.weights != "auto":
            out["weights"] = self.weights
        if self.metric != DEFAULT_METRIC:
            out["metric"] = self.metric
        if self.tune != TuneCfg():
            out["tune"] = self.tune.to_dict()
        return out

    def tunable_params(self) -> dict[str, Any]:
        """The numbers a tuner may set with `with_params`, by dotted path, at their current values:
        member weights, the parameters of each member's calibration (`auto`: those of what it
        stands for on the member's view) and of the steps the recipe has; a plug-in's field is
        tunable when it carries a tuning range (kit/post/plugins.py)."""
        out: dict[str, Any] = {}
        for i, m in enumerate(self.members):
            out[f"members.{i}.weight"] = 1.0 / len(self.members) if m.weight is None else m.weight
            if m.scored:
                cal = m.calibration.resolved(AUTO_BY_VIEW[m.view])
                for key in tunable_fields(cal.plugin.Params):
                    out[f"members.{i}.calibration.{key}"] = getattr(cal.params, key)
        for name, step in self.steps.items:
            for key in tunable_fields(type(step)):
                value = getattr(step, key)
                if isinstance(value, dict):  # one number per group: each tunable
                    out.update({f"steps.{name}.{key}.{k}": v for k, v in value.items()})
                elif value is not None:  # of exclusive keys, the one given
                    out[f"steps.{name}.{key}"] = value
            if name == "new_whale" and all(getattr(step, k) is None for k in STEPS[name].exclusive):
                out[f"steps.{name}.proportion"] = None  # validation's share, filled where the data is loaded
            fit = getattr(step, "fit", None)  # new_whale fitted on validation: the key it fits, at its default
            if fit in ("threshold", "share"):  # (a P(new) model is fitted whole, not searched)
                key = "threshold" if fit == "threshold" else "proportion"
                out[f"steps.{name}.{key}"] = 0.5 if key == "threshold" else 0.3
        return out

    def only_member(self, i: int) -> "BlendRecipe":
        """The recipe with every member's weight 0 but member i's (same inputs, one member)."""
        return self.with_params({f"members.{j}.weight": float(j == i) for j in range(len(self.members))})

    def without_steps(self) -> "BlendRecipe":
        """The recipe with every post-processing step switched off: the blend alone."""
        return self.with_params({f"steps.{name}.enabled": False for name, step in self.steps.items if step.enabled})

    def with_params(self, params: Mapping[str, Any] | None = None, **kw: Any) -> "BlendRecipe":
        """A copy with some values changed, re-validated, addressed by dotted paths.

        `recipe.with_params({"members.0.weight": 0.7, "members.1.calibration.temperature": 2.0,
        "steps.new_whale.proportion": 0.27, "steps.leak.max_distance": 2,
        "steps.balance.margin": 0.2})`; keyword form: `with_params(name="final_tuned")` for
        top-level keys. Setting a new_whale `threshold` drops its `proportion` and vice versa;
        setting a key of an omitted step adds that step.
        """
        recipe = self
        for path, value in {**(params or {}), **kw}.items():
            recipe = edit(recipe, path, value, self.source)
        if recipe.weights != "auto" and all(m.weight is not None for m in recipe.members):
            recipe = dataclasses.replace(recipe, weights="auto")  # every weight given: how to choose them is settled
        return validate_all(recipe, self.source)


# ------------------------------------------------------------------------------- loading, dumping
def load_recipe(path: str | Path) -> BlendRecipe:
    """Read and validate a blend recipe; every problem is one KitError naming file and key."""
    return recipe_from_dict(read_yaml(path, "blend recipe"), str(path))


def dump_recipe(recipe: BlendRecipe, note: list[str] | tuple[str, ...] = ()) -> str:
    """The recipe as YAML text, `note` lines as comments on top; `load_recipe` reads it back equal."""
    return dump_yaml(recipe.to_dict(), note)


def save_recipe(recipe: BlendRecipe, path: str | Path, note: list[str] | tuple[str, ...] = (),
                out: Outputs | None = None) -> Path:
    """Write the recipe atomically (staged in `out` when given: in place when the caller commits)."""
    return write_text(path, dump_recipe(recipe, note), out)


def recipe_from_dict(raw: Any, source: str = "<recipe>") -> BlendRecipe:
    """Validate plain data (a parsed YAML) into a BlendRecipe (kit.config.build: one engine for every recipe)."""
    return build(BlendRecipe, raw, source, fill={"source": source})
