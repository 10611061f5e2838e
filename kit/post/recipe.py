"""The blend recipe (`blends/<name>.yaml`): validated once at load into frozen dataclasses.

```yaml
name: final                      # submissions/<name>.csv, submissions/<name>.pseudo.csv
data: data/small                 # competition dir (train.csv, folds.csv, hashes.csv, ...)
fold: 0                          # the fold the members held out (their `val` prediction sets);
                                 # `all`: out-of-fold members (their `oof` sets: every fold's images)
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
  new_whale: {threshold: 0.5}    # or {proportion: 0.276}; {} = the unknown share of validation
  balance: {margin: 0.3, min_count: 2}
pseudo: {threshold: 0.96}
output: submissions
tune: {free: [steps.balance.*], pin: [], ranges: {}, holdout: 0.3, parts: 5, seed: 0}
```

Weights: all given, or none (`auto`: from how alike the members' errors are, kit/post/weights.py).
A top-5 CSV member votes for every label it lists, the unknown label included (the 2nd place's
vote): rank r earns `rank_weights[r]` times the member's weight. Its vote for the unknown label is
a score like any label's: the unknown label enters each image's ranking where its blended vote
falls among the identities' blended scores (before an identity of equal score: the unknown label is
the commonest one), and the new_whale step can only move it earlier (kit/post/new_whale.py).

Calibration methods (per member; `auto` when omitted): `softmax` / `sigmoid` of logits / T
(`temperature`), `affine` = sigmoid(scale * x + shift) (Platt scaling, meant for cosines;
defaults scale 10, shift -5: cos 0.5 -> 0.5, 0.8 -> 0.95), `rank` = 1 / (1 + rank) within the
image's row (rank 0 = best; the weights a submission member's labels get), `none` = the scores
as they are (`prob` sets). `auto` = the set's meta: its `activation` for logits, `affine` for
cosines, `none` for probabilities.

Paths are relative to the current directory (the project root), like the scripts' arguments.
Every unknown key, wrong type or out-of-range value is a KitError naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from kit.errors import KitError
from kit.io import Outputs, read_yaml, write_text

VIEWS = ("logit", "cosine")
METHODS = ("auto", "softmax", "sigmoid", "affine", "rank", "none")
# the calibration keys each method reads (auto: whichever the resolved method uses)
METHOD_PARAMS = {
    "auto": ("temperature", "scale", "shift"),
    "softmax": ("temperature",),
    "sigmoid": ("temperature",),
    "affine": ("scale", "shift"),
    "rank": (),
    "none": (),
}
DEFAULT_TEMPERATURE = 1.0
DEFAULT_SCALE = 10.0
DEFAULT_SHIFT = -5.0
STEP_ORDER = ("leak", "new_whale", "balance")
ALL_FOLDS = "all"  # `fold: all`: out-of-fold members
# What tune.py searches unless the recipe's `tune.free` opens more: the weights and the unknown
# label's threshold (or share). Calibrations, the leak distance and the balance constants have
# sensible defaults and, searched on a few hundred images, mostly fit noise.
DEFAULT_TUNED = ("members.*.weight", "steps.new_whale.*")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Calibration:
    method: str = "auto"
    temperature: float | None = None  # None: the default (1.0)
    scale: float | None = None  # None: DEFAULT_SCALE
    shift: float | None = None  # None: DEFAULT_SHIFT

    def resolved(self, auto_method: str) -> "Calibration":
        """The calibration with `auto` replaced by the prediction set's own method."""
        return dataclasses.replace(self, method=auto_method) if self.method == "auto" else self

    @property
    def t(self) -> float:
        return DEFAULT_TEMPERATURE if self.temperature is None else self.temperature

    @property
    def a(self) -> float:
        return DEFAULT_SCALE if self.scale is None else self.scale

    @property
    def b(self) -> float:
        return DEFAULT_SHIFT if self.shift is None else self.shift

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"method": self.method}
        for key in METHOD_PARAMS[self.method]:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


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
class LeakStep:
    enabled: bool = True
    max_distance: int = 0  # Hamming distance between 64-bit phashes; 0 = identical hashes


