"""Train one ensemble member from a recipe: models/<recipe>.yaml -> models/<name>/checkpoint.pt."""
from __future__ import annotations

import os

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
        "  python scripts/train.py models/resnet18_tiny.yaml --folds     # -> models/resnet18_tiny/fold0/, fold1/, ...",
    )
    p.add_argument("recipe", help="recipe file (YAML), e.g. models/resnet18_tiny.yaml")
    p.add_argument("--data", help="competition directory (default: the recipe's data:)")
    p.add_argument("--out", help="output directory (default: models/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the output directory's checkpoint.pt")
    p.add_argument("--force", action="store_true", help="start over even if the output directory holds a checkpoint")
    p.add_argument("--folds", action="store_true",
                   help="train every fold of folds.csv, one member each in <out>/fold<k>/ "
                        "(overrides the recipe's fold:)")
    p.add_argument("--jobs", type=int, default=1,
                   help="with --folds: folds trained at once in separate processes, the cores shared among them "
                        "(CPU; on 2 cores, --jobs 2 is ~1.4x faster for small networks; default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines (train.log still written)")
    args = p.parse_args(argv)
    if args.resume and args.force:
        p.error("--resume and --force exclude each other")

    import dataclasses

    from kit.train.loop import train
    from kit.train.model import check_backbone
    from kit.train.recipe import ALL_FOLDS, load_recipe

    recipe = load_recipe(args.recipe)
    check_backbone(recipe.model.backbone, args.recipe)  # before the data is read, naming the file
    if args.folds:
        recipe = dataclasses.replace(recipe, fold=ALL_FOLDS)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs > 1 and recipe.fold != ALL_FOLDS:
        p.error("--jobs trains folds side by side: give --folds (or fold: all in the recipe)")
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
