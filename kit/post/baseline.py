"""Is the blend better than doing nothing, and better than its best member? Said in one line when not.

Two bars, on the validation images:
- the trivial answer, the unknown label alone in every image: under MAP@5 it scores the unknown
  share of validation (about 0.31 in the 2019 scheme; under AnimalCLEF's balanced score, 0). Members that cannot tell the animals apart yet fall to
  it or below: their guesses push the unknown label down the list where it is right;
- the best member alone, with its own new_whale threshold.
A threshold fitted on the very images it is scored on always looks at least as good as the trivial
answer there, so every fitted rule (the blend's `fit`, each member's own threshold) is scored
cross-validated: each part of the images by the threshold fitted on the others (`tune.parts` parts,
`tune.seed`), which is what it will do on new images. A recipe with a fixed threshold or share is
scored as it runs. Each gap carries its paired bootstrap interval (kit/post/compare.py). The
bars are measured by `kit.post.fits.judge` (it runs recipes); here is what they say.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.metrics import Scorer
from kit.post.compare import Gain


@dataclass
class Bars:
    blend: np.ndarray  # each image's mark under the blend (cross-validated where it fits its threshold)
    trivial: np.ndarray  # under the unknown label alone
    over_trivial: Gain
    cross_validated: bool
    unknown: str
    scorer: Scorer  # the recipe's metric on these images
    best_member: str | None = None
    member: np.ndarray | None = None  # each image's mark under the best member alone (cross-validated)
    over_member: Gain | None = None
    first_share: float | None = None  # the unknown label's share of first places, when it is worth saying

    @property
    def score(self) -> float:
        """The blend's metric on these images."""
        return self.scorer.score(self.blend)

    def lines(self) -> list[str]:
        """What blend.py and tune.py print, and the report shows on top: nothing when the blend
        clears both bars."""
        how = ", cross-validated" if self.cross_validated else ""
        title, score = self.scorer.title, self.scorer.score
        out = []
        if not self.over_trivial.low > 0:
            first = (f", with {self.unknown} first in {self.first_share:.0%} of them" if self.first_share is not None
                     else "")
            out.append(
                f"warning: the blend scores {title} {score(self.blend):.4f} on validation ({len(self.blend)} images{how}"
                f"{first}), {'not significantly' if self.over_trivial.value > 0 else 'not'} above {self.unknown} "
                f"alone's {score(self.trivial):.4f} ({self.over_trivial}): its members cannot "
                f"tell these animals apart yet and their guesses only push {self.unknown} down the list; the members "
                f"are too weak: train longer (stages: [{{minutes: ...}}]) or from pretrained weights "
                f"(prepare.py --init --pretrained auto)")
        if self.over_member is not None and not self.over_member.value > 0:
            out.append(
                f"note: the blend scores {title} {score(self.blend):.4f} on validation{how and ' (cross-validated)'}, "
                f"not above its best member alone ({self.best_member}: {score(self.member):.4f}; {self.over_member}): "
                f"the other members add nothing on these images; tune.py weighs them, or leave them out")
        return out

    def to_dict(self) -> dict:
        score = self.scorer.score
        out = {"metric": self.scorer.name, "blend": score(self.blend), "trivial": score(self.trivial),
               "over_trivial": self.over_trivial.to_dict(), "cross_validated": self.cross_validated}
        if self.over_member is not None:
            out |= {"best_member": self.best_member, "member": score(self.member),
                    "over_member": self.over_member.to_dict()}
        return out
