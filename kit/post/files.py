"""What `scripts/blend.py` does with a recipe: `blend_files(path)` evaluates it (kit/post/pipeline.py),
prints the validation ablation, the fitted rule and the warnings, writes the test submission (checked)
and the pseudo-labels, all committed together with the caller's other outputs (the report)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pandas as pd

from kit.errors import KitError
from kit.io import Outputs, outputs, write_csv
from kit.metric import check_submission
from kit.post import new_whale_model, pseudo
from kit.post.evaluation import BlendRun, evaluate, pseudo_confidence, pseudo_evidence
from kit.post.inputs import Inputs
from kit.post.pipeline import Result
from kit.post.recipe import ALL_FOLDS, BlendRecipe

COSTS = "  COSTS: the whole interval lies below 0; leave the step out (or enabled: false)"
# on the test truth a cost is a measurement to report, never a reason to change the recipe (that is
# fitting on test): the decision is validation's
COSTS_ON_TEST = "  costs here (the test truth: measured, not for deciding; validation decides)"


def format_ablation(result: Result, title: str, on_test: bool = False) -> str:
    """The ablation table: the recipe's metric after each step, its gain and the gain's paired bootstrap
    95% interval; `on_test`: scored on the test truth (a step that costs there is said so, not advised against)."""
    costs = COSTS_ON_TEST if on_test else COSTS
    lines = [title, f"  {'step':<12} {result.scorer.title:>10} {'gain':>8}  {'95% interval':<18}"]
    for step, value, gain in result.step_gains():
        if gain is None:
            lines.append(f"  {step:<12} {value:10.4f}")
        else:
            note = "  (within the noise)" if not gain.significant else costs if gain.high < 0 else ""
            lines.append(f"  {step:<12} {value:10.4f} {gain.value:+8.4f}  [{gain.low:+.4f}, {gain.high:+.4f}]{note}")
    extra = [f"new_whale first in {result.new_whale_share:.1%} of images, at ranks 2-5 in "
             f"{result.new_whale_later_share:.1%}"]
    if result.threshold is not None:
        extra.append(f"threshold {result.threshold:.4g}")
    if result.pinned.shape[1]:
        extra.append(f"leak pinned {result.n_leaked} image(s)")
    if result.n_swapped:
        extra.append(f"balance swapped {result.n_swapped}")
    lines.append("  " + "; ".join(extra))
    return "\n".join(lines)


def _conflict_note(inputs: Inputs, recipe: BlendRecipe) -> str | None:
    step = recipe.steps.active("leak")
    if inputs.leak is None or step is None:
        return None
    c = inputs.leak.conflicts_within(step.max_distance)
    if not len(c):
        return None
    i, j, d = (int(v) for v in c[0])
    lk = inputs.leak
    lab = inputs.labels
    return (f"warning: {len(c)} pair(s) of train images within phash distance {step.max_distance} carry different "
            f"labels, e.g. {lk.ref_images[i]} ({lab[lk.ref_labels[i]]}) ~ {lk.ref_images[j]} ({lab[lk.ref_labels[j]]}), "
            f"distance {d}: most likely one photo filed twice; the leak gives a test copy of it either label. "
            f"Look at the pair; if it is one animal, give both rows one label in train.csv (or lower "
            f"steps.leak.max_distance if they are merely similar)")


def pseudo_gate(recipe: BlendRecipe, blend_run: "BlendRun") -> pseudo.Gate:
    """`pseudo.precision`'s cut, measured on the run's validation images (kit.post.pseudo.gate)."""
    if blend_run.val is None or blend_run.val[0].truth is None:
        raise KitError(f"{recipe.source}: pseudo.precision measures its cut on validation images with truth, and "
                       f"there are none ({blend_run.val_skipped or 'no truth'}); give pseudo.threshold")
    return pseudo.gate(*pseudo_evidence(recipe, *blend_run.val), recipe.pseudo.precision)


def blend_files(recipe_path: str | Path, echo: Callable[[str], None] = print, out: Outputs | None = None,
                diagnostics: bool = True) -> BlendRun:
    """Run a blend recipe: val ablation (printed), test submission and pseudo-labels (written
    atomically, only once everything has been checked). Returns the run (its `.summary`: the numbers).
    `out`: the caller's output set, to which the files are staged (the report joins them; nothing is
    in place before the caller commits it); without one they are written when this returns.
    `diagnostics`: compute what the report shows (blend.py --no-report does without)."""
    if out is None:
        with outputs(echo) as own:
            return blend_files(recipe_path, echo, own, diagnostics)
    blend_run = evaluate(recipe_path, diagnostics)
    recipe, summary = blend_run.recipe, blend_run.summary
    if blend_run.weights is not None:
        for line in blend_run.weights.lines():
            echo(line)
    _echo_validation(blend_run, echo)

    inputs, result = blend_run.test
    comp = inputs.competition
    if result.score_by_step:
        echo(format_ablation(result, f"test: {len(inputs.images)} images, scored against {comp.root / 'test_truth.csv'}",
                             on_test=True))
    note = _conflict_note(inputs, recipe)  # train duplicates with different labels: told once, from test's reference (all train)
    if note:
        echo(note)
    if inputs.leak is not None and recipe.steps.active("leak") is not None:
        summary["leak_conflicts"] = int(len(inputs.leak.conflicts_within(recipe.steps.leak.max_distance)))

    rows, threshold = _pseudo_labels(blend_run, echo)

    submission = comp.submission_frame(inputs.images, [labels[:inputs.metric.k] for labels in result.labels])
    write_csv(recipe.submission_path, submission, out, note=f"wrote {recipe.submission_path} ({len(submission)} images)")
    problems = check_submission(out.staged(recipe.submission_path), comp)
    if problems:
        raise KitError(f"{recipe.submission_path}: the submission would be invalid: {problems[0]}")
    summary["submission"] = str(recipe.submission_path)
    if rows is not None:
        right = pseudo.right_share(rows, comp.truth)  # a synthetic competition's test truth says how many are right
        write_csv(recipe.pseudo_path, rows, out,
                  note=f"wrote {recipe.pseudo_path} ({len(rows)} pseudo-labels, confidence > {threshold:.4g}"
                       + ("" if right is None else f"; {right:.0%} right by the test truth") + ")")
        summary["pseudo"] = str(recipe.pseudo_path)
        summary["pseudo_count"] = len(rows)
        summary["pseudo_right"] = right
    else:  # a previous run's pseudo-labels would be taken for this run's
        out.remove(recipe.pseudo_path, note=f"removed {recipe.pseudo_path}: a previous run's pseudo-labels "
                                            f"(this run selects none)")
    return blend_run


def _echo_validation(blend_run: BlendRun, echo: Callable[[str], None]) -> None:
    """The validation ablation, what was fitted there, and the bars' warnings."""
    recipe, summary = blend_run.recipe, blend_run.summary
    if blend_run.val is None:
        echo(f"val: skipped, {blend_run.val_skipped}")
        return
    inputs, result = blend_run.val
    where = "out-of-fold, every fold" if recipe.fold == ALL_FOLDS else f"fold {recipe.fold}"
    echo(format_ablation(result, f"val: {where}, {len(inputs.images)} images, {len(recipe.members)} member(s)"))
    fitted = summary["val"].get("fitted")
    title, key = inputs.metric.title, f"cross_validated_{inputs.metric.name}"
    if fitted is not None:
        if fitted["key"].endswith("model"):
            m = fitted["value"]
            echo(f"  new_whale by P(new), fitted on these {len(inputs.images)} images: logit = {m['bias']:+.3g}"
                 + "".join(f" {m[f]:+.3g} {f}" for f in new_whale_model.FEATURES)
                 + f"; P(identity) logit = {m['id_bias']:+.3g}" + "".join(f" {m[f]:+.3g} {f[3:]}" for f in new_whale_model.ID_FEATURES)
                 + f"; cross-fitted {title} {fitted[key]:.4f} (each part placed by a model "
                 f"fitted on the others: what to expect on new images)")
        else:
            what = "threshold" if fitted["key"].endswith("threshold") else "share"
            echo(f"  new_whale {what} {fitted['value']:.4g} fitted on these {len(inputs.images)} images; "
                 f"cross-validated {title} {fitted[key]:.4f} (each part scored by the {what} "
                 f"fitted on the others: what to expect on new images)")
    for line in blend_run.warnings:
        echo(line)


def _pseudo_labels(blend_run: BlendRun, echo: Callable[[str], None]) -> tuple[pd.DataFrame | None, float | None]:
    """(the test pseudo-labels above the recipe's cut, or None; the cut): `pseudo.threshold`, or the
    cut `pseudo.precision` measures on validation (its gate goes into the summary)."""
    recipe, summary = blend_run.recipe, blend_run.summary
    inputs, result = blend_run.test
    if not recipe.pseudo.enabled:
        return None, None
    top1 = result.top_codes[:, 0]
    confidence = pseudo_confidence(recipe, inputs, top1)
    threshold = recipe.pseudo.threshold
    if confidence is None:
        echo("pseudo-labels: none written, no member gives probabilities (see kit/post/pseudo.py)")
        return None, threshold
    if recipe.pseudo.precision is not None:
        gate = pseudo_gate(recipe, blend_run)
        echo(gate.line())
        summary["pseudo_gate"] = dataclasses.asdict(gate) | {"precision": gate.precision if gate.kept else None}
        threshold = gate.threshold
    if threshold is None:
        return None, None
    return pseudo.frame(inputs.images, inputs.labels, top1, result.top5[:, 0], confidence, threshold), threshold
