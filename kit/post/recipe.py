"""The blend recipe (`blends/<name>.yaml`): validated once at load into frozen dataclasses.

```yaml
name: final                      # submissions/<name>.csv, submissions/<name>.pseudo.csv
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

Weights: all given, or none (`auto`: from how alike the members' errors are, kit/post/weights.py;
with `weights: select` at the top, by ensemble selection on the validation MAP@5, kit/post/selection.py).
A top-5 CSV member votes for every label it lists, the unknown label included (the 2nd place's
vote): rank r earns `rank_weights[r]` times the member's weight. Its vote for the unknown label is
a score like any label's: the unknown label enters each image's ranking where its blended vote
falls among the identities' blended scores (before an identity of equal score: the unknown label is
the commonest one), and the new_whale step can only move it earlier (kit/post/new_whale.py).

Steps and calibrations are plug-ins (kit/post/plugins.py): `steps:` takes every registered step,
run in the steps' order; a member's `calibration:` any registered method with its keys, or `auto`
(when omitted): the set's meta, its `activation` for logits, `affine` for cosines, `none` for
probabilities. docs/recipes.md has the table of both, with every key's default and range.

Paths are relative to the current directory (the project root), like the scripts' arguments.
Every unknown key, wrong type or out-of-range value is a KitError naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kit.config import Section, build, did_you_mean, dump_yaml, read_yaml
from kit.data.folds import ALL_FOLDS  # `fold: all`: out-of-fold members
from kit.errors import KitError
from kit.io import Outputs, write_text
from kit.post.plugins import AUTO_BY_VIEW, CALIBRATIONS, STEPS, RecipeContext, steps_in_order, tunable_fields

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


# ---------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Calibration:
    """A member's calibration: a registered method and the keys the recipe gives (the rest are the
    method's defaults); `auto` resolves per prediction set (`resolved`)."""

    method: str = AUTO
    values: tuple[tuple[str, float], ...] = ()

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


