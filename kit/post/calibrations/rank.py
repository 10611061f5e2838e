"""1 / (1 + rank) within the image's row: what a top-5 CSV member's labels get, for any scores."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.post.blend import reciprocal_rank
from kit.post.plugins import CALIBRATIONS, Calibration


@CALIBRATIONS.register
class Rank(Calibration):
    name = "rank"
    help = "1 / (1 + rank) within the image's row (rank 0 = best): scale-free, not a probability"
    nonnegative = True

    @dataclass(frozen=True)
    class Params:
        pass

    @staticmethod
    def transform(scores: np.ndarray, params) -> np.ndarray:
        return reciprocal_rank(scores)
