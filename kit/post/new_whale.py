"""new_whale: where the unknown label goes into each image's ranking.

Two sources, the earlier wins:
- The vote. Top-5 CSV members vote for the unknown label like for any label (kit/post/blend.py);
  the blended vote v is a score like an identity's: the unknown label goes before the first
  identity scoring at most v (`vote_positions`; on a tie it goes first: it is the commonest label).
  No vote (v = 0), no position.
- The step, the 3rd place's rule: the unknown label is inserted before the first candidate whose
  blended score is below a threshold t; equivalently, a constant column of value t joins the scores
  (a candidate scoring exactly t stays ahead of it). `insert_positions` gives, per image, how many
  ranked candidates come before it. By proportion: t is chosen so that a share p of images has the
  unknown label first (3rd place: p = 0.276 on the 2019 test set), counting the images where the
  vote already put it first; with tied scores the share can fall short of p, never exceed it.
The step only moves the unknown label earlier than the vote placed it, never later. The leak runs
first and pins its labels before the model's ranking, so the final new_whale-first share also moves
with the leak (`Result.new_whale_share` reports it).

Choosing t or a share, exactly, on images with truth: kit/ranking.py (`best_threshold`, `best_share`,
`cross_validated`), which also holds `insert_positions` and the one top-5 builder, `assemble`.
"""
from __future__ import annotations

import numpy as np

from kit.ranking import threshold_for_proportion


def vote_positions(top_scores: np.ndarray, vote: np.ndarray) -> np.ndarray:
    """Per image, where the blended vote puts the unknown label: before the first candidate scoring
    at most the vote; -1 where there is no vote."""
    at = (top_scores > vote[:, None]).sum(axis=1).astype(np.int64)
    return np.where(vote > 0, at, -1)


def combine(vote_at: np.ndarray, step_at: np.ndarray) -> np.ndarray:
    """The earlier of the vote's and the step's positions (-1: none)."""
    return np.where(vote_at >= 0, np.minimum(vote_at, step_at), step_at)


def threshold_of(step, top1: np.ndarray, first_by_vote: np.ndarray | None = None) -> float:
    """The threshold a NewWhaleStep asks for: its own, or the one its proportion implies (the images
    where the vote already put the unknown label first count towards the share)."""
    if step.proportion is not None:
        first = np.zeros(len(top1), bool) if first_by_vote is None else first_by_vote
        return threshold_for_proportion(top1[~first], step.proportion, int(first.sum()))
    return float(step.threshold)


