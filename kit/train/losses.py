"""Losses over (logits, embedding, target): one per head (kit/train/heads.py binds them), plus an optional triplet term.

Targets are column indices: 0..K-1, K..2K-1 for flipped twins, -1 for the unknown label (a
negative for every identity; only the sigmoid loss uses it). `weight` is 0 for rows that must not
count (a bad image). With flip twins, the twin column of a row's target is masked out: an image
and its mirror are different identities, but nothing should push their scores apart.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kit.train.recipe import HeadCfg

NEG = -1e4  # a masked logit: exp() underflows to 0 in float32


def twin_mask(target: torch.Tensor, num_outputs: int, flip_twins: bool) -> torch.Tensor:
    """(B, C) bool: True at the flipped twin of each row's target column (none without twins)."""
    mask = torch.zeros(len(target), num_outputs, dtype=torch.bool, device=target.device)
    if flip_twins:  # a scatter, not an index by nonzero(): nothing here waits for the GPU
        twin = (target.clamp(min=0) + num_outputs // 2) % num_outputs
        mask.scatter_(1, twin[:, None], (target >= 0)[:, None])
    return mask


def _weighted_mean(per_row: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (per_row * weight).sum() / weight.sum().clamp(min=1.0)


def softmax_loss(logits, target, weight, mask, cfg: HeadCfg, flip_twins: bool = False) -> torch.Tensor:
    logits = logits.float().masked_fill(mask, NEG)
    weight = weight * (target >= 0)
    per_row = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
    return _weighted_mean(per_row, weight)


def dynamic_margins(counts: np.ndarray, cfg: HeadCfg) -> np.ndarray | None:
    """Each column's margin, a * n ** -lambda + m (n: its training images, at least 1); None with
    margin_a = 0 (one margin for all)."""
    if cfg.margin_a == 0:
        return None
    n = np.maximum(np.asarray(counts, np.float64), 1.0)
    return np.minimum(cfg.margin_a * n ** -cfg.margin_lambda + cfg.margin, 1.5).astype(np.float32)  # < pi/2


def arcface_loss(logits, target, weight, mask, cfg: HeadCfg, flip_twins: bool = False,
                 margins: torch.Tensor | None = None) -> torch.Tensor:
    """Additive angular margin on the target column: s*cos(theta + m) (ArcFace, Deng et al. 2019);
    `margins`: one per column (dynamic margins), else cfg.margin for every column."""
    s = cfg.scale
    cosine = (logits.float() / s).clamp(-1 + 1e-7, 1 - 1e-7)
    sine = torch.sqrt(1.0 - cosine * cosine)
    if margins is None:
        m = cfg.margin
        phi = cosine * math.cos(m) - sine * math.sin(m)
        # past theta = pi - m, cos(theta + m) stops decreasing: use the linear fallback of insightface
        phi = torch.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
    else:  # the same, with each row's target margin
        m = margins.to(cosine.device)[target.clamp(min=0)][:, None]
        phi = cosine * torch.cos(m) - sine * torch.sin(m)
        phi = torch.where(cosine > torch.cos(math.pi - m), phi, cosine - torch.sin(math.pi - m) * m)
    known = target >= 0
    onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).bool() & known[:, None]
    margined = torch.where(onehot, phi, cosine) * s
    return softmax_loss(margined, target, weight, mask, cfg)


def sigmoid_loss(logits, target, weight, mask, cfg: HeadCfg, flip_twins: bool = False) -> torch.Tensor:
    """BCE on the target logit plus BCE over the k hardest negatives (unknown rows: negatives only)."""
    logits = logits.float()
    known = target >= 0
    positive = F.one_hot(target.clamp(min=0), logits.shape[1]).bool() & known[:, None]
    negatives = logits.masked_fill(positive | mask, NEG)  # not -inf: BCE(-inf, 0) is NaN
    # every row has C - 1 negatives, C - 2 with flip twins (its twin masked): k fixed, no GPU sync
    k = min(cfg.hard_negatives, logits.shape[1] - 1 - int(flip_twins))
    hardest = negatives.topk(max(k, 1), dim=1).values
    neg_loss = F.binary_cross_entropy_with_logits(hardest, torch.zeros_like(hardest), reduction="none").mean(1)
    pos_logit = logits.gather(1, target.clamp(min=0)[:, None]).squeeze(1)
    pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit), reduction="none") * known
    return _weighted_mean(pos_loss + neg_loss, weight)


def triplet_loss(embedding, target, weight, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on L2-normalised embeddings (Hermans et al. 2017).

    Anchors are known rows with another row of the same target in the batch; unknown rows (-1)
    are negatives only (two new_whale images are not the same animal).
    """
    emb = F.normalize(embedding.float(), dim=1)
    dist = torch.cdist(emb, emb)
    valid = weight > 0
    same = (target[:, None] == target[None, :]) & (target[:, None] >= 0)
    same &= valid[:, None] & valid[None, :]
    same.fill_diagonal_(False)
    different = (target[:, None] != target[None, :]) | (target[:, None] < 0)
    different &= valid[:, None] & valid[None, :]
    different.fill_diagonal_(False)
    anchors = same.any(1) & different.any(1)
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(1).values
    hardest_neg = dist.masked_fill(~different, float("inf")).min(1).values
    per_row = torch.where(anchors, F.relu(hardest_pos - hardest_neg + margin), 0.0)
    # the mean over anchors (0 without any), the graph kept whole for DDP's hooks, no GPU sync
    return per_row.sum() / anchors.sum().clamp(min=1) + embedding.sum() * 0.0


def species_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the auxiliary species head over the rows with a species (target >= 0)."""
    weight = weight * (target >= 0)
    per_row = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    return _weighted_mean(per_row, weight)
