"""The table that makes a blend decision possible: each member alone, the blend, the tuned blend.

Fair to the members: each one alone (in its natural calibration: softmax, sigmoid or affine, so its
top-1 score means something) gets its own new_whale threshold (or share, if the recipe's step is a
`proportion`), fitted exactly on the same tuning part of the validation images as the blend's; every row is then scored on the held-out part, which
no threshold or trial saw, and on the test truth where there is one. The claims compare the recipe
one would submit (the tuned one) with the best member (best on test: the hardest bar) and with the
untuned recipe, each with its paired bootstrap interval.

`member_table_for(recipe, tuned)` makes the table from a recipe the demo's way (for `scripts/blend.py
--members`); `tuned_beside(path)` finds the tuned recipe tune.py wrote beside it, if tune.py made it
from that recipe as it is now.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kit import ranking
from kit.errors import KitError
from kit.post import fits, pipeline
from kit.post.compare import Claim, MemberTable, Row, holdout_split, paired_gains
from kit.post.inputs import Inputs, member_key, prepare, val_skip_reason
from kit.post.recipe import BlendRecipe, load_recipe
from kit.tune.space import search_space
from kit.tune.study import study_name_for

HELD_OUT, TEST = "held-out val", "test"


def with_own_threshold(recipe: BlendRecipe, inputs: Inputs, rows: np.ndarray) -> BlendRecipe:
    """The recipe with its new_whale threshold, or its share for a `proportion` step, fitted exactly
    on `rows` of `inputs` (a threshold step added if the recipe has none)."""
    step = recipe.steps.new_whale
    if step is None or step.proportion is None:
        recipe = recipe.with_params({"steps.new_whale.threshold": 0.5, "steps.new_whale.enabled": True})
        threshold, _ = ranking.best_threshold(pipeline.position_table(recipe, inputs).rows(rows), None,
                                              inputs.scorer.rows(rows))
        return recipe.with_params({"steps.new_whale.threshold": threshold})
    share, _ = ranking.best_share(pipeline.position_table(recipe, inputs).rows(rows), None, inputs.scorer.rows(rows))
    return recipe.with_params({"steps.new_whale.proportion": share, "steps.new_whale.enabled": True})


def member_table(recipe: BlendRecipe, val: Inputs, test: Inputs | None, tune_idx: np.ndarray,
                 hold_idx: np.ndarray, tuned: BlendRecipe | None = None, threshold_row: bool = True) -> MemberTable:
    """The table for a recipe whose weights (and new_whale fit) are resolved on the tuning part
    (pipeline.with_weights, fits.fit_new_whale). `threshold_row`: the blend with only its
    threshold fitted (a recipe that fits it already is that row)."""
    parts = {HELD_OUT: (val, hold_idx)}
    if test is not None and test.truth is not None:
        parts[TEST] = (test, np.arange(len(test.images)))

    scorers = {p: inputs.scorer.rows(idx) for p, (inputs, idx) in parts.items()}

    def row(what: str, r: BlendRecipe) -> Row:
        return Row(what, {p: pipeline.run(r, inputs).marks[idx] for p, (inputs, idx) in parts.items()}, scorers)

    unknown = val.labels[val.unknown_code]
    rows = [Row(f"trivial: {unknown} alone", {p: scorers[p].unknown_everywhere() for p in parts}, scorers)]
    members = []
    for i, m in enumerate(recipe.members):
        if val.members[i] is None or (test is not None and test.members[i] is None):
            continue
        alone = recipe.only_member(i)
        if m.scored:  # in its own calibration, fitted on the tuning part where it is fitted
            alone = fits.fit_calibrations(alone.with_params({f"members.{i}.calibration": {"method": "auto"}}),
                                              val, tune_idx)
        members.append(row(f"member {m.name} (own threshold)", with_own_threshold(alone, val, tune_idx)))
    rows += members
    untuned = row("blend, untuned recipe", recipe)
    blends = [untuned]
    if threshold_row:
        blends.append(row("blend, threshold only", with_own_threshold(recipe, val, tune_idx)))
    if tuned is not None:
        blends.append(row("blend, tuned by Optuna", tuned))
    rows += blends

    # the claims: the recipe one submits (the tuned one, else the untuned) against the best member
    # (best on the judging part: the hardest bar), and the tuned against the untuned
    final = blends[-1] if tuned is not None else untuned
    pairs = []
    if members:
        best_member = max(members, key=lambda r: r.score(TEST if TEST in parts else HELD_OUT))
        pairs += [(final, best_member, part) for part in parts]
    if tuned is not None:
        pairs += [(final, untuned, part) for part in parts]
    claims = []
    for part in parts:
        mine = [(b, w) for b, w, p in pairs if p == part]
        for (b, w), gain in zip(mine, paired_gains([(b.marks[part], w.marks[part]) for b, w in mine], scorers[part])):
            claims.append(Claim(b.what, w.what, part, gain))
    return MemberTable(rows, {p: len(idx) for p, (_, idx) in parts.items()}, claims, val.scorer.title)


# ------------------------------------------------------------------------ from a recipe (blend.py --members)
# the first line tune.py writes on top of blends/<name>.tuned.yaml (kit/tune/study.py, save_recipe's note)
_TUNED_HEAD = re.compile(r"^# Tuned by scripts/tune\.py from .* \(\d+ trials, study (.+)\)\.$")


def check_member_table(recipe: BlendRecipe) -> None:
    """A KitError unless the recipe has what the table needs: a validation split and a held-out part
    of it (`tune.holdout` > 0). Cheap: reads no prediction set."""
    reason = val_skip_reason(recipe)
    if reason:
        raise KitError(f"{recipe.source}: the member table needs the validation split: {reason}")
    if recipe.tune.holdout <= 0:
        raise KitError(f"{recipe.source}: the member table needs a held-out part of the validation images to score on "
                       f"(tune.holdout is 0): set tune.holdout, e.g. 0.3")


def check_tuned(recipe: BlendRecipe, tuned: BlendRecipe) -> None:
    """A KitError unless `tuned` can stand as the tuning of `recipe`: the same competition, fold and
    members, and the same held-out part (tune.holdout, tune.seed)."""
    why = None
    if (tuned.data, tuned.fold) != (recipe.data, recipe.fold):
        why = f"data {tuned.data} fold {tuned.fold}, not {recipe.data} fold {recipe.fold}"
    elif [member_key(m) for m in tuned.members] != [member_key(m) for m in recipe.members]:
        why = "its members differ"
    elif (tuned.tune.holdout, tuned.tune.seed) != (recipe.tune.holdout, recipe.tune.seed):
        why = (f"tuned with tune.holdout {tuned.tune.holdout:g}, seed {tuned.tune.seed}; the recipe holds out "
               f"{recipe.tune.holdout:g} with seed {recipe.tune.seed}")
    if why:
        raise KitError(f"{tuned.source}: not a tuning of {recipe.source}: {why}")


def tuned_origin(recipe_path: str | Path, tuned_path: str | Path) -> str | None:
    """None if tune.py made `tuned_path` from the recipe at `recipe_path` as it is now, else why not
    (in words).

    Decided by the study the tuned file names on its first line: tune.py's default study name is the
    recipe's name plus a digest of the whole recipe, its search space, tune.holdout and the split
    seed (`study_name_for`). If the recipe would make that very name today, the tuned recipe came
    from it, with the same held-out part. A recipe edited since, a `--seed` other than tune.seed or a
    `--study` of one's own give another name."""
    lines = Path(tuned_path).read_text().splitlines()
    head = _TUNED_HEAD.match(lines[0]) if lines else None
    if head is None:
        return f"{tuned_path} does not say which study made it"
    recipe = load_recipe(recipe_path)
    try:
        expected = study_name_for(recipe, search_space(recipe), recipe.tune.holdout, recipe.tune.seed)
    except KitError as e:  # a tune: section tune.py would refuse: it never tuned this recipe
        return str(e)
    if head.group(1) != expected:
        return (f"{tuned_path} comes from study {head.group(1)}; {recipe_path} as it is now makes study {expected}: "
                f"edited since, or tuned with another --seed or --study")
    return None


