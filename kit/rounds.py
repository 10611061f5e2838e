"""Pseudo-label rounds in one command: retrain every member with the last round's pseudo-labels,
export, blend, select again; N times (Happywhale 2022: the 1st place's two rounds, +0.011 then
+0.005; the 2nd place's five at confidence 0.8, 0.812 -> 0.870).

Round 0 is the blend recipe as it is (its members trained and exported). Round r trains, for each
member `models/<m>/`, `models/<m>-pl<r>/` from the recipe it ran with plus `extra_train:` the
pseudo-labels round r-1 wrote (`<output>/<name>[-pl<r-1>].pseudo.csv`, the recipe's
`pseudo.threshold` or `pseudo.precision` deciding which test images), exports it, and blends `blends/<name>-pl<r>.yaml`
(the recipe with those members). Pseudo-labels are test images only, and an identity a fold holds
out is left out of that fold's training (kit.train.data.read_extra), so validation stays honest.
Every stage resumes: a trained round is reused, a fresh export skipped; `--force` starts over.

The table: each round's score (the recipe's metric) on validation and on the test truth (synthetic competitions), and
its gain over round 0 with the paired bootstrap interval; on a synthetic competition also the share
of each round's pseudo-labels the test truth confirms, which is what the next round's gain follows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from kit.errors import KitError
from kit.export.layout import member_recipe
from kit.export.member import export_member
from kit.post.compare import Gain
from kit.post.files import blend_files
from kit.post.pipeline import Result, gain_over
from kit.post.recipe import BlendRecipe, load_recipe, save_recipe
from kit.train.loop import train

SUFFIX = "-pl"


@dataclass
class Round:
    round: int
    recipe: Path
    pseudo_labels_trained: int  # the pseudo-labels this round's members trained with (0 for round 0)
    pseudo_labels_written: int  # what it selected for the next round
    val: Result | None  # the round's blend on validation (its marks and metric)
    test: Result  # and on test (scored where the competition has a test truth)
    val_gain: Gain | None = None  # over round 0
    test_gain: Gain | None = None
    pseudo_right: float | None = None  # the share of what it selected that the test truth confirms (synthetic)
    gate: dict | None = None  # pseudo.precision's cut as measured on validation (kit.post.pseudo.Gate)

    @property
    def pseudo_estimated(self) -> float | None:
        """The precision of its selection as validation measured it (pseudo.precision), or None."""
        return None if self.gate is None else self.gate.get("precision")

    @property
    def val_score(self) -> float | None:
        """The recipe's metric on validation."""
        return None if self.val is None else self.val.score

    @property
    def test_score(self) -> float | None:
        return self.test.score


def round_recipe(recipe: BlendRecipe, r: int) -> BlendRecipe:
    """Round r's blend recipe: every scored member `models/<m>` replaced by `models/<m>-pl<r>`."""
    params = {f"members.{i}.model": str(Path(m.model).with_name(Path(m.model).name + f"{SUFFIX}{r}"))
              for i, m in enumerate(recipe.members) if m.scored}
    return recipe.with_params({**params, "name": f"{recipe.name}{SUFFIX}{r}"})


MAX_ROUNDS = 10  # the 2nd place of Happywhale ran 5


