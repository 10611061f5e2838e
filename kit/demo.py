"""The main job: the whole flow on a synthetic competition, on a laptop CPU, in minutes.

generate `synthetic small` → folds + hashes → train one tiny member per family (ResNet, Inception,
SENet), all three at once, the CPU's cores split among them (`train_tasks`) → export to ONNX + onnxruntime prediction
sets → blend with leak, new_whale and balance → tune with Optuna → submission, pseudo-labels,
reports → the member table with its claims, written to submissions/demo.json (`python
scripts/demo.py --readme` copies it into README.md). A recipe with `fold: all` trains every fold
(out-of-fold members); the shipped tiny recipes train fold 0, which fits the demo in 10 minutes on 2
cores. Every finished stage is reused on a re-run (a trained member, its prediction sets, the
competition) unless `force`.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kit.data.competition import LAYOUTS, detect_layout
from kit.data.prepare import prepare
from kit.data.synthetic import generate
from kit.errors import KitError
from kit.export.layout import data_dir_of, oof_children
from kit.export.member import export_member
from kit.io import cpu_count, outputs, write_text
from kit.metrics import DEFAULT as DEFAULT_METRIC
from kit.metrics import METRICS
from kit.post.compare import format_claims, format_table
from kit.post.files import blend_files
from kit.post.recipe import load_recipe, recipe_from_dict, save_recipe
from kit.report.html import write_report, write_tune_report
from kit.train.recipe import ALL_FOLDS
from kit.train.recipe import load_recipe as load_train_recipe
from kit.tune.members import member_table_for
from kit.tune.study import tune

# the longest training first (when there are more trainings than processes, it starts first)
TINY_RECIPES = ("models/inception_tiny.yaml", "models/resnet18_tiny.yaml", "models/senet_tiny.yaml")
DEMO_BLEND = Path("blends/demo.yaml")
KNN = 20  # the knn view's neighbours (export.py --knn), for each member the demo's blend has a knn view of
RESULT = Path("submissions/demo.json")
README_BEGIN, README_END = "<!-- demo-table:begin -->", "<!-- demo-table:end -->"


@dataclass
class DemoResult:
    table: dict  # MemberTable.to_dict(): sizes, rows, claims
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    tune: str = ""  # the tuner's verdict, one sentence
    seed: int = 0

    def to_dict(self) -> dict:
        return {"seed": self.seed, "table": self.table, "seconds": self.seconds, "files": self.files, "tune": self.tune}

    @classmethod
    def from_dict(cls, d: dict) -> "DemoResult":
        return cls(d["table"], d.get("seconds", {}), d.get("files", []), d.get("tune", ""), d.get("seed", 0))


def readme_block(results: list[DemoResult]) -> str:
    """What README.md holds between the demo-table markers: per run, its command, stage times, table
    and claims."""
    lines = [README_BEGIN]
    for result in results:
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
        total = sum(result.seconds.values())
        lines += [
            "",
            f"`python scripts/demo.py --seed {result.seed}`: stages {stages}; {total:.0f} s in all.",
            "",
            "```",
            format_table(result.table),
            "```",
            "",
            *[f"- {line}" for line in format_claims(result.table)],
            f"- tuning: {result.tune}",
        ]
    return "\n".join(lines + ["", README_END])


def parse_readme_tables(text: str) -> list[dict]:
    """The tables inside README.md's demo block, read back into MemberTable.to_dict()'s shape (the
    numbers as printed): the test that README and demo agree formats them again and compares."""
    block = text[text.index(README_BEGIN):text.index(README_END)]
    tables = []
    for body in block.split("```")[1::2]:
        body = body.strip("\n").splitlines()
        header = re.findall(r"(\S[^()]*?) \((\d+)\)", body[0][len("MAP@5"):])
        sizes = {name.strip(): int(n) for name, n in header}
        rows = []
        for line in body[1:]:
            label = re.split(r"\s{2,}", line.strip())[0]
            values = line.split()[-len(sizes):]
            rows.append({"what": label, **{p: float(v) for p, v in zip(sizes, values)}})
        tables.append({"sizes": sizes, "rows": rows})
    return tables


def update_readme(readme: Path, results: list[DemoResult]) -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise KitError(f"{readme}: no {README_BEGIN} ... {README_END} block to replace")
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    write_text(readme, text[:start] + readme_block(results) + text[end:])


def _elsewhere(data: Path) -> str:
    """'' for the demo's own competition (blends/demo.yaml's data), else `-<DIR's name>`: the suffix of
    what a demo on another competition writes, so that it never overwrites the first demo's."""
    return "" if Path(load_recipe(DEMO_BLEND).data).resolve() == data.resolve() else f"-{data.resolve().name}"


