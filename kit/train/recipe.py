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
                                 #   or {minutes: 4, ...}: as many epochs as fit, measured (budget.py)
    runtime: {device: auto, amp: auto, channels_last: auto, compile: false, workers: 2, ...}
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from kit.config import Interval, OneOf, Rule, build, dump_yaml, param, plain, read_yaml
from kit.data.folds import ALL_FOLDS  # `fold: all`: one member per fold (kit.train.loop.train_every_fold)
from kit.errors import KitError
from kit.io import Outputs, write_text
from kit.train.head_facts import FACTS

PROBABILITY = Interval(0, 1)


def fold_dir(parent: str | os.PathLike, fold: int) -> Path:
    """Where an out-of-fold member keeps the member trained without fold `fold`."""
    return Path(parent) / f"fold{fold}"


@dataclass(frozen=True)
class ModelCfg:
    backbone: str = "resnet18"  # any timm name
    pretrained: bool = False  # timm's hub weights (needs a network, or a cached file)
    pretrained_file: str | None = None  # local weights for the backbone (implies pretrained)
    drop_rate: float = 0.0  # timm's own dropout before its (removed) classifier: unused by our heads
    drop_path_rate: float = 0.0  # stochastic depth, where the backbone supports it
    freeze_bn: bool = False  # every BatchNorm in eval mode: for tiny per-device batches
    kwargs: dict = field(default_factory=dict)  # passed on to timm.create_model
    # pooling: timm's own (avg), or GeM with a learnable p (Radenovic et al.; Happywhale's 1st place),
    # over the last `pool_stages` stages' maps, concatenated (2: the last two, as the 1st place)
    pool: Literal["avg", "gem"] = "avg"
    pool_stages: int = param(1, check=Interval(1, 2))
    gem_p: float = param(3.0, check=Interval(1))  # GeM's initial p (1: average, large: max)


@dataclass(frozen=True)
class HeadCfg:
    type: str = param("softmax", check=OneOf(lambda: list(FACTS)))  # a registered head (kit/train/head_facts.py)
    embedding_dim: int = param(512, check=Interval(1))  # the neck: pooled features -> BN -> dropout -> FC -> BN
    dropout: float = param(0.5, check=Interval(0, 1, "left"))
    scale: float = param(64.0, check=Interval(0, None, "neither"))  # arcface: the logit scale s
    margin: float = param(0.5, check=Rule(lambda v: 0 <= v < 1.6, "in [0, pi/2) radians"))  # arcface: the additive angular margin m (radians)
    # arcface: k sub-centres per identity (sub-center ArcFace, Happywhale's 1st place: k = 2); its logit is the nearest one's
    subcenters: int = param(1, check=Interval(1))
    # arcface: dynamic margins, m_c = margin_a * n_c ** -margin_lambda + margin (n_c: identity c's training
    # images; Google Landmarks 2020, Happywhale's 1st place): rare identities get wider margins. 0: one margin
    margin_a: float = param(0.0, check=Interval(0))
    margin_lambda: float = param(0.25, check=Interval(0))
    # an auxiliary species classifier on the embedding (Happywhale's 1st place), its cross-entropy times
    # this weight added to the loss; needs a species column in train.csv. Training only: export is unchanged
    species_weight: float = param(0.0, check=Interval(0))
    hard_negatives: int = param(20, check=Interval(1))  # sigmoid: BCE over the top-k hardest negatives per image
    triplet_weight: float = param(0.0, check=Interval(0))  # > 0 adds a batch-hard triplet loss on the embedding
    triplet_margin: float = param(0.3, check=Interval(0))


@dataclass(frozen=True)
class InputCfg:
    size: tuple[int, int] = param((256, 512), check=Rule(lambda v: min(v) >= 16, "[H, W], each >= 16 pixels"))  # (H, W); the winners' 2:1 fluke crops
    colour: Literal["rgb", "grey"] = "rgb"  # grey: every image to one channel, repeated 3 times
    mean: Union[Literal["imagenet", "model"], tuple[float, float, float]] = "imagenet"
    std: Union[Literal["imagenet", "model"], tuple[float, float, float]] = param("imagenet", check=Rule(lambda v: isinstance(v, str) or min(v) > 0, "positive"))
    boxes: Union[Literal["auto"], bool] = "auto"  # crop to bounding_boxes.csv (auto: when present)
    box_margin: float = param(0.05, check=Interval(0, 1))  # grow the box by this share of its width/height on each side


@dataclass(frozen=True)
class AugmentCfg:
    # flip: none; same (a flipped fluke keeps its id); twin (a flipped image of id k trains as id k + K)
    flip: Literal["none", "same", "twin"] = "none"
    scale: tuple[float, float] = param((0.9, 1.1), check=Rule(lambda v: 0 < v[0] <= v[1], "[low, high] with 0 < low <= high"))
    translate: float = param(0.05, check=Interval(0, 1, "left"))  # share of width / height
    shear: float = 5.0  # degrees
    rotate: float = 10.0  # degrees
    blur: float = param(0.1, check=PROBABILITY)  # probability of a Gaussian blur
    motion_blur: float = param(0.1, check=PROBABILITY)  # probability of a linear motion blur
    add: float = param(0.1, check=Interval(0, 1))  # +- brightness, share of the 0..1 pixel range
    multiply: tuple[float, float] = param((0.8, 1.2), check=Rule(lambda v: 0 < v[0] <= v[1], "[low, high] with 0 < low <= high"))  # contrast-like gain
    greyscale: float = param(0.2, check=PROBABILITY)  # probability of dropping colour
    probability: float = param(0.9, check=PROBABILITY)  # of applying the geometric (affine) part at all


