"""Identity heads: pooled backbone features -> (logits, embedding).

Every head shares the neck of the winning softmax classifiers, flatten -> BN -> dropout -> FC -> BN,
whose output is the embedding (before L2 normalisation); they differ in the final layer:

- `softmax`: a linear classifier, trained with cross-entropy;
- `arcface`: cosine of the L2-normalised embedding to L2-normalised class weights, times the scale
  s. The head outputs s*cos(theta) without the margin (the margin lives in the loss), so a softmax
  of what it exports is a probability;
- `sigmoid`: one logit per identity ("a 2-class problem for every whale"), trained with BCE over
  the hardest negatives.

A head is a registered plug-in (`@HEADS.register`, timm's register_model): its module, its loss
(kit/train/losses.py), the activation that turns its exported logits into probabilities and
whether unknown-label rows train it by default (those two also in its torch-free facts,
kit/train/head_facts.py, which recipes read). A recipe names it (`head: {type: arcface}`); adding
one is its facts, one class here (or in a file that imports this one) and its test.
"""
from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kit.config import Registry
from kit.train import losses
from kit.train.head_facts import FACTS
from kit.train.recipe import HeadCfg


class HeadRegistry(Registry):
    """The torch heads, each registered against its facts (kit/train/head_facts.py): what a recipe
    reads of a head is there, and a class may not say otherwise."""

    def register(self, plugin):
        facts = FACTS.get(plugin.name)
        if facts is None:
            raise ValueError(f"head {plugin.name!r}: register its facts first (kit/train/head_facts.py, FACTS.register)")
        if (plugin.activation, plugin.learns_unknown) != (facts.activation, facts.learns_unknown):
            raise ValueError(f"head {plugin.name!r}: its activation and learns_unknown differ from its facts {facts}")
        return super().register(plugin)


HEADS = HeadRegistry("head")


class Neck(nn.Module):
    """flatten -> BN -> dropout -> FC -> BN: the embedding every head classifies."""

    def __init__(self, in_features: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.bn_in = nn.BatchNorm1d(in_features)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, embedding_dim)
        self.bn_out = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_out(self.fc(self.dropout(self.bn_in(torch.flatten(x, 1)))))


class LinearHead(nn.Module):
    """A linear layer over the embedding: the softmax and sigmoid heads (their losses tell them apart)."""

    def __init__(self, in_features: int, num_outputs: int, embedding_dim: int, dropout: float, **_):
        super().__init__()
        self.neck = Neck(in_features, embedding_dim, dropout)
        self.classifier = nn.Linear(embedding_dim, num_outputs)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.neck(features)
        return self.classifier(embedding), embedding


@HEADS.register
class ArcFaceHead(nn.Module):
    """s * cos(embedding, class weight); the angular margin is added by the loss, in training only."""

    name: ClassVar[str] = "arcface"
    activation: ClassVar[str] = "softmax"  # s * cos is a logit: its softmax is a probability
    learns_unknown: ClassVar[bool] = False
    loss: ClassVar[Callable] = staticmethod(losses.arcface_loss)

    def __init__(self, in_features: int, num_outputs: int, embedding_dim: int, dropout: float, scale: float = 64.0,
                 subcenters: int = 1, **_):
        super().__init__()
        self.neck = Neck(in_features, embedding_dim, dropout)
        # k sub-centres per identity, rows c*k .. c*k + k-1 (sub-center ArcFace): a noisy or two-sided
        # identity may keep one for each mode; k = 1 is plain ArcFace, the same parameters as before
        self.subcenters = subcenters
        self.weight = nn.Parameter(torch.empty(num_outputs * subcenters, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.neck(features)
        device = embedding.device.type
        if torch.is_autocast_enabled(device):  # cosines in float32: bf16's 3 digits, times s = 64, is noise
            with torch.autocast(device, enabled=False):
                return self.scale * self._cosine(embedding), embedding
        return self.scale * self._cosine(embedding), embedding

    def _cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embedding.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        if self.subcenters == 1:
            return cosine
        # unflatten, not view(len(x), ...): the batch axis stays dynamic in the exported graph
        return cosine.unflatten(1, (-1, self.subcenters)).amax(dim=2)  # the nearest sub-centre


@HEADS.register
class SoftmaxHead(LinearHead):
    name: ClassVar[str] = "softmax"
    activation: ClassVar[str] = "softmax"
    learns_unknown: ClassVar[bool] = False
    loss: ClassVar[Callable] = staticmethod(losses.softmax_loss)


@HEADS.register
class SigmoidHead(LinearHead):
    name: ClassVar[str] = "sigmoid"
    activation: ClassVar[str] = "sigmoid"
    learns_unknown: ClassVar[bool] = True  # an unknown image is a negative for every identity
    loss: ClassVar[Callable] = staticmethod(losses.sigmoid_loss)


class Criterion:
    """The recipe's loss: its head's, plus `triplet_weight` x the triplet loss, plus `species_weight`
    x the species head's cross-entropy. `counts`: each output column's training images, for dynamic
    margins (arcface with margin_a > 0)."""

    def __init__(self, cfg: HeadCfg, num_outputs: int, flip_twins: bool, counts: np.ndarray | None = None):
        self.cfg, self.num_outputs, self.flip_twins = cfg, num_outputs, flip_twins
        self.head_loss = HEADS[cfg.type].loss
        margins = None if counts is None or cfg.type != "arcface" else losses.dynamic_margins(counts, cfg)
        if cfg.type == "arcface" and cfg.margin_a > 0 and counts is None:
            raise ValueError("dynamic margins need each class's image count")
        self.extra = {} if margins is None else {"margins": torch.from_numpy(margins)}

    def __call__(self, logits, embedding, target, weight, species_logits=None, species=None) -> torch.Tensor:
        mask = losses.twin_mask(target, self.num_outputs, self.flip_twins)
        loss = self.head_loss(logits, target, weight, mask, self.cfg, flip_twins=self.flip_twins, **self.extra)
        if self.cfg.triplet_weight > 0:
            loss = loss + self.cfg.triplet_weight * losses.triplet_loss(embedding, target, weight, self.cfg.triplet_margin)
        if species_logits is not None:
            loss = loss + self.cfg.species_weight * losses.species_loss(species_logits, species, weight)
        return loss
