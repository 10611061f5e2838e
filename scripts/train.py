"""Train one ensemble member from a recipe: models/<recipe>.yaml -> models/<name>/checkpoint.pt."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads that
# wait for a descheduled sibling made training up to 10x slower (must be set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Train one member (a timm backbone + an identity head) on a competition directory. Writes "
        "models/<name>/: recipe.yaml, classes.txt, checkpoint.pt (every epoch), metrics.json, train.log. "
        "Several processes: torchrun --nproc_per_node N scripts/train.py RECIPE. With --folds (or fold: all in "
        "the recipe), one member per fold of folds.csv into models/<name>/fold<k>/: an out-of-fold member.",
        "python scripts/train.py models/resnet18_tiny.yaml --data data/small\n"
        "  python scripts/train.py models/resnet18_tiny.yaml --folds     # -> models/resnet18_tiny/fold0/, fold1/, ...\n"
        "  python scripts/train.py models/*_tiny.yaml --jobs 3          # three members at once, the cores shared",
    )
    p.add_argument("recipe", nargs="+", help="recipe file(s) (YAML), e.g. models/resnet18_tiny.yaml")
    p.add_argument("--data", help="competition directory (default: the recipe's data:)")
    p.add_argument("--out", help="output directory (default: models/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the output directory's checkpoint.pt")
    p.add_argument("--force", action="store_true", help="start over even if the output directory holds a checkpoint")
    p.add_argument("--folds", action="store_true",
                   help="train every fold of folds.csv, one member each in <out>/fold<k>/ "
                        "(overrides the recipe's fold:)")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings at once (several recipes, or the folds of --folds), in separate processes with "
                        "the cores split among them, one thread each when there are more than cores (CPU: small "
                        "networks scale badly over threads; default 1: one after the other)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines (train.log still written)")
    args = p.parse_args(argv)
    if args.resume and args.force:
        p.error("--resume and --force exclude each other")

    import dataclasses

    from kit.io import cpu_count
    from kit.train.loop import recipe_tasks, train, train_tasks, val_map5_note
    from kit.train.model import check_backbone
    from kit.train.recipe import ALL_FOLDS, load_recipe

    recipes = []
    for path in args.recipe:
        recipe = load_recipe(path)
        check_backbone(recipe.model.backbone, path)  # before the data is read, naming the file
        recipes.append(dataclasses.replace(recipe, fold=ALL_FOLDS) if args.folds else recipe)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if len(recipes) > 1:
        if args.out:
            p.error("--out names one member's directory: give one recipe")
        names = [r.name for r in recipes]
        if len(set(names)) < len(names):
            p.error(f"two recipes train the same member models/{next(n for n in names if names.count(n) > 1)}")
        if args.jobs == 1:  # one after the other, in this process: each with its own progress
            for r in recipes:
                out = train(r, data=args.data, resume=args.resume, force=args.force, progress=not args.quiet)
                print(f"{out}: trained{val_map5_note(out)}")
            return 0
        tasks = [t for r in recipes for t in recipe_tasks(r, args.data, args.resume, args.force)]
        jobs = min(args.jobs, len(tasks))
        print(f"{len(tasks)} training(s), {jobs} at a time, {max(1, cpu_count() // jobs)} thread(s) each")
        train_tasks(tasks, jobs, lambda task, out: print(f"{out}: trained{val_map5_note(out)}", flush=True))
        return 0
    recipe = recipes[0]
    if args.jobs > 1 and recipe.fold != ALL_FOLDS:
        p.error("--jobs trains several recipes, or the folds of one (--folds), side by side")
    out = train(recipe, out=args.out, data=args.data, resume=args.resume, force=args.force, progress=not args.quiet,
                jobs=args.jobs)
    if os.environ.get("RANK", "0") == "0":  # once under torchrun
        if recipe.fold == ALL_FOLDS:
            print(f"{out}: trained every fold, one member each in {out}/fold<k>/ ({out / 'train.log'})")
        else:
            print(f"{out}: trained ({out / 'metrics.json'})")
    return 0


if __name__ == "__main__":
    cli.run(main)
