"""Test-time augmentation: the original and its horizontal flip, folded back to K identities.

A flip-as-new-identity member (the 1st place's trick: a mirrored fluke is another animal) has
2K logit columns; column K + k is "identity k, mirrored". Its flipped image is therefore read
against the twin block and averaged with the original's own block:

    score[:, k] = (logits(x)[:, k] + logits(flip(x))[:, K + k]) / 2

A member trained with flips as plain augmentation has K columns and averages the two views
column by column. Either way the prediction set has K identity columns, never the twins.
Averaging is done on logits (the set's kind is "logit"); the blender applies the activation.
"""
from __future__ import annotations

import numpy as np


def hflip(batch: np.ndarray) -> np.ndarray:
    """Mirror a B x C x H x W batch left to right (the box crop and resize commute with it)."""
    return np.ascontiguousarray(batch[..., ::-1])


def fold_logits(orig: np.ndarray, flipped: np.ndarray | None, flip_twins: bool) -> np.ndarray:
    """(N, K) identity logits from the original's and (optionally) the flipped image's logits."""
    if flip_twins:
        if orig.shape[1] % 2:
            raise ValueError(f"a flip-twin member needs 2K logit columns, got {orig.shape[1]}")
        k = orig.shape[1] // 2
        own = orig[:, :k]
        return own.copy() if flipped is None else (own + flipped[:, k:]) / 2
    return orig.copy() if flipped is None else (orig + flipped) / 2


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def merge_embeddings(orig: np.ndarray, flipped: np.ndarray | None) -> np.ndarray:
    """The TTA embedding of a member whose flips are augmentation: mean of the two unit vectors."""
    e = l2_normalise(orig)
    return e if flipped is None else l2_normalise(e + l2_normalise(flipped))
