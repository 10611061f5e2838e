"""The 1st place's label balance (2019): swap top-1 and top-2 where the top-1 identity is over-predicted."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.config import Interval, Tuning, param
from kit.post import balance
from kit.post.plugins import STEPS, Step, StepParams


@STEPS.register
class Balance(Step):
    name = "balance"
    order = 30
    help = "swap top-1 and top-2 of an over-predicted identity's images (kit/post/balance.py)"

    @dataclass(frozen=True)
    class Params(StepParams):
        margin: float = param(0.3, check=Interval(0), tune=Tuning(0.0, 1.0),
                              help="swap only where the top-1 and top-2 scores differ by less")
        min_count: int = param(2, check=Interval(1), tune=Tuning(1, 10),
                               help="swap away from an identity only while it is the top-1 of at least this many images")

    @staticmethod
    def apply(state, params, inputs) -> None:
        first = state.pinned[:, 0] if state.pinned.shape[1] else np.full(len(state.top), -1, np.int64)
        state.swap = balance.swap_top2(state.top, state.scores, first, params.margin, params.min_count,
                                       len(inputs.labels))
