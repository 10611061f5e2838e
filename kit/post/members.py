"""The table that makes a blend decision possible: each member alone, the blend, the tuned blend.

Fair to the members: each one alone (in its natural calibration: softmax, sigmoid or affine, so its
top-1 score means something) gets its own new_whale threshold (or share, if the recipe's step is a
`proportion`), fitted exactly on the same tuning part of the validation images as the blend's; every row is then scored on the held-out part, which
no threshold or trial saw, and on the test truth where there is one. The claims compare the recipe
one would submit (the tuned one) with the best member (best on test: the hardest bar) and with the
untuned recipe, each with its paired bootstrap interval.
"""
from __future__ import annotations

import numpy as np

from kit.post import new_whale, pipeline
from kit.post.compare import Claim, MemberTable, Row, paired_gains
from kit.post.recipe import BlendRecipe

HELD_OUT, TEST = "held-out val", "test"


def with_own_threshold(recipe: BlendRecipe, inputs: pipeline.Inputs, rows: np.ndarray) -> BlendRecipe:
    """The recipe with its new_whale threshold, or its share for a `proportion` step, fitted exactly
    on `rows` of `inputs` (a threshold step added if the recipe has none)."""
    step = recipe.steps.new_whale
    if step is None or step.proportion is None:
        recipe = recipe.with_params({"steps.new_whale.threshold": 0.5, "steps.new_whale.enabled": True})
        threshold, _ = new_whale.best_threshold(pipeline.position_table(recipe, inputs).rows(rows))
        return recipe.with_params({"steps.new_whale.threshold": threshold})
    share, _ = new_whale.best_share(pipeline.position_table(recipe, inputs).rows(rows))
    return recipe.with_params({"steps.new_whale.proportion": share, "steps.new_whale.enabled": True})


def member_table(recipe: BlendRecipe, val: pipeline.Inputs, test: pipeline.Inputs | None, tune_idx: np.ndarray,
                 hold_idx: np.ndarray, tuned: BlendRecipe | None = None) -> MemberTable:
    """The table for a recipe whose weights are resolved (pipeline.with_weights on the tuning part)."""
    parts = {HELD_OUT: (val, hold_idx)}
    if test is not None and test.truth is not None:
        parts[TEST] = (test, np.arange(len(test.images)))

    def ap_of(r: BlendRecipe) -> dict[str, np.ndarray]:
        return {p: pipeline.run(r, inputs).ap[idx] for p, (inputs, idx) in parts.items()}

    rows = [Row("trivial: new_whale alone",
                {p: (inputs.truth[idx] == inputs.unknown_code).astype(float) for p, (inputs, idx) in parts.items()})]
    members = []
    for i, m in enumerate(recipe.members):
        if val.members[i] is None or (test is not None and test.members[i] is None):
            continue
        alone = recipe.only_member(i)
        if m.scored:
            alone = alone.with_params({f"members.{i}.calibration": {"method": "auto"}})
        members.append(Row(f"member {m.name} (own threshold)", ap_of(with_own_threshold(alone, val, tune_idx))))
    rows += members
    blends = [Row("blend, untuned recipe", ap_of(recipe)),
              Row("blend, threshold only", ap_of(with_own_threshold(recipe, val, tune_idx)))]
    if tuned is not None:
        blends.append(Row("blend, tuned by Optuna", ap_of(tuned)))
    rows += blends

    # the claims: the recipe one submits (the tuned one, else the untuned) against the best member
    # (best on the judging part: the hardest bar), and the tuned against the untuned
    final = blends[2] if tuned is not None else blends[0]
    pairs = []
    if members:
        best_member = max(members, key=lambda r: r.map5(TEST if TEST in parts else HELD_OUT))
        pairs += [(final, best_member, part) for part in parts]
    if tuned is not None:
        pairs += [(final, blends[0], part) for part in parts]
    claims = []
    for part in parts:
        mine = [(b, w) for b, w, p in pairs if p == part]
        for (b, w), gain in zip(mine, paired_gains([(b.ap[part], w.ap[part]) for b, w in mine])):
            claims.append(Claim(b.what, w.what, part, gain))
    return MemberTable(rows, {p: len(idx) for p, (_, idx) in parts.items()}, claims)