@dataclass(frozen=True)
class SamplingCfg:
    batch_size: int = param(32, check=Interval(2))  # the global batch (split over DDP processes)
    min_per_id: int = param(1, check=Interval(1))  # oversample: each identity appears at least this many times an epoch
    pairs: Union[Literal["auto"], bool] = "auto"  # batches of same-id pairs (auto: with a triplet loss)
    unknown: Union[Literal["auto"], bool] = "auto"  # unknown-label rows train (auto: sigmoid head only)


@dataclass(frozen=True)
class OptimCfg:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = param(1e-4, check=Interval(0))
    momentum: float = 0.9  # sgd
    accumulate: int = param(1, check=Interval(1))  # gradient accumulation steps per optimizer step
    grad_clip: float | None = param(None, check=Interval(0, None, "neither"))  # max gradient norm
    # the head's (neck and classifier) learning rate as a multiple of the stage's: a new head on
    # pretrained features learns faster (Happywhale's 1st place: 10)
    head_lr: float = param(1.0, check=Interval(0, None, "neither"))


DEFAULT_EPOCHS = 10  # a stage that gives neither epochs nor minutes


@dataclass(frozen=True)
class StageCfg:
    epochs: int | None = param(None, check=Interval(1))  # 10 by default; with minutes, the most it may buy
    # train for this long instead: the loop measures its steady speed and sets the epochs (kit/train/budget.py)
    minutes: float | None = param(None, check=Interval(0, None, "neither"))
    lr: float = param(1e-3, check=Interval(0, None, "neither"))
    min_images: int = param(1, check=Interval(1))  # only identities with at least this many training images
    # freeze: none; backbone (train the head only); or an int N: the backbone except its last N stages
    freeze: Union[Literal["none", "backbone"], int] = param("none", check=Rule(lambda v: isinstance(v, str) or v >= 0, "none, backbone or an integer >= 0"))
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = param(0.0, check=Interval(0))  # linear warm-up, in epochs (fractions allowed)
    final_lr: float = param(0.01, check=Rule(lambda v: 0 <= v <= 1, "in [0, 1] (a share of lr)"))  # cosine floor, as a share of lr
    name: str = ""  # for the log

    def __post_init__(self):
        if self.epochs is None and self.minutes is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)


@dataclass(frozen=True)
class RuntimeCfg:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on a GPU, off on the CPU
    channels_last: Union[Literal["auto"], bool] = "auto"  # auto: on a GPU
    compile: bool = False  # torch.compile the model (GPU)
    val_batch_size: int = param(64, check=Interval(1))
    sync_bn: bool = False  # SyncBatchNorm under DDP on GPUs


@dataclass(frozen=True)
class Recipe:
    name: str = ""
    data: str = "data/small"
    fold: Union[int, Literal["all"]] = param(0, check=Rule(lambda v: v == ALL_FOLDS or v >= -1, "an integer >= -1 (-1: no held-out fold) or all (one member per fold)"))  # "all": kit.train.loop.train_every_fold
    extra_train: str | None = None
    seed: int = 0
    model: ModelCfg = field(default_factory=ModelCfg)
    head: HeadCfg = field(default_factory=HeadCfg)
    input: InputCfg = field(default_factory=InputCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    sampling: SamplingCfg = field(default_factory=SamplingCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    stages: tuple[StageCfg, ...] = field(default_factory=lambda: (StageCfg(),))
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
        return FACTS[self.head.type].learns_unknown if self.sampling.unknown == "auto" else bool(self.sampling.unknown)

    def to_dict(self) -> dict:
        """Plain YAML-able data (tuples become lists), every key explicit: the recipe as run."""
        return plain(self)


def load_recipe(path: str | os.PathLike, checkpoint: bool = False) -> Recipe:
    """Read and validate a recipe file; the name defaults to the file's stem. `checkpoint`: a
    member's recipe.yaml as run (keys of earlier releases dropped, not refused)."""
    path = Path(path)
    raw = read_yaml(path, "recipe")
    recipe = recipe_from_dict(raw if raw is not None else {}, source=str(path), checkpoint=checkpoint)
    return recipe if recipe.name or checkpoint else dataclasses.replace(recipe, name=path.stem)


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
    recipe = build(Recipe, raw, source)
    if recipe.name and (os.sep in recipe.name or recipe.name.startswith(".")):
        raise KitError(f"{source}: name {recipe.name!r} must be a plain directory name")
    if not recipe.stages:
        raise KitError(f"{source}: stages is empty; give at least one stage")
    if recipe.model.pool_stages > 1 and recipe.model.pool != "gem":
        raise KitError(f"{source}: model.pool_stages {recipe.model.pool_stages} pools several stages with GeM; "
                       f"set model.pool: gem")
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML text, every key explicit, in the dataclasses' order."""
    return dump_yaml(recipe.to_dict())


def save_recipe(recipe: Recipe, path: str | os.PathLike, out: Outputs | None = None) -> Path:
    """Write the recipe atomically (staged in `out` when given); `load_recipe` reads it back equal."""
    return write_text(path, dump_recipe(recipe), out)