@dataclass(frozen=True)
class NewWhaleStep:
    enabled: bool = True
    threshold: float | None = 0.5  # exactly one of threshold / proportion
    proportion: float | None = None


@dataclass(frozen=True)
class BalanceStep:
    enabled: bool = True
    margin: float = 0.3
    min_count: int = 2


@dataclass(frozen=True)
class Steps:
    leak: LeakStep | None = None  # None: omitted from the recipe (off)
    new_whale: NewWhaleStep | None = None
    balance: BalanceStep | None = None

    def active(self, name: str):
        """The step's parameters if the recipe runs it, else None."""
        step = getattr(self, name)
        return step if step is not None and step.enabled else None


@dataclass(frozen=True)
class Pseudo:
    enabled: bool = True
    threshold: float = 0.96


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
        for name in STEP_ORDER:
            step = getattr(self.steps, name)
            if step is None:
                continue
            d = {k: v for k, v in dataclasses.asdict(step).items() if v is not None and k != "enabled"}
            if not step.enabled:
                d = {"enabled": False, **d}
            steps[name] = d
        out: dict[str, Any] = {
            "name": self.name,
            "data": self.data,
            "fold": self.fold,
            "members": [m.to_dict() for m in self.members],
            "steps": steps,
            "pseudo": ({"threshold": self.pseudo.threshold} if self.pseudo.enabled
                       else {"enabled": False, "threshold": self.pseudo.threshold}),
            "output": self.output,
        }
        if self.tune != TuneCfg():
            out["tune"] = self.tune.to_dict()
        return out

    def tunable_params(self) -> dict[str, Any]:
        """The numbers a tuner may set with `with_params`, by dotted path, at their current values:
        member weights, calibration parameters (temperature for softmax/sigmoid/auto, scale and
        shift for affine), and the parameters of the steps the recipe has."""
        out: dict[str, Any] = {}
        for i, m in enumerate(self.members):
            out[f"members.{i}.weight"] = 1.0 / len(self.members) if m.weight is None else m.weight
            if m.scored:
                cal = m.calibration
                # `auto` means softmax/sigmoid for a logit view and affine for a cosine view
                affine = cal.method == "affine" or (cal.method == "auto" and m.view == "cosine")
                if cal.method in ("softmax", "sigmoid", "auto") and not affine:
                    out[f"members.{i}.calibration.temperature"] = cal.t
                if affine:
                    out[f"members.{i}.calibration.scale"] = cal.a
                    out[f"members.{i}.calibration.shift"] = cal.b
        if self.steps.leak is not None:
            out["steps.leak.max_distance"] = self.steps.leak.max_distance
        nw = self.steps.new_whale
        if nw is not None:
            key = "proportion" if nw.proportion is not None else "threshold"
            out[f"steps.new_whale.{key}"] = getattr(nw, key)
        if self.steps.balance is not None:
            out["steps.balance.margin"] = self.steps.balance.margin
            out["steps.balance.min_count"] = self.steps.balance.min_count
        return out

    def only_member(self, i: int) -> "BlendRecipe":
        """The recipe with every member's weight 0 but member i's (same inputs, one member)."""
        return self.with_params({f"members.{j}.weight": float(j == i) for j in range(len(self.members))})

    def without_steps(self) -> "BlendRecipe":
        """The recipe with every post-processing step switched off: the blend alone."""
        return self.with_params({f"steps.{s}.enabled": False for s in STEP_ORDER if self.steps.active(s)})

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
        return recipe_from_dict(d, self.source)


# ------------------------------------------------------------------------------- loading, dumping
def load_recipe(path: str | Path) -> BlendRecipe:
    """Read and validate a blend recipe; every problem is one KitError naming file and key."""
    return recipe_from_dict(read_yaml(path, "blend recipe"), str(path))