def member_dir(name: str, data: Path) -> Path:
    """Where the demo trains the member of recipe `name` on `data`: models/<name>[-<DIR's name>]."""
    return Path("models") / f"{name}{_elsewhere(data)}"


def demo_blend_for(data: Path) -> Path:
    """blends/demo.yaml, or for a competition elsewhere (demo.py --data DIR) its copy pointing there,
    blends/demo-<DIR's name>.yaml, over that competition's members (models/<name>-<DIR's name>),
    whose outputs are named after it too, scored by the competition's own metric (its layout's:
    AnimalCLEF's for its layout). Under a metric that is not a mean over images the unknown label is
    placed by a threshold fitted exactly to it, not by P(new) (whose expected mark is per image)."""
    suffix = _elsewhere(data)
    if not suffix:
        return DEMO_BLEND
    blend = load_recipe(DEMO_BLEND)
    name = f"demo{suffix}"
    raw = blend.to_dict()
    members = [{**m, "model": str(member_dir(Path(m["model"]).name, data))} if m.get("model") else m for m in raw["members"]]
    raw = {**raw, "name": name, "data": str(data), "members": members}
    note = [f"{DEMO_BLEND} on {data}: written by scripts/demo.py --data {data}"]
    own = detect_layout(data).metric
    if own != raw.get("metric", DEFAULT_METRIC):
        raw["metric"] = own
        note.append(f"metric: {own}, the competition's own")
        if not METRICS[own].additive and raw["steps"].get("new_whale", {}).get("fit") == "probability":
            raw["steps"]["new_whale"] = {**raw["steps"]["new_whale"], "fit": "threshold"}
            note.append(f"new_whale: fit: threshold, fitted exactly to {own} (P(new) maximises a per-image mark)")
    return save_recipe(recipe_from_dict(raw, str(DEMO_BLEND)), DEMO_BLEND.parent / f"{name}.yaml", note=note)


def _trained(model_dir: Path, recipe) -> bool:
    """The member's checkpoint (every fold's, for an out-of-fold member) covers every epoch of every
    stage of the recipe, trained on the recipe's data."""
    dirs = list(oof_children(model_dir).values()) if recipe.fold == ALL_FOLDS else [model_dir]
    if not dirs:
        return False
    for d in dirs:
        ran_on = data_dir_of(d, None)  # the data: its recipe.yaml records
        if ran_on is None or ran_on != Path(recipe.data):  # a member of another competition
            return False
        metrics = d / "metrics.json"
        if not (d / "checkpoint.pt").is_file() or not metrics.is_file() or not _all_epochs(
                json.loads(metrics.read_text()).get("epochs", []), recipe):
            return False
    return True


def _all_epochs(epochs: list[dict], recipe) -> bool:
    """metrics.json's epochs reach the end of the recipe's last stage (a stage by time: its plan)."""
    if not epochs:
        return False
    last = epochs[-1]
    if "stage_epochs" in last:
        return last["stage"] >= len(recipe.stages) and last["stage_epoch"] >= last["stage_epochs"]
    return len(epochs) >= sum(s.epochs or 0 for s in recipe.stages)


