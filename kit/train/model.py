"""WhaleNet (a timm backbone + an identity head), the member's description, and its loader.

`load_member(models/<name>)` is the one way out of training: export and inference rebuild the
network from `checkpoint.pt` alone and preprocess with `kit.train.data.load_image(path, box, info)`.
"""
from __future__ import annotations

import difflib
import os
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from kit.errors import KitError
from kit.train.heads import HEADS
from kit.train.recipe import Recipe, recipe_from_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MemberInfo:
    """What inference needs to know about a trained member, besides its weights."""

    name: str
    classes: tuple[str, ...]  # the K identities, in output order (unknown excluded)
    flip_twins: bool  # logits have 2K columns; K..2K-1 are the flipped twins of 0..K-1
    activation: str  # "softmax" | "sigmoid": how logits become probabilities
    input_size: tuple[int, int]  # (H, W)
    channels: int  # 3: RGB; 1: greyscale (repeated to 3 channels)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    use_boxes: bool  # crop to the competition's bounding box when there is one
    box_margin: float
    fold: int
    embedding_dim: int
    backbone: str = ""
    head: str = ""
    species: tuple[str, ...] = ()  # the auxiliary species head's classes, in output order (none: no head)

    @property
    def num_outputs(self) -> int:
        return len(self.classes) * (2 if self.flip_twins else 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class GeM(nn.Module):
    """Generalised mean pooling over each of the backbone's last `stages` maps, concatenated:
    (mean of x^p)^(1/p) per channel, p learnable (1: average pooling; large: max pooling)."""

    def __init__(self, p: float = 3.0, stages: int = 1, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.stages, self.eps = stages, eps

    def forward(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.stages == 1:
            maps = [backbone.forward_features(x)]
        else:
            maps = backbone.forward_intermediates(x, indices=self.stages, intermediates_only=True)
        p = self.p.float()
        return torch.cat([m.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p) for m in maps], dim=1)


class WhaleNet(nn.Module):
    """forward(x: (B, 3, H, W) float32, normalised) -> (logits (B, K or 2K), embedding (B, D)), and
    with species=True the auxiliary species head's logits (B, S) too (training; export calls forward(x))."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pool: GeM | None = None,
                 species_head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pool = pool  # None: the backbone's own pooling (pooled_features)
        self.species_head = species_head

    def forward(self, x: torch.Tensor, species: bool = False):
        logits, embedding = self.head(self.features(x))
        if species:  # through forward, so DDP and torch.compile see the species head's parameters used
            return logits, embedding, self.species_head(embedding)
        return logits, embedding

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.backbone, x) if self.pool is None else self.pool(self.backbone, x)


def pooled_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled pre-logits features (B, F), through timm's own forward_head.

    Not `backbone(x)` with num_classes=0: what that returns changed between timm releases (1.0.29's
    InceptionNeXt gave 0 features through an emptied MLP head; 1.0.31 its 960 hidden units).
    """
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


def feature_width(backbone: nn.Module, input_size: tuple[int, int], pool: GeM | None = None) -> int:
    """F of the pooled features, read off one probe image in eval mode (no attribute to trust)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, *input_size)
            width = (pooled_features(backbone, x) if pool is None else pool(backbone, x)).shape[-1]
    finally:
        backbone.train(was_training)
    if width == 0:
        raise KitError(f"{type(backbone).__name__}: the backbone gives no pooled features")
    return int(width)


def check_backbone(name: str, source: str = "") -> None:
    """A KitError (naming `source`, the recipe file, when given) unless timm knows the backbone."""
    if not timm.is_model(name):

        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise KitError(f"{source + ': ' if source else ''}model.backbone {name!r} is not a timm model"
                       + (f"; did you mean {', '.join(near)}?" if near else ""))


def create_backbone(recipe: Recipe, pretrained: bool | None = None) -> nn.Module:
    """A timm backbone that returns pooled features (num_classes=0)."""
    cfg = recipe.model
    pretrained = (cfg.pretrained or cfg.pretrained_file is not None) if pretrained is None else pretrained
    kwargs = dict(cfg.kwargs)
    if cfg.drop_rate:
        kwargs["drop_rate"] = cfg.drop_rate
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if pretrained and cfg.pretrained_file is not None:
        if not Path(cfg.pretrained_file).is_file():
            raise KitError(f"model.pretrained_file {cfg.pretrained_file}: file not found")
        # timm loads the file through the model's own pretrained config (remapping, first conv...)
        kwargs["pretrained_cfg_overlay"] = dict(file=str(cfg.pretrained_file))
    check_backbone(cfg.backbone)
    try:
        backbone = timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as e:
        raise KitError(f"model.kwargs for {cfg.backbone}: {e}") from None
    except (OSError, RuntimeError) as e:
        if pretrained:
            raise KitError(f"could not load pretrained weights for {cfg.backbone} ({str(e).splitlines()[0]}); "
                           "give model.pretrained_file, or set model.pretrained: false") from None
        raise
    # The same parameters whatever the timm release: some keep an empty (F x 0) classifier
    # after num_classes=0, which would make checkpoints differ between releases.
    backbone.reset_classifier(0)
    return backbone


def build_model(recipe: Recipe, num_classes: int, pretrained: bool | None = None, num_species: int = 0) -> WhaleNet:
    """The member's network; with head.species_weight > 0 and `num_species` species, the species head too."""
    backbone = create_backbone(recipe, pretrained)
    outputs = num_classes * (2 if recipe.flip_twins else 1)
    h, m = recipe.head, recipe.model
    pool = None if m.pool == "avg" else GeM(m.gem_p, m.pool_stages)
    if m.pool_stages > 1 and not hasattr(backbone, "forward_intermediates"):
        raise KitError(f"model.pool_stages {m.pool_stages}: timm's {m.backbone} gives no intermediate stages; use 1")
    features = feature_width(backbone, tuple(recipe.input.size), pool)
    head = HEADS[h.type](features, outputs, embedding_dim=h.embedding_dim, dropout=h.dropout, scale=h.scale,
                         subcenters=h.subcenters)
    # a linear classifier on the same embedding: species is what every identity of a species shares,
    # a coarse label for the embedding to keep (1st place, Happywhale 2022)
    species = nn.Linear(h.embedding_dim, num_species) if h.species_weight > 0 and num_species else None
    return WhaleNet(backbone, head, pool, species)


def resolve_norm(recipe: Recipe, backbone: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The recipe's mean/std: ImageNet's, the model's own (timm's pretrained_cfg), or explicit."""
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}

    def pick(value, imagenet, key):
        if value == "imagenet":
            return imagenet
        if value == "model":
            return tuple(float(v) for v in cfg.get(key, imagenet))
        return tuple(float(v) for v in value)

    return pick(recipe.input.mean, IMAGENET_MEAN, "mean"), pick(recipe.input.std, IMAGENET_STD, "std")


def member_info(recipe: Recipe, classes: list[str], mean, std, use_boxes: bool, species: list[str] = ()) -> MemberInfo:
    return MemberInfo(
        name=recipe.name, classes=tuple(classes), flip_twins=recipe.flip_twins,
        activation=HEADS[recipe.head.type].activation, input_size=tuple(recipe.input.size),
        channels=1 if recipe.input.colour == "grey" else 3, mean=tuple(mean), std=tuple(std),
        use_boxes=use_boxes, box_margin=recipe.input.box_margin, fold=recipe.fold,
        embedding_dim=recipe.head.embedding_dim, backbone=recipe.model.backbone, head=recipe.head.type,
        species=tuple(species),
    )


# ---- freezing: the backbone, or all of it but its last N stages ---------------------------------

def trainable_flags(model: WhaleNet, freeze: str | int) -> dict[str, bool]:
    """Parameter name -> requires_grad for a stage's `freeze` setting (the head always trains).

    Stages are timm's `feature_info` (resnet: layer1..4; inception: Mixed_*; senet: layer1..4):
    `freeze: N` keeps trainable everything after the end of stage len-N-1 (the last N stages, the
    final norms and pools), in the parameters' registration order.
    """
    names = [n for n, _ in model.named_parameters()]
    if freeze == "none":
        return {n: True for n in names}
    backbone = [n for n in names if n.startswith("backbone.")]
    first_trainable = len(backbone)
    if freeze != "backbone":
        stages = [f["module"] for f in getattr(model.backbone, "feature_info", [])]
        n = int(freeze)
        if n >= len(stages):
            first_trainable = 0
        elif n > 0:
            boundary = "backbone." + stages[len(stages) - n - 1]
            inside = [i for i, p in enumerate(backbone) if p.startswith(boundary + ".")]
            first_trainable = (inside[-1] + 1) if inside else 0
    frozen = set(backbone[:first_trainable])
    return {n: n not in frozen for n in names}


def apply_freeze(model: WhaleNet, freeze: str | int, freeze_bn: bool = False) -> int:
    """Set requires_grad for a stage; returns the number of trainable parameters (elements)."""
    flags = trainable_flags(model, freeze)
    for name, p in model.named_parameters():
        p.requires_grad_(flags[name])
    set_train_mode(model, freeze_bn)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """model.train(), but a BatchNorm whose parameters are frozen (or all, with freeze_bn) stays in
    eval mode, so frozen layers keep their running statistics too."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if freeze_bn or (params and not any(p.requires_grad for p in params)):
                module.eval()


# ---- loading a trained member ------------------------------------------------------------------

def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: checkpoint not found; train the member first (python scripts/train.py models/<recipe>.yaml)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's advice (load it with weights_only=False) would run its code
        raise KitError(f"{path}: refused: it holds Python objects beyond tensors and plain data, and unpickling them "
                       f"could run code; the kit reads only checkpoints scripts/train.py wrote") from None
    except Exception as e:  # a truncated or foreign file
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(e).splitlines() or [type(e).__name__])[0])
        raise KitError(f"{path}: not a readable checkpoint ({first[:200]})") from None


def load_member(model_dir: str | os.PathLike) -> tuple[WhaleNet, MemberInfo]:
    """Rebuild a trained member from `model_dir/checkpoint.pt`, in eval mode, on the CPU."""
    model_dir = Path(model_dir)
    ckpt = read_checkpoint(model_dir / "checkpoint.pt")
    recipe = recipe_from_dict(ckpt["recipe"], source=f"{model_dir / 'checkpoint.pt'} (recipe)", checkpoint=True)
    info_d = ckpt["info"]
    info = MemberInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in info_d.items()})
    model = build_model(recipe, len(info.classes), pretrained=False, num_species=len(info.species))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, info
