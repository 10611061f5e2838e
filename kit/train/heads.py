"""Identity heads: pooled backbone features -> (logits, embedding).

Every head shares the neck of the winning softmax classifiers, flatten -> BN -> dropout -> FC -> BN,
whose output is the embedding (before L2 normalisation); they differ in the final layer:

- `softmax`: a linear classifier, trained with cross-entropy;
- `arcface`: cosine of the L2-normalised embedding to L2-normalised class weights, times the scale
  s. The head outputs s*cos(theta) without the margin (the margin lives in the loss), so a softmax
  of what it exports is a probability;
- `sigmoid`: one logit per identity ("a 2-class problem for every whale"), trained with BCE over
  the hardest negatives.

A head is picked by name from `HEADS`; its loss from `kit.train.losses.LOSSES` by the same name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    """Softmax or sigmoid head: a linear layer over the embedding (the loss tells them apart)."""

    def __init__(self, in_features: int, num_outputs: int, embedding_dim: int, dropout: float, **_):
        super().__init__()
        self.neck = Neck(in_features, embedding_dim, dropout)
        self.classifier = nn.Linear(embedding_dim, num_outputs)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.neck(features)
        return self.classifier(embedding), embedding


class ArcFaceHead(nn.Module):
    """s * cos(embedding, class weight); the angular margin is added by the loss, in training only."""

    def __init__(self, in_features: int, num_outputs: int, embedding_dim: int, dropout: float, scale: float = 64.0, **_):
        super().__init__()
        self.neck = Neck(in_features, embedding_dim, dropout)
        self.weight = nn.Parameter(torch.empty(num_outputs, embedding_dim))
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
        return F.linear(F.normalize(embedding.float(), dim=1), F.normalize(self.weight.float(), dim=1))


HEADS: dict[str, type[nn.Module]] = {"softmax": LinearHead, "sigmoid": LinearHead, "arcface": ArcFaceHead}
ACTIVATION = {"softmax": "softmax", "arcface": "softmax", "sigmoid": "sigmoid"}