def dump_recipe(recipe: BlendRecipe, path: str | Path, note: list[str] | tuple[str, ...] = (),
                out: Outputs | None = None) -> Path:
    """Write the recipe as YAML, atomically, `note` lines as comments on top; `load_recipe` reads it back equal.
    With `out`, staged there (in place when the caller commits the run's outputs)."""
    text = "".join(f"# {line}\n" for line in note) + yaml.safe_dump(recipe.to_dict(), sort_keys=False,
                                                                    default_flow_style=None, width=100)
    return write_text(path, text, out)


def recipe_from_dict(raw: Any, source: str = "<recipe>") -> BlendRecipe:
    """Validate plain data (a parsed YAML) into a BlendRecipe."""
    top = _Section(raw, "", source)
    top.keys(("name", "data", "fold", "members", "steps", "pseudo", "output", "tune"), required=("name", "data", "members"))
    name = top.string("name")
    if not _NAME.match(name):
        top.fail("name", f"{name!r} is not a usable file name (letters, digits, _ . - only)")
    data = top.string("data")
    if isinstance(top.get("fold"), str) and top.get("fold") != ALL_FOLDS:
        top.fail("fold", f"must be an integer >= -1 or {ALL_FOLDS!r} (out-of-fold members), got {top.get('fold')!r}")
    fold = ALL_FOLDS if top.get("fold") == ALL_FOLDS else top.integer("fold", default=0, low=-1)
    output = top.string("output", default="submissions")

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

    steps_sec = top.section("steps")
    steps_sec.keys(STEP_ORDER)
    steps = Steps(
        leak=_leak(steps_sec.get("leak"), source) if steps_sec.has("leak") else None,
        new_whale=_new_whale(steps_sec.get("new_whale"), source, data, fold) if steps_sec.has("new_whale") else None,
        balance=_balance(steps_sec.get("balance"), source) if steps_sec.has("balance") else None,
    )
    pseudo_sec = top.section("pseudo")
    pseudo_sec.keys(("enabled", "threshold"))
    pseudo = Pseudo(enabled=pseudo_sec.boolean("enabled", True),
                    threshold=pseudo_sec.number("threshold", 0.96, low=0.0, high=1.0))
    return BlendRecipe(name=name, data=data, members=members, fold=fold, steps=steps,
                       pseudo=pseudo, output=output, tune=_tune(top.get("tune"), source), source=source)


def _tune(raw: Any, source: str) -> TuneCfg:
    sec = _Section(raw, "tune", source)
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
    sec = _Section(raw, where, source)
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
    sec = _Section(raw, where, source)
    method = sec.string("method", default="auto")
    if method not in METHODS:
        sec.fail("method", f"is {method!r}; expected one of {', '.join(METHODS)}")
    allowed = ("method",) + METHOD_PARAMS[method]
    for key in sec.raw:
        if key not in allowed and key in ("temperature", "scale", "shift"):
            sec.fail(key, f"does not apply to method {method}; its keys: {', '.join(allowed)}")
    sec.keys(allowed)
    return Calibration(
        method=method,
        temperature=sec.number("temperature", None, low=0.0, low_open=True),
        scale=sec.number("scale", None),
        shift=sec.number("shift", None),
    )


def _enabled(sec: "_Section") -> bool:
    return sec.boolean("enabled", True)


def _leak(raw: Any, source: str) -> LeakStep:
    sec = _Section(raw, "steps.leak", source)
    sec.keys(("enabled", "max_distance"))
    return LeakStep(enabled=_enabled(sec), max_distance=sec.integer("max_distance", 0, low=0, high=64))


def _new_whale(raw: Any, source: str, data: str, fold: int | str) -> NewWhaleStep:
    sec = _Section(raw, "steps.new_whale", source)
    sec.keys(("enabled", "threshold", "proportion"))
    given = [k for k in ("threshold", "proportion") if sec.get(k) is not None]
    if len(given) == 2:
        raise KitError(f"{source}: steps.new_whale: give threshold or proportion, not both")
    if given == ["proportion"]:
        return NewWhaleStep(enabled=_enabled(sec), threshold=None,
                            proportion=sec.number("proportion", None, low=0.0, high=1.0))
    if given == ["threshold"]:
        return NewWhaleStep(enabled=_enabled(sec), threshold=sec.number("threshold", 0.5), proportion=None)
    # Neither: the unknown label first in the share validation holds. A share means the same for
    # any member set; a threshold of 0.5 does not (its share moved from 0% to 66% between blends).
    return NewWhaleStep(enabled=_enabled(sec), threshold=None, proportion=validation_unknown_share(data, fold, source))


