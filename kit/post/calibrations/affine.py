"""Platt scaling: sigmoid(scale * x + shift), meant for cosines (cos 0.5 -> 0.5, 0.8 -> 0.95 by default)."""
from __future__ import annotations

from dataclasses import dataclass

from kit.config import Tuning, param
from kit.post.plugins import CALIBRATIONS, Calibration


@CALIBRATIONS.register
class Affine(Calibration):
    name = "affine"
    help = "sigmoid(scale * x + shift): Platt scaling, for cosines"
    kernel = "affine"
    nonnegative = True

    @dataclass(frozen=True)
    class Params:
        scale: float = param(10.0, tune=Tuning(1.0, 60.0, log=True), help="the slope")
        shift: float = param(-5.0, tune=Tuning(-50.0, 0.0), help="the offset: -scale / 2 maps 0.5 to 0.5")

    @staticmethod
    def kernel_params(params) -> tuple[float, float]:
        return params.scale, params.shift

    @staticmethod
    def yields_probability(kind: str) -> bool:
        return True