@dataclass(frozen=True)
class Member:
    """A scored member (`model` + `view`) or a top-5 CSV member (`submission`)."""

    weight: float | None = None  # None: auto (every member's, resolved from the inputs)
    model: str | None = None
    view: str | None = None
    calibration: Calibration = field(default_factory=Calibration)
    submission: str | None = None
    val_submission: str | None = None
    rank_weights: tuple[float, ...] | None = None  # a CSV member's vote per rank; None: 1, 1/2, ..., 1/5

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
    recipe omits is absent (off). `steps.leak` reads one (None when omitted)."""

    items: tuple[tuple[str, Any], ...] = ()

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


@dataclass(frozen=True)
class Pseudo:
    enabled: bool = True
    threshold: float = 0.96
    # the loosest confidence cut whose precision on validation reaches this (lower end of its 95%
    # interval), in place of `threshold` (kit/post/pseudo.py, `gate`)
    precision: float | None = None


@dataclass(frozen=True)
class TuneCfg:
    """What `scripts/tune.py` may change: the weights and the new_whale threshold (DEFAULT_TUNED),
    plus what `free` opens (glob patterns of the dotted paths `tunable_params` lists), less `pin`,
    within `ranges` where given. `holdout` is the share of the validation images kept out of the
    search to measure what tuning gained; `parts` the cross-validation parts of the rest (1: none).
    `accept`: `significant` keeps the untuned values unless the best trial beats them on the tuning
    part with a paired interval above 0; `best` takes the best trial whatever the evidence."""

    pin: tuple[str, ...] = ()
    free: tuple[str, ...] = ()
    ranges: tuple[tuple[str, float, float], ...] = ()
    holdout: float = 0.3
    parts: int = 5
    accept: str = "significant"
    seed: int = 0

    @property
    def range_of(self) -> dict[str, tuple[float, float]]:
        return {name: (low, high) for name, low, high in self.ranges}

    def to_dict(self) -> dict:
        return {"free": list(self.free), "pin": list(self.pin), "ranges": {n: [lo, hi] for n, lo, hi in self.ranges},
                "holdout": self.holdout, "parts": self.parts, "accept": self.accept, "seed": self.seed}


@dataclass(frozen=True)
class BlendRecipe:
    name: str
    data: str
    members: tuple[Member, ...]
    fold: int | str = 0  # an int, or ALL_FOLDS for out-of-fold members
    steps: Steps = field(default_factory=Steps)
    pseudo: Pseudo = field(default_factory=Pseudo)
    output: str = "submissions"
    tune: TuneCfg = field(default_factory=TuneCfg)
    weights: str = "auto"  # members' weights omitted: auto (sqrt(skill) / near-copies) or select (ensemble selection)
    source: str = field(default="<recipe>", compare=False)  # the file it came from (messages)

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
        steps: dict[str, Any] = {}
        for name, step in self.steps.items:
            d = {k: v for k, v in dataclasses.asdict(step).items() if v is not None and k != "enabled"}
            steps[name] = d if step.enabled else {"enabled": False, **d}
        out: dict[str, Any] = {
            "name": self.name,
            "data": self.data,
            "fold": self.fold,
            "members": [m.to_dict() for m in self.members],
            "steps": steps,
            "pseudo": {**({} if self.pseudo.enabled else {"enabled": False}),
                       **({"precision": self.pseudo.precision} if self.pseudo.precision is not None
                          else {"threshold": self.pseudo.threshold})},
            "output": self.output,
        }
        if self.weights != "auto":
            out["weights"] = self.weights
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
        d = self.to_dict()
        for path, value in {**(params or {}), **kw}.items():
            _set_path(d, path, value, self.source)
        if all("weight" in m for m in d["members"]):
            d.pop("weights", None)  # every weight given: how to choose them is settled
        return recipe_from_dict(d, self.source)


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
    """Validate plain data (a parsed YAML) into a BlendRecipe."""
    top = Section(raw, "", source)
    top.keys(("name", "data", "fold", "members", "steps", "pseudo", "output", "tune", "weights"),
             required=("name", "data", "members"))
    name = top.string("name")
    if not _NAME.match(name):
        top.fail("name", f"{name!r} is not a usable file name (letters, digits, _ . - only)")
    data = top.string("data")
    if isinstance(top.get("fold"), str) and top.get("fold") != ALL_FOLDS:
        top.fail("fold", f"must be an integer >= -1 or {ALL_FOLDS!r} (out-of-fold members), got {top.get('fold')!r}")
    fold = ALL_FOLDS if top.get("fold") == ALL_FOLDS else top.integer("fold", default=0, low=-1)
    output = top.string("output", default="submissions")
    if ".." in Path(output).parts or not output.strip():  # a shared recipe writes where its reader expects
        top.fail("output", f"{output!r} must be a folder under the one blend.py runs in (no '..'), or an absolute path")

    members_raw = top.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        top.fail("members", "must be a non-empty list of members (model: ... or submission: ...)")
    members = tuple(_member(m, f"members[{i}]", source) for i, m in enumerate(members_raw))
    seen: dict[str, int] = {}
    for i, m in enumerate(members):
        key = f"{m.model}|{m.view}" if m.scored else f"submission|{m.submission}"
        if key in seen:
            raise KitError(f"{source}: members[{i}] repeats members[{seen[key]}] ({m.name})")
        seen[key] = i
    given = [m.weight is not None for m in members]
    if any(given) and not all(given):
        i = given.index(False)
        raise KitError(f"{source}: members[{i}] has no weight but others do: give every member a weight, "
                       f"or none for automatic weights")
    if all(given) and sum(m.weight for m in members) <= 0:
        raise KitError(f"{source}: members: the weights sum to 0; at least one must be positive")
    weights = top.string("weights", default="auto")
    if weights not in WEIGHT_CHOICES:
        top.fail("weights", f"{weights!r} is not one of {', '.join(WEIGHT_CHOICES)}{did_you_mean(weights, WEIGHT_CHOICES)}")
    if weights == "select" and all(given):
        top.fail("weights", "is select, which chooses the members' weights on validation: omit every member's weight")

    steps_sec = top.section("steps")
    order = steps_in_order()
    steps_sec.keys([step.name for step in order])
    context = RecipeContext(source, data, fold)
    steps = Steps(tuple((step.name, _step(step, steps_sec.get(step.name), context))
                        for step in order if steps_sec.has(step.name)))
    pseudo_sec = top.section("pseudo")
    pseudo_sec.keys(("enabled", "threshold", "precision"))
    if pseudo_sec.number("threshold", None) is not None and pseudo_sec.number("precision", None) is not None:
        raise KitError(f"{source}: pseudo: give threshold or precision, not both")
    pseudo = Pseudo(enabled=pseudo_sec.boolean("enabled", True),
                    threshold=pseudo_sec.number("threshold", 0.96, low=0.0, high=1.0),
                    precision=pseudo_sec.number("precision", None, low=0.0, high=1.0, low_open=True))
    return BlendRecipe(name=name, data=data, members=members, fold=fold, steps=steps, pseudo=pseudo, output=output,
                       tune=_tune(top.get("tune"), source), weights=weights, source=source)


def _tune(raw: Any, source: str) -> TuneCfg:
    sec = Section(raw, "tune", source)
    sec.keys(("free", "pin", "ranges", "holdout", "parts", "accept", "seed"))
    patterns = {}
    for key in ("free", "pin"):
        value = sec.get(key, []) or []
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            sec.fail(key, f"must be a list of dotted parameter names or glob patterns, got {value!r}")
        patterns[key] = tuple(value)
    ranges_raw = sec.get("ranges", {}) or {}
    if not isinstance(ranges_raw, dict):
        sec.fail("ranges", f"must map parameter names to [low, high], got {ranges_raw!r}")
    ranges = []
    for name, bounds in ranges_raw.items():
        ok = (isinstance(bounds, list) and len(bounds) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
              and bounds[0] < bounds[1])
        if not ok:
            raise KitError(f"{source}: tune.ranges.{name} must be [low, high] with low < high, got {bounds!r}")
        ranges.append((str(name), float(bounds[0]), float(bounds[1])))
    accept = sec.string("accept", default="significant")
    if accept not in ("significant", "best"):
        sec.fail("accept", f"is {accept!r}; expected significant or best")
    return TuneCfg(pin=patterns["pin"], free=patterns["free"], ranges=tuple(ranges),
                   holdout=sec.number("holdout", 0.3, low=0.0, high=0.9), parts=sec.integer("parts", 5, low=1, high=20),
                   accept=accept, seed=sec.integer("seed", 0))


def _member(raw: Any, where: str, source: str) -> Member:
    sec = Section(raw, where, source)
    if sec.has("model") == sec.has("submission"):
        raise KitError(f"{source}: {where}: give exactly one of `model:` (a trained member) or `submission:` (a top-5 CSV)")
    if sec.has("model"):
        sec.keys(("model", "view", "weight", "calibration"), required=("model", "view"))
        view = sec.string("view")
        if view not in VIEWS:
            sec.fail("view", f"is {view!r}; expected one of {', '.join(VIEWS)}")
        return Member(weight=sec.number("weight", None, low=0.0), model=sec.string("model"), view=view,
                      calibration=_calibration(sec.get("calibration", {}), f"{where}.calibration", source))
    sec.keys(("submission", "val_submission", "weight", "rank_weights"))
    rank_weights = sec.get("rank_weights")
    if rank_weights is not None:
        ok = (isinstance(rank_weights, list) and 1 <= len(rank_weights) <= 5
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                      for v in rank_weights))
        if not ok:
            sec.fail("rank_weights", f"must be a list of 1 to 5 numbers >= 0 (rank 1 first), got {rank_weights!r}")
        rank_weights = tuple(float(v) for v in rank_weights) + (0.0,) * (5 - len(rank_weights))
    return Member(weight=sec.number("weight", None, low=0.0), submission=sec.string("submission"),
                  val_submission=sec.string("val_submission", default=None), rank_weights=rank_weights)


def _calibration(raw: Any, where: str, source: str) -> Calibration:
    sec = Section(raw, where, source)
    method = sec.string("method", default=AUTO)
    methods = (AUTO, *CALIBRATIONS)
    if method not in methods:
        sec.fail("method", f"is {method!r}{did_you_mean(method, methods)}; expected one of {', '.join(methods)}")
    # auto takes the keys of whatever it may stand for; each is checked by the method defining it
    owners = [CALIBRATIONS[method]] if method != AUTO else [CALIBRATIONS[m] for m in AUTO_BY_VIEW.values()]
    fields = {f.name: owner.Params for owner in owners for f in dataclasses.fields(owner.Params)}
    every_key = {f.name for cal in CALIBRATIONS.values() for f in dataclasses.fields(cal.Params)}
    for key in sec.raw:
        if key != "method" and key in every_key and key not in fields:
            sec.fail(key, f"does not apply to method {method}; its keys: {', '.join(('method', *fields))}")
    sec.keys(("method", *fields))
    values = []
    for key, params_cls in fields.items():
        if sec.get(key) is not None:
            checked = build(params_cls, {key: sec.get(key)}, source, f"{where}.")
            values.append((key, getattr(checked, key)))
    return Calibration(method, tuple(values))


def _step(step, raw: Any, context: RecipeContext):
    """A step's section -> its Params: types and constraints from the dataclass; of its exclusive
    keys at most one given (the others off), none given: the step's defaults."""
    where = f"steps.{step.name}"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KitError(f"{context.source}: {where} must be a mapping of keys to values, got {type(raw).__name__} {raw!r}")
    given = [k for k in step.exclusive if raw.get(k) is not None]
    if len(given) > 1:
        raise KitError(f"{context.source}: {where}: give one of {', '.join(step.exclusive)}, not more")
    fill = {k: None for k in step.exclusive if k not in given}
    if step.exclusive and not given:
        fill.update(step.defaults(context))
    raw = {k: v for k, v in raw.items() if not (k in step.exclusive and v is None)}
    return build(step.Params, raw, context.source, where + ".", fill=fill)


