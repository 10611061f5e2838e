"""The leak (2019): a test image whose perceptual hash matches a train image's takes its label first."""
from __future__ import annotations

from dataclasses import dataclass

from kit.config import Interval, Tuning, param
from kit.errors import KitError
from kit.post import leak
from kit.post.plugins import STEPS, Step, StepParams


@STEPS.register
class Leak(Step):
    name = "leak"
    order = 10
    help = "pin the labels of train images whose phash matches (kit/post/leak.py)"

    @dataclass(frozen=True)
    class Params(StepParams):
        max_distance: int = param(0, check=Interval(0, 64), tune=Tuning(0, 8),
                                  help="Hamming distance between 64-bit phashes; 0: identical hashes")

    @staticmethod
    def apply(state, params, inputs) -> None:
        if inputs.leak is None:
            raise KitError(f"steps.leak is on but {inputs.competition.root / 'hashes.csv'} was not there when the "
                           f"inputs were prepared")
        if params.max_distance > inputs.leak.search_distance:
            raise KitError(f"steps.leak.max_distance {params.max_distance} exceeds the distance the inputs were "
                           f"prepared for ({inputs.leak.search_distance}); pass leak_search_distance to prepare()")
        m = inputs.leak.matches
        state.pinned = leak.leak_labels_of(m.indptr, inputs.leak.label, m.distance, params.max_distance)
