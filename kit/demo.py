"""The main job: the whole flow on a synthetic competition, on a laptop CPU, in minutes.

generate `synthetic small` → folds + hashes → train one tiny member per family (ResNet, Inception,
SENet) → export to ONNX + onnxruntime prediction sets → blend with leak, new_whale and balance →
tune with Optuna → submission, pseudo-labels, report → a closing table. Every finished stage is
reused on a re-run (a trained member, its prediction sets, the competition) unless `force`.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kit.errors import KitError

TINY_RECIPES = ("models/resnet18_tiny.yaml", "models/inception_tiny.yaml", "models/senet_tiny.yaml")
DEMO_BLEND = Path("blends/demo.yaml")


@dataclass
class DemoResult:
    rows: list[tuple[str, float, float]] = field(default_factory=list)  # what, val held-out, test
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    held_out: int = 0  # validation images never searched by any threshold or trial

    def table(self) -> str:
        lines = [f"{'MAP@5':<52}{f'val held-out ({self.held_out})':>20}{'test (truth)':>14}"]
        for what, val, test in self.rows:
            lines.append(f"{what:<52}{val:>20.4f}{test:>14.4f}")
        return "\n".join(lines)


def _trained(model_dir: Path, recipe) -> bool:
    """A checkpoint whose metrics cover every epoch of every stage of the recipe."""
    import json

    metrics = model_dir / "metrics.json"
    if not (model_dir / "checkpoint.pt").is_file() or not metrics.is_file():
        return False
    done = len(json.loads(metrics.read_text()).get("epochs", []))
    return done >= sum(stage.epochs for stage in recipe.stages)


def run_demo(data: str | Path = "data/small", size: str = "small", seed: int = 0, trials: int = 150,
             force: bool = False, echo: Callable[[str], None] = print) -> DemoResult:
    from kit.data.prepare import prepare
    from kit.data.synthetic import generate
    from kit.export.member import export_member
    from kit.post import pipeline
    from kit.post.recipe import load_recipe
    from kit.report.html import write_report, write_tune_report
    from kit.train.loop import train
    from kit.train.recipe import load_recipe as load_train_recipe
    from kit.tune.study import tune

    data = Path(data)
    result = DemoResult()
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[stage] = now - clock
        clock = now

    echo(f"== 1/5 competition: synthetic {size} in {data}")
    if force and data.exists():
        shutil.rmtree(data)
    if not (data / "train.csv").is_file():
        generate(data, size=size, seed=seed)
    if not (data / "folds.csv").is_file() or not (data / "hashes.csv").is_file():
        prepare(data, seed=seed, echo=echo)
    lap("competition")

    members = []
    for i, path in enumerate(TINY_RECIPES, 1):
        recipe = load_train_recipe(path)
        model_dir = Path("models") / recipe.name
        members.append(model_dir)
        echo(f"== 2/5 train {i}/{len(TINY_RECIPES)}: {recipe.name} ({recipe.model.backbone})")
        if _trained(model_dir, recipe) and not force:
            echo(f"  {model_dir}: trained already, reused")
            continue
        resume = (model_dir / "checkpoint.pt").is_file() and not force
        train(recipe, out=model_dir, data=data, resume=resume, force=force)
    lap("train")

    for model_dir in members:
        echo(f"== 3/5 export + infer: {model_dir}")
        export_member(model_dir, data=data, force=force)
    lap("export")

    echo(f"== 4/5 blend: {DEMO_BLEND}")
    blend = load_recipe(DEMO_BLEND)
    if Path(blend.data) != data:
        raise KitError(f"{DEMO_BLEND}: data is {blend.data}, the demo runs on {data}")
    report = pipeline.blend_files(DEMO_BLEND, echo=echo)
    result.files += [report.summary["submission"], report.summary.get("pseudo", ""), str(write_report(report))]
    lap("blend")

    echo(f"== 5/5 tune: {trials} Optuna trials")
    summary = tune(DEMO_BLEND, trials, storage=f"sqlite:///{Path('models') / 'studies.db'}")
    echo(summary.table())
    tuned_report = pipeline.blend_files(summary.tuned_path, echo=echo)
    result.files += [str(summary.tuned_path), tuned_report.summary["submission"], str(write_tune_report(summary, tuned_report))]
    lap("tune")

    # The closing table. Fair to the members: each one alone gets its own new_whale threshold, picked
    # on the same tuning part of the validation images as the blend's parameters; all rows are then
    # scored on the held-out part (never searched) and on the synthetic test truth.
    from kit.tune.study import holdout_split

    inputs = {split: pipeline.prepare(blend, split) for split in ("val", "test")}
    val = inputs["val"]
    tune_idx, hold_idx = holdout_split(val.truth, val.unknown_code, blend.tune.holdout, blend.tune.seed)

    def scores(recipe) -> tuple[float, float]:
        ap = pipeline.run(recipe, val).ap
        return float(ap[hold_idx].mean()), pipeline.run(recipe, inputs["test"]).map5

    def best_threshold(recipe):
        grid = [float(t) for t in np.linspace(0.0, 1.0, 51)]
        found = [pipeline.run(recipe.with_params({"steps.new_whale.threshold": t}), val).ap[tune_idx].mean() for t in grid]
        return recipe.with_params({"steps.new_whale.threshold": grid[int(np.argmax(found))]})

    unknown_share = lambda x, idx: float((x.truth[idx] == x.unknown_code).mean())
    result.rows.append(("trivial: new_whale alone", unknown_share(val, hold_idx),
                        unknown_share(inputs["test"], np.arange(len(inputs["test"].truth)))))
    for i, m in enumerate(blend.members):  # alone, in its natural calibration (softmax, sigmoid or affine)
        alone = blend.only_member(i).with_params({f"members.{i}.calibration": {"method": "auto"}})
        result.rows.append((f"member {m.name} (own threshold)", *scores(best_threshold(alone))))
    result.rows.append(("blend, untuned recipe", *scores(blend)))
    result.rows.append(("blend, threshold only", *scores(best_threshold(blend))))
    result.rows.append(("blend, tuned by Optuna", *scores(summary.tuned)))
    result.held_out = len(hold_idx)
    result.files = [f for f in result.files if f]
    return result
