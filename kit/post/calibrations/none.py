"""The scores as they are: for prediction sets of probabilities (`prob`)."""
from __future__ import annotations

from dataclasses import dataclass

from kit.post.plugins import CALIBRATIONS, Calibration


@CALIBRATIONS.register
class Identity(Calibration):
    name = "none"
    help = "the scores as they are (a `prob` set's probabilities)"

    @dataclass(frozen=True)
    class Params:
        pass

    @staticmethod
    def yields_probability(kind: str) -> bool:
        return kind == "prob"