def pseudo_rounds(recipe_path: str | Path, rounds: int, *, force: bool = False, echo: Callable[[str], None] = print,
                  progress: bool = False) -> list[Round]:
    """Round 0 (the recipe) and `rounds` rounds of retraining with pseudo-labels; see the module."""
    if not 1 <= rounds <= MAX_ROUNDS:  # each round retrains every member: a typo of 20 would run for days
        raise KitError(f"--rounds must be 1 to {MAX_ROUNDS}, got {rounds}")
    base = load_recipe(recipe_path)
    if not base.pseudo.enabled:
        raise KitError(f"{base.source}: pseudo is off (pseudo.enabled: false); rounds need its pseudo-labels")
    if not any(m.scored for m in base.members):
        raise KitError(f"{base.source}: no trained member to retrain (only top-5 CSV members)")
    quiet = (lambda line: None)
    echo(f"round 0: {recipe_path}")
    out = [_measured(0, Path(recipe_path), blend_files(recipe_path, echo=quiet, diagnostics=False), 0)]
    previous = base
    for r in range(1, rounds + 1):
        pseudo = Path(previous.pseudo_path)
        gate = out[-1].gate
        if gate is not None and gate.get("threshold") is None:  # pseudo.precision: no cut reaches it
            echo(f"round {r}: not run: round {r - 1}'s pseudo-labels cannot reach precision {base.pseudo.precision:g} "
                 f"on validation; training on them would train on noise")
            break
        if pseudo.is_file() and out[-1].pseudo_labels_written == 0:
            cut = gate["threshold"] if gate else base.pseudo.threshold
            echo(f"round {r}: not run: round {r - 1} selected no pseudo-label above its cut (pseudo.threshold "
                 f"{cut:g}); there is nothing new to train on")
            break
        if not pseudo.is_file():
            cut = (f"pseudo.threshold {base.pseudo.threshold:g}" if base.pseudo.precision is None
                   else f"the cut of pseudo.precision {base.pseudo.precision:g}")
            raise KitError(f"{pseudo}: round {r - 1} selected no pseudo-labels (no member gives probabilities, or "
                           f"none above {cut})")
        trained_with = max(sum(1 for _ in pseudo.open()) - 1, 0)
        echo(f"round {r}: retraining with {trained_with} pseudo-labels from {pseudo}")
        current = round_recipe(base, r)
        retrain = {m.model: new.model for m, new in zip(base.members, current.members) if m.scored}
        for source, target in retrain.items():  # a model once, however many of its views the blend has
            _retrain(Path(source), Path(target), pseudo, force, echo, progress)
        path = Path(recipe_path).with_name(f"{current.name}.yaml")
        save_recipe(current, path, note=[f"pseudo-label round {r} of {recipe_path}: written by scripts/rounds.py"])
        out.append(_measured(r, path, blend_files(path, echo=quiet, diagnostics=False), trained_with))
        previous = current
    for row in out[1:]:
        row.val_gain = gain_over(out[0].val, row.val)
        row.test_gain = gain_over(out[0].test, row.test)
    return out


def _retrain(source: Path, target: Path, pseudo: Path, force: bool, echo, progress: bool) -> None:
    """`target`: `source`'s training recipe with `extra_train: pseudo`, trained (resumed) and exported."""
    if not source.is_dir():
        raise KitError(f"{source}: not a trained member directory")
    ran = member_recipe(source)
    if ran is None:
        raise KitError(f"{source}: no recipe.yaml (the recipe it was trained with); train it with scripts/train.py")
    recipe = dataclasses.replace(ran, name=target.name, extra_train=str(pseudo))
    resume = not force and (any(target.glob("fold*/checkpoint.pt")) or (target / "checkpoint.pt").is_file())
    echo(f"  {target}: training" + (" (resumed)" if resume else ""))
    train(recipe, out=target, resume=resume, force=force or not resume, progress=progress)
    export_member(target, force=force, progress=progress, log=lambda line: echo(f"  {line}"))


def _measured(r: int, path: Path, run, trained_with: int) -> Round:
    return Round(r, path, trained_with, int(run.summary.get("pseudo_count", 0)),
                 None if run.val is None else run.val[1], run.test[1], pseudo_right=run.summary.get("pseudo_right"),
                 gate=run.summary.get("pseudo_gate"))


def format_rounds(rows: list[Round]) -> str:
    """The rounds table: the recipe's metric on validation and test truth, each gain over round 0 with its interval."""
    def cell(value: float | None, gain: Gain | None) -> str:
        if value is None:
            return f"{'—':>34}"
        if gain is None:
            return f"{value:7.4f}{'':>27}"
        noise = "" if gain.significant else "*"
        return f"{value:7.4f} {gain.value:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}]{noise}"

    title = next((r.test.scorer.title for r in rows if r.test.scorer is not None),
                 next((r.val.scorer.title for r in rows if r.val is not None and r.val.scorer is not None), "MAP@5"))
    lines = [f"{'round':<6} {'trained on':>10} {'selected':>8} {'est.':>6} {'right':>6}  "
             f"{f'val {title}, gain over round 0':<34}  {f'test {title}, gain over round 0':<34}"]
    for row in rows:
        right = "—" if row.pseudo_right is None else f"{row.pseudo_right:.0%}"
        est = "—" if row.pseudo_estimated is None else f"{row.pseudo_estimated:.0%}"
        lines.append(f"{row.round:<6} {row.pseudo_labels_trained:>10} {row.pseudo_labels_written:>8} {est:>6} {right:>6}  "
                     f"{cell(row.val_score, row.val_gain)}  {cell(row.test_score, row.test_gain)}")
    lines.append("gains: paired bootstrap 95% intervals over the same images; * within the noise; est.: the selection's "
                 "precision as validation measured it (pseudo.precision), right: as the test truth has it (synthetic)")
    return "\n".join(lines)