def load_tuned(path: str | Path, recipe_path: str | Path) -> tuple[BlendRecipe, str]:
    """A tuned recipe the user names (`--tuned PATH`), checked by `check_tuned` (a KitError), and one
    line that says whether tune.py made it from this recipe as it is now."""
    recipe, tuned = load_recipe(recipe_path), load_recipe(path)
    check_tuned(recipe, tuned)
    why = tuned_origin(recipe_path, path)
    return tuned, f"tuned row: {path} (--tuned; " + (why or f"tuned from {recipe_path} as it is now") + ")"


def tuned_beside(recipe_path: str | Path) -> tuple[BlendRecipe | None, str]:
    """The tuned recipe tune.py wrote beside the recipe (`<stem>.tuned.yaml`) if tune.py made it from
    this recipe as it is now (`tuned_origin`), and one line that says which, or why none."""
    recipe_path = Path(recipe_path)
    path = recipe_path.with_name(f"{recipe_path.stem}.tuned.yaml")  # as kit/tune/study.py names it
    if not path.is_file():
        return None, f"tuned row: none ({path} not found: python scripts/tune.py {recipe_path} makes it)"
    why = tuned_origin(recipe_path, path)
    if why:
        return None, f"tuned row: none ({why}; --tuned {path} includes it anyway)"
    tuned = load_recipe(path)
    try:
        check_tuned(load_recipe(recipe_path), tuned)
    except KitError as e:  # edited by hand since
        return None, f"tuned row: none ({e})"
    return tuned, f"tuned row: {path} (tuned from {recipe_path} as it is now)"


def member_table_for(recipe: BlendRecipe | str | Path, tuned: BlendRecipe | None = None) -> MemberTable:
    """The member table of a recipe (a path, or a recipe as loaded, weights not yet resolved): val and
    test prepared, val split by `holdout_split` on tune.holdout and tune.seed (the tuner's own split),
    automatic weights resolved on the tuning part, then `member_table`. `tuned`: its tuned recipe
    for the tuned row (checked by `check_tuned`), or None for no tuned row."""
    if not isinstance(recipe, BlendRecipe):
        recipe = load_recipe(recipe)
    check_member_table(recipe)
    if tuned is not None:
        check_tuned(recipe, tuned)
    val, test = prepare(recipe, "val"), prepare(recipe, "test")
    tune_idx, hold_idx = holdout_split(val.truth, val.unknown_code, recipe.tune.holdout, recipe.tune.seed)
    if not len(hold_idx) or not len(tune_idx):
        raise KitError(f"{recipe.source}: tune.holdout {recipe.tune.holdout:g} of {len(val.images)} validation images "
                       f"leaves {len(tune_idx)} to fit thresholds on and {len(hold_idx)} to score: the table needs both")
    if tuned is not None:
        # what it fits, fitted on the tuning part like the untuned recipe (a kept recipe is written as
        # written); a no-op for an accepted tuning, whose values are all given
        tuned = fits.resolve(tuned, val, tune_idx)
    fitted = pipeline.fitted_key(recipe) is not None
    resolved = fits.resolve(recipe, val, tune_idx)
    return member_table(resolved, val, test, tune_idx, hold_idx, tuned, threshold_row=not fitted)