def run_demo(data: str | Path = "data/small", size: str = "small", seed: int = 0, trials: int = 150,
             force: bool = False, jobs: int | None = None, echo: Callable[[str], None] = print,
             progress: bool = True, layout: str = "humpback") -> DemoResult:
    from kit.train.loop import train_tasks

    data = Path(data)
    seconds: dict[str, float] = {}
    files: list[str] = []
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 1)
        clock = now

    echo(f"== 1/6 competition: synthetic {size} (seed {seed}{', ' + layout if layout != 'humpback' else ''}) in {data}")
    _competition(data, size, seed, layout, force, progress, echo)
    blend_path = demo_blend_for(data)  # after the competition: it scores by the competition's metric
    blend = load_recipe(blend_path)
    lap("competition")

    members, tasks = _training_tasks(data, force, echo)
    # every training at once, the cores split among them (one thread each on 2 cores): no core idles
    # while two are left, and a one-thread training is the same whoever shares the machine (deterministic).
    # Two at a time, then the third alone on one core, took 250 s here; all three at once 216 s.
    jobs = jobs or max(1, min(len(tasks), 2 * cpu_count()))
    echo(f"== 2/6 train: {len(tasks)} training(s), {jobs} at a time")
    start = time.perf_counter()

    def done(task, out: Path) -> None:
        metrics = json.loads((out / "metrics.json").read_text())["epochs"][-1]
        echo(f"  {out}: {metrics['images_per_s']:.0f} img/s, val MAP@5 {metrics['val']['map5']:.4f} "
             f"({time.perf_counter() - start:.0f} s)")

    train_tasks(tasks, jobs, done)
    lap("train")

    with_knn = {Path(m.model) for m in blend.members if m.view == "knn"}
    for model_dir in members:
        echo(f"== 3/6 export + infer: {model_dir}")
        export_member(model_dir, data=data, force=force, knn=KNN if model_dir in with_knn else 0, progress=False,
                      log=lambda line: echo(f"  {line}"))
    lap("export")

    echo(f"== 4/6 blend: {blend_path}")
    with outputs(echo) as out:
        run = blend_files(blend_path, echo=echo, out=out)
        files += [run.summary["submission"], run.summary.get("pseudo", ""), str(write_report(run, out=out))]
    lap("blend")

    echo(f"== 5/6 tune: {trials} Optuna trials")
    summary = tune(blend_path, trials, storage=f"sqlite:///{Path('models') / 'studies.db'}", progress=False)
    echo(summary.table())
    tuned_run = blend_files(summary.tuned_path, echo=lambda line: None)
    files += [str(summary.tuned_path), tuned_run.summary["submission"], str(write_tune_report(summary, tuned_run))]
    lap("tune")

    echo("== 6/6 the member table: each member alone, the blend untuned and tuned")
    table = member_table_for(blend, summary.tuned)  # what blend.py --members prints
    lap("table")
    path = RESULT.with_name(f"demo{_elsewhere(data)}.json")  # another competition's never replaces the main one's
    result = DemoResult(table.to_dict(), seconds, [f for f in files if f] + [str(path)], summary.verdict(), seed)
    write_text(path, json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def _competition(data: Path, size: str, seed: int, layout: str, force: bool, progress: bool, echo) -> None:
    """The synthetic competition in `data` (generated and prepared unless there already); one that
    holds another size, seed or layout is refused, never reported as this one."""
    if force and data.exists():
        shutil.rmtree(data)
    if not any((data / listing).is_file() for listing in {lay.listing for lay in LAYOUTS}):
        generate(data, size=size, seed=seed, progress=progress, layout=layout)
    made = json.loads((data / "synthetic.json").read_text()) if (data / "synthetic.json").is_file() else None
    if made is None:
        echo(f"  {data}: not a synthetic competition (no synthetic.json): used as it is")
    elif (made.get("size"), made.get("seed"), made.get("layout", "humpback")) != (size, seed, layout):
        # never report one competition as another
        def said(s, n, shape):
            return f"{s} seed {n}" + ("" if shape == "humpback" else f" ({shape})")

        held = said(made.get("size", "?"), made.get("seed", "?"), made.get("layout", "humpback"))
        raise KitError(f"{data}: holds synthetic {held}, not {said(size, seed, layout)}; add --force to generate it "
                       f"again (and retrain), or --data for another directory")
    if not (data / "folds.csv").is_file() or not (data / "hashes.csv").is_file():
        prepare(data, seed=seed, echo=echo)


def _training_tasks(data: Path, force: bool, echo) -> tuple[list[Path], list]:
    """(the demo's member directories, the trainings still to run: resumed where a kill left them)."""
    from kit.train.loop import Task, fold_tasks

    members, tasks = [], []
    for path in TINY_RECIPES:
        recipe = load_train_recipe(path)
        model_dir = member_dir(recipe.name, data)
        recipe = dataclasses.replace(recipe, name=model_dir.name, data=str(data))  # recipe.yaml records both
        members.append(model_dir)
        if _trained(model_dir, recipe) and not force:
            echo(f"  {model_dir}: trained already, reused")
            continue
        if recipe.fold == ALL_FOLDS:
            resume = bool(list(model_dir.glob("fold*/checkpoint.pt"))) and not force
            tasks += fold_tasks(recipe, model_dir, data, resume=resume, force=force or not resume, log=lambda line: None)
        else:
            resume = (model_dir / "checkpoint.pt").is_file() and not force
            tasks.append(Task(recipe, model_dir, data, resume=resume, force=force or not resume))
    return members, tasks