def validation_unknown_share(data: str, fold: int | str, source: str) -> float:
    """The unknown label's share among the validation images of `fold` (every fold's for `all`)."""
    from kit.data.competition import load_competition
    from kit.data.folds import read_folds

    folds_csv = Path(data) / "folds.csv"
    if fold == -1 or not folds_csv.is_file():
        why = "fold is -1" if fold == -1 else f"{folds_csv} is missing"
        raise KitError(f"{source}: steps.new_whale gives neither threshold nor proportion, so it would take "
                       f"validation's unknown share, but {why}; give one")
    comp = load_competition(data, check_images=False)
    folds = read_folds(folds_csv, comp.train)
    held = folds[folds["fold"] >= 0] if fold == ALL_FOLDS else folds[folds["fold"] == fold]
    if not len(held):
        raise KitError(f"{folds_csv}: fold {fold} holds no image; steps.new_whale needs a threshold or a proportion")
    return round(float((held["label"] == comp.unknown).mean()), 4)


def _balance(raw: Any, source: str) -> BalanceStep:
    sec = _Section(raw, "steps.balance", source)
    sec.keys(("enabled", "margin", "min_count"))
    return BalanceStep(enabled=_enabled(sec), margin=sec.number("margin", 0.3, low=0.0),
                       min_count=sec.integer("min_count", 2, low=1))


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
                creatable = prefix in ("steps", "pseudo") or prefix in {f"steps.{s}" for s in STEP_ORDER} or (
                    part == "calibration" and parts[0] == "members")
                if not creatable:
                    raise KitError(f"{source}: with_params: {path!r}: no key {part!r}{_did_you_mean(part, node)}")
                node[part] = {}
            node = node[part]
        else:
            raise KitError(f"{source}: with_params: {path!r}: {'.'.join(parts[:i])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        raise KitError(f"{source}: with_params: {path!r} names a list item, not a key")
    if path.startswith("steps.new_whale.") and last in ("threshold", "proportion"):
        node.pop("proportion" if last == "threshold" else "threshold", None)
    node[last] = value


# ------------------------------------------------------------------------------------ validation
def _did_you_mean(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Section:
    """One mapping of the recipe with checked accessors; messages say `file: where.key: ...`."""

    def __init__(self, raw: Any, where: str, source: str):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            what = where or "the recipe"
            raise KitError(f"{source}: {what} must be a mapping of keys to values, got {type(raw).__name__} {raw!r}")
        self.raw, self.where, self.source = raw, where, source

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str):
        raise KitError(f"{self.source}: {self._key(key)} {message}")

    def keys(self, valid, required=()) -> None:
        for key in self.raw:
            if key not in valid:
                raise KitError(
                    f"{self.source}: unknown key {self._key(str(key))!r}{_did_you_mean(key, valid)}; "
                    f"valid keys{' in ' + self.where if self.where else ''}: {', '.join(valid)}"
                )
        for key in required:
            if key not in self.raw or self.raw[key] is None:
                raise KitError(f"{self.source}: missing key {self._key(key)!r}")

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def section(self, key: str) -> "_Section":
        return _Section(self.raw.get(key), self._key(key), self.source)

    def string(self, key: str, default: Any = ...) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if default is ...:
                self.fail(key, "is missing")
            return default
        value = self.raw[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def number(self, key: str, default: float | None, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float | None:
        if key not in self.raw or self.raw[key] is None:
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value!r}")
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(key, f"is {value:g}; it must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            self.fail(key, f"is {value:g}; it must be <= {high:g}")
        return value

    def integer(self, key: str, default: int, low: int | None = None, high: int | None = None) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if low is not None and value < low:
            self.fail(key, f"is {value}; it must be >= {low}")
        if high is not None and value > high:
            self.fail(key, f"is {value}; it must be <= {high}")
        return value