def _set_path(d: dict, path: str, value: Any, source: str) -> None:
    parts = path.split(".")
    node: Any = d
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise KitError(f"{source}: with_params: {path!r}: no list item {part!r} (there are {len(node)})") from None
        elif isinstance(node, dict):
            if part not in node:
                prefix = ".".join(parts[:i + 1])
                creatable = prefix in ("steps", "pseudo") or prefix in {f"steps.{name}" for name in STEPS} or (
                    part == "calibration" and parts[0] == "members")
                if not creatable:
                    raise KitError(f"{source}: with_params: {path!r}: no key {part!r}{did_you_mean(part, node)}")
                node[part] = {}
            node = node[part]
        else:
            raise KitError(f"{source}: with_params: {path!r}: {'.'.join(parts[:i])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        raise KitError(f"{source}: with_params: {path!r} names a list item, not a key")
    if len(parts) == 3 and parts[0] == "steps" and parts[1] in STEPS and last in STEPS[parts[1]].exclusive:
        for other in STEPS[parts[1]].exclusive:  # setting one of a step's exclusive keys clears the others
            node.pop(other, None)
    if len(parts) == 2 and parts[0] == "pseudo" and last in ("threshold", "precision"):
        node.pop("precision" if last == "threshold" else "threshold", None)  # a cut, or a precision to measure it by
    node[last] = value
