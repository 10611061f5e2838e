"""softmax and sigmoid of logits / T: a logit view's own activations, with a temperature."""
from __future__ import annotations

from dataclasses import dataclass

from kit.config import Interval, Tuning, param
from kit.post.plugins import CALIBRATIONS, Calibration


@dataclass(frozen=True)
class TemperatureParams:
    temperature: float = param(1.0, check=Interval(0, None, "neither"), tune=Tuning(0.05, 20.0, log=True),
                               help="logits / T: above 1 flattens, below 1 sharpens")


class _Temperature(Calibration):
    """What softmax and sigmoid share: logits / T go to the kernel, and a probability comes out."""

    Params = TemperatureParams
    nonnegative = True

    @staticmethod
    def kernel_params(params) -> tuple[float, float]:
        return 1.0 / params.temperature, 0.0

    @staticmethod
    def yields_probability(kind: str) -> bool:
        return True


@CALIBRATIONS.register
class Softmax(_Temperature):
    name = "softmax"
    help = "softmax of the row's logits / T (a softmax or ArcFace head's probabilities)"
    kernel = "softmax"


@CALIBRATIONS.register
class Sigmoid(_Temperature):
    name = "sigmoid"
    help = "sigmoid of each logit / T (a sigmoid head's probabilities)"
    kernel = "sigmoid"
