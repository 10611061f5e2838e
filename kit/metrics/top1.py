"""Top-1 accuracy with an unknown label: the share of images whose first label is their truth
(the unknown label for an animal new to the gallery). The metric of a challenge that asks for one
label per image and weighs every image alike."""
from __future__ import annotations

import numpy as np

from kit.metrics import METRICS, Metric


@METRICS.register
class Top1(Metric):
    name = "top1"
    title = "top-1"
    help = "the share of images whose first label is right, the unknown label included"
    k = 1
    credit = (1.0, 0.0, 0.0, 0.0, 0.0)

    @staticmethod
    def per_image(top: np.ndarray, truth: np.ndarray) -> np.ndarray:
        top = np.asarray(top)
        if top.shape[1] == 0:
            return np.zeros(len(top))
        return (top[:, 0] == np.asarray(truth)).astype(np.float64)
