"""Training recipes: one YAML file per experiment, validated once into dataclasses.

A recipe is data, never code: every key below has a default, so a recipe says only what differs.
An unknown or misspelled key, a wrong type or a value out of range is a KitError that names the
file, the key and what is allowed (with a "did you mean" for near misses); past `load_recipe`
the training code trusts the recipe.

    name: resnet18_tiny          # models/<name>/ (default: the file's stem)
    data: data/small             # the competition directory (--data overrides)
    fold: 0                      # the held-out fold of folds.csv (-1: train on everything;
                                 #   all: one member per fold, an out-of-fold member)
    extra_train: null            # pseudo-label CSV `Image,Id` of test images, joins training
    seed: 0
    model:   {backbone: resnet18, pretrained: false, pretrained_file: null, drop_rate: 0.0, ...}
    head:    {type: softmax | arcface | sigmoid, embedding_dim: 512, dropout: 0.5, ...}
    input:   {size: [256, 512], colour: rgb | grey, mean: imagenet | model | [r, g, b], ...}
    augment: {flip: none | same | twin, rotate: 10, ...}
    sampling: {batch_size: 32, min_per_id: 1, pairs: auto}
    optim:   {optimizer: adam, weight_decay: 1e-4, accumulate: 1, grad_clip: null}
    stages:  [{epochs: 10, lr: 1e-3, min_images: 1, freeze: none, schedule: cosine}, ...]
    runtime: {device: auto, amp: auto, channels_last: auto, compile: false, workers: 2, ...}
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from kit.errors import KitError
from kit.io import read_yaml

# `fold: all` trains one member per fold of folds.csv into <out>/fold<k>/ (an out-of-fold member).
ALL_FOLDS = "all"


def fold_dir(parent: str | os.PathLike, fold: int) -> Path:
    """Where an out-of-fold member keeps the member trained without fold `fold`."""
    return Path(parent) / f"fold{fold}"


@dataclass
class ModelCfg:
    backbone: str = "resnet18"  # any timm name
    pretrained: bool = False  # timm's hub weights (needs a network, or a cached file)
    pretrained_file: str | None = None  # local weights for the backbone (implies pretrained)
    drop_rate: float = 0.0  # timm's own dropout before its (removed) classifier: unused by our heads
    drop_path_rate: float = 0.0  # stochastic depth, where the backbone supports it
    freeze_bn: bool = False  # every BatchNorm in eval mode: for tiny per-device batches
    kwargs: dict = field(default_factory=dict)  # passed on to timm.create_model


@dataclass
class HeadCfg:
    type: Literal["softmax", "arcface", "sigmoid"] = "softmax"
    embedding_dim: int = 512  # the neck: pooled features -> BN -> dropout -> FC -> BN
    dropout: float = 0.5
    scale: float = 64.0  # arcface: the logit scale s
    margin: float = 0.5  # arcface: the additive angular margin m (radians)
    hard_negatives: int = 20  # sigmoid: BCE over the top-k hardest negatives per image
    triplet_weight: float = 0.0  # > 0 adds a batch-hard triplet loss on the embedding
    triplet_margin: float = 0.3


@dataclass
class InputCfg:
    size: tuple[int, int] = (256, 512)  # (H, W); the winners' 2:1 fluke crops
    colour: Literal["rgb", "grey"] = "rgb"  # grey: every image to one channel, repeated 3 times
    mean: Union[Literal["imagenet", "model"], tuple[float, float, float]] = "imagenet"
    std: Union[Literal["imagenet", "model"], tuple[float, float, float]] = "imagenet"
    boxes: Union[Literal["auto"], bool] = "auto"  # crop to bounding_boxes.csv (auto: when present)
    box_margin: float = 0.05  # grow the box by this share of its width/height on each side


@dataclass
class AugmentCfg:
    # flip: none; same (a flipped fluke keeps its id); twin (a flipped image of id k trains as id k + K)
    flip: Literal["none", "same", "twin"] = "none"
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05  # share of width / height
    shear: float = 5.0  # degrees
    rotate: float = 10.0  # degrees
    blur: float = 0.1  # probability of a Gaussian blur
    motion_blur: float = 0.1  # probability of a linear motion blur
    add: float = 0.1  # +- brightness, share of the 0..1 pixel range
    multiply: tuple[float, float] = (0.8, 1.2)  # contrast-like gain
    greyscale: float = 0.2  # probability of dropping colour
    probability: float = 0.9  # of applying the geometric (affine) part at all


@dataclass
class SamplingCfg:
    batch_size: int = 32  # the global batch (split over DDP processes)
    min_per_id: int = 1  # oversample: each identity appears at least this many times an epoch
    pairs: Union[Literal["auto"], bool] = "auto"  # batches of same-id pairs (auto: with a triplet loss)
    unknown: Union[Literal["auto"], bool] = "auto"  # unknown-label rows train (auto: sigmoid head only)


@dataclass
class OptimCfg:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    grad_clip: float | None = None  # max gradient norm


@dataclass
class StageCfg:
    epochs: int = 10
    lr: float = 1e-3
    min_images: int = 1  # only identities with at least this many training images
    # freeze: none; backbone (train the head only); or an int N: the backbone except its last N stages
    freeze: Union[Literal["none", "backbone"], int] = "none"
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up, in epochs (fractions allowed)
    final_lr: float = 0.01  # cosine floor, as a share of lr
    name: str = ""  # for the log


@dataclass
class RuntimeCfg:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on a GPU, off on the CPU
    channels_last: Union[Literal["auto"], bool] = "auto"  # auto: on a GPU
    compile: bool = False  # torch.compile the model (GPU)
    val_batch_size: int = 64
    sync_bn: bool = False  # SyncBatchNorm under DDP on GPUs


@dataclass
class Recipe:
    name: str = ""
    data: str = "data/small"
    fold: Union[int, Literal["all"]] = 0  # "all": kit.train.loop.train_every_fold
    extra_train: str | None = None
    seed: int = 0
    model: ModelCfg = field(default_factory=ModelCfg)
    head: HeadCfg = field(default_factory=HeadCfg)
    input: InputCfg = field(default_factory=InputCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    sampling: SamplingCfg = field(default_factory=SamplingCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    stages: list[StageCfg] = field(default_factory=lambda: [StageCfg()])
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)

    # ---- derived, read by the training code -------------------------------------------------
    @property
    def flip_twins(self) -> bool:
        return self.augment.flip == "twin"

    @property
    def use_pairs(self) -> bool:
        return self.head.triplet_weight > 0 if self.sampling.pairs == "auto" else bool(self.sampling.pairs)

    @property
    def train_unknown(self) -> bool:
        return self.head.type == "sigmoid" if self.sampling.unknown == "auto" else bool(self.sampling.unknown)

    def to_dict(self) -> dict:
        """Plain YAML-able data (tuples become lists), every key explicit: the recipe as run."""
        return _plain(dataclasses.asdict(self))


# Range checks beyond the types: (dataclass, field) -> (test, what is allowed).
_RULES: dict[tuple[type, str], tuple[typing.Callable[[Any], bool], str]] = {
    (Recipe, "fold"): (lambda v: v == ALL_FOLDS or v >= -1,
                       "an integer >= -1 (-1: no held-out fold) or all (one member per fold)"),
    (HeadCfg, "embedding_dim"): (lambda v: v >= 1, "a positive integer"),
    (HeadCfg, "dropout"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (HeadCfg, "scale"): (lambda v: v > 0, "> 0"),
    (HeadCfg, "margin"): (lambda v: 0 <= v < 1.6, "in [0, pi/2) radians"),
    (HeadCfg, "hard_negatives"): (lambda v: v >= 1, "a positive integer"),
    (HeadCfg, "triplet_weight"): (lambda v: v >= 0, ">= 0"),
    (HeadCfg, "triplet_margin"): (lambda v: v >= 0, ">= 0"),
    (InputCfg, "size"): (lambda v: min(v) >= 16, "[H, W], each >= 16 pixels"),
    (InputCfg, "std"): (lambda v: isinstance(v, str) or min(v) > 0, "positive"),
    (InputCfg, "box_margin"): (lambda v: 0 <= v <= 1, "in [0, 1]"),
    (AugmentCfg, "scale"): (lambda v: 0 < v[0] <= v[1], "[low, high] with 0 < low <= high"),
    (AugmentCfg, "multiply"): (lambda v: 0 < v[0] <= v[1], "[low, high] with 0 < low <= high"),
    (AugmentCfg, "translate"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (AugmentCfg, "blur"): (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    (AugmentCfg, "motion_blur"): (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    (AugmentCfg, "greyscale"): (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    (AugmentCfg, "probability"): (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    (AugmentCfg, "add"): (lambda v: 0 <= v <= 1, "in [0, 1]"),
    (SamplingCfg, "batch_size"): (lambda v: v >= 2, "an integer >= 2"),
    (SamplingCfg, "min_per_id"): (lambda v: v >= 1, "a positive integer"),
    (OptimCfg, "weight_decay"): (lambda v: v >= 0, ">= 0"),
    (OptimCfg, "accumulate"): (lambda v: v >= 1, "a positive integer"),
    (OptimCfg, "grad_clip"): (lambda v: v is None or v > 0, "> 0 or null"),
    (StageCfg, "epochs"): (lambda v: v >= 1, "a positive integer"),
    (StageCfg, "lr"): (lambda v: v > 0, "> 0"),
    (StageCfg, "min_images"): (lambda v: v >= 1, "a positive integer"),
    (StageCfg, "freeze"): (lambda v: isinstance(v, str) or v >= 0, "none, backbone or an integer >= 0"),
    (StageCfg, "warmup_epochs"): (lambda v: v >= 0, ">= 0"),
    (StageCfg, "final_lr"): (lambda v: 0 <= v <= 1, "in [0, 1] (a share of lr)"),
    (RuntimeCfg, "val_batch_size"): (lambda v: v >= 1, "a positive integer"),
}


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe file; the name defaults to the file's stem."""
    path = Path(path)
    raw = read_yaml(path, "recipe")
    recipe = recipe_from_dict(raw if raw is not None else {}, source=str(path))
    if not recipe.name:
        recipe.name = path.stem
    return recipe


