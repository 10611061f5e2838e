"""What a recipe needs to know about a head, without torch: its name, the activation that turns its
exported logits into probabilities, and whether unknown-label rows train it by default.

The torch heads (kit/train/heads.py) register against these facts, as timm keeps its model registry
a leaf: a recipe is checked and resolved (`head: {type: ...}`, `sampling.unknown: auto`) by reading
this table, never by importing the networks. A new head: its facts here (or `FACTS.register` in the
file that defines it, before the class), then its class in heads.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from kit.config import Registry


@dataclass(frozen=True)
class HeadFacts:
    name: str
    activation: str  # "softmax" or "sigmoid": what turns the exported logits into probabilities
    learns_unknown: bool  # unknown-label rows train it by default (sampling.unknown: auto)


FACTS = Registry("head")
FACTS.register(HeadFacts("arcface", "softmax", False))  # s * cos is a logit: its softmax is a probability
FACTS.register(HeadFacts("softmax", "softmax", False))
FACTS.register(HeadFacts("sigmoid", "sigmoid", True))  # an unknown image is a negative for every identity
