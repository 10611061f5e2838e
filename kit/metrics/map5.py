"""Kaggle's MAP@5 (the humpback competitions of 2018 and 2019, Happywhale 2022): one true label
per image; an image scores 1/rank of the first correct label among its first five, else 0; the
unknown label scored like any other, a repeated label still using up its rank (kit.metric)."""
from __future__ import annotations

import numpy as np

from kit.metric import average_precision
from kit.metrics import METRICS, Metric


@METRICS.register
class MAP5(Metric):
    name = "map5"
    title = "MAP@5"
    help = "Kaggle's MAP@5: 1/rank of the first right label among five, averaged over images"
    k = 5
    credit = (1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5)

    @staticmethod
    def per_image(top: np.ndarray, truth: np.ndarray) -> np.ndarray:
        return average_precision(top, truth)