# Keys of earlier releases: an error in a recipe file, dropped from a checkpoint's recipe.
REMOVED = {
    "input.cache": "every member now reads the competition's decoded-crop cache (<data>/cache/)",
    "runtime.workers": "images come from the decoded-crop cache, augmented in batches on the model's device",
}


def recipe_from_dict(raw: Any, source: str = "recipe", checkpoint: bool = False) -> Recipe:
    """Validate plain data (a parsed YAML file, or a checkpoint's recipe) into a Recipe."""
    if isinstance(raw, dict):
        for dotted, why in REMOVED.items():
            section, key = dotted.split(".")
            if isinstance(raw.get(section), dict) and key in raw[section]:
                if not checkpoint:
                    raise KitError(f"{source}: {dotted} was removed ({why}); delete the line")
                raw = {**raw, section: {k: v for k, v in raw[section].items() if k != key}}
    recipe = _build(Recipe, raw, source, "")
    if recipe.name and (os.sep in recipe.name or recipe.name.startswith(".")):
        raise KitError(f"{source}: name {recipe.name!r} must be a plain directory name")
    if not recipe.stages:
        raise KitError(f"{source}: stages is empty; give at least one stage")
    return recipe


def _build(cls: type, raw: Any, source: str, where: str):
    if not isinstance(raw, dict):
        raise KitError(f"{source}: {where[:-1] or 'the recipe'} must be a mapping of keys, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            near = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise KitError(f"{source}: unknown key {where + str(key)!r}{hint} "
                           f"(valid keys{' in ' + where[:-1] if where else ''}: {', '.join(fields)})")
    values = {}
    for name, value in raw.items():
        key = where + name
        values[name] = _convert(hints[name], value, source, key)
        rule = _RULES.get((cls, name))
        if rule and values[name] is not None and not rule[0](values[name]):
            raise KitError(f"{source}: {key} = {_show(value)} is out of range; expected {rule[1]}")
    return cls(**values)


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (lists to tuples...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, source, key)
            except KitError:
                pass
        words = [str(w) for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        near = difflib.get_close_matches(str(value), words, n=1) if isinstance(value, str) else []
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KitError(f"{source}: {key} = {_show(value)} is not allowed; expected {_describe(tp)}{hint}")
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KitError(f"{source}: {key} = {_show(value)} is not allowed; expected {_describe(tp)}{hint}")
    if origin is list:
        if not isinstance(value, list):
            raise KitError(f"{source}: {key} must be a list, got {_show(value)}")
        return [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise KitError(f"{source}: {key} = {_show(value)} must be {_describe(tp)}")
        return tuple(_convert(a, v, source, key) for a, v in zip(args, value))
    if tp is dict:
        if not isinstance(value, dict):
            raise KitError(f"{source}: {key} must be a mapping, got {_show(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise KitError(f"{source}: {key} = {_show(value)} must be {_describe(tp)}")


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[-1]}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(tp, str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML text, every key explicit, in the dataclasses' order."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None, width=100)
