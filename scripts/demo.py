"""The whole flow on a synthetic competition: generate, train three backbones (fold 0), export, blend, tune."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

# Idle OpenMP threads sleep instead of spinning (as in train.py): spinning made training on a busy
# 2-core machine up to 10x slower. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Generate `synthetic small` (or reuse it), train one tiny member per family (ResNet, Inception, SENet) on "
        "fold 0 (as blends/demo.yaml's members say), export them to ONNX and run onnxruntime, blend their logit, "
        "cosine and knn views with leak + new_whale (by P(new)) + balance, tune with "
        "Optuna, and write submissions/demo.csv, submissions/demo.pseudo.csv, the reports and submissions/demo.json "
        "(the closing table). Re-running reuses what is done.",
        "python scripts/demo.py            # under 10 minutes on 2 CPU cores the first time\n"
        "  python scripts/demo.py --readme   # copy the last run's table (submissions/demo.json) into README.md\n"
        "  python scripts/demo.py --readme seed0.json seed1.json   # several runs' tables\n"
        "  python scripts/demo.py --force    # start over",
    )
    p.add_argument("--data", default="data/small", help="where the synthetic competition lives (default data/small)")
    p.add_argument("--size", default="small", help="synthetic size when it must be generated (default small)")
    p.add_argument("--layout", default="humpback", choices=("humpback", "happywhale", "animalclef"),
                   help="the synthetic competition's shape: Kaggle 2019's flukes (default), Happywhale 2022's "
                        "species, or AnimalCLEF 2025's metadata.csv and datasets, scored by its balanced metric "
                        "(use another --data, e.g. data/happywhale, data/animalclef)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--trials", type=int, default=150, help="Optuna trials (default 150)")
    p.add_argument("--jobs", type=int, help="trainings at once on the CPU, the cores split among them (default: all "
                   "of them, at most twice the cores)")
    p.add_argument("--force", action="store_true", help="regenerate, retrain and re-export everything")
    p.add_argument("--quiet", action="store_true", help="no progress display (a log or a pipe gets lines, never bars)")
    p.add_argument("--readme", nargs="*", metavar="RESULT",
                   help="write the closing tables of demo runs (their demo.json files; default submissions/demo.json) "
                        "into README.md, then stop")
    args = p.parse_args(argv)

    import json
    from pathlib import Path

    from kit.demo import RESULT, DemoResult, format_claims, format_table, run_demo, update_readme
    from kit.errors import KitError

    if args.readme is not None:
        paths = [Path(f) for f in args.readme] or [RESULT]
        for path in paths:
            if not path.is_file():
                raise KitError(f"{path}: not found; run `python scripts/demo.py` first")
        results = []
        for path in paths:
            try:
                results.append(DemoResult.from_dict(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError) as e:
                raise KitError(f"{path}: not a demo result ({e})") from None
        update_readme(Path("README.md"), results)
        print(f"README.md: demo tables updated from {', '.join(map(str, paths))}")
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise KitError(f"--jobs must be >= 1, got {args.jobs}")

    start = time.perf_counter()
    result = run_demo(args.data, args.size, args.seed, args.trials, args.force, args.jobs, progress=not args.quiet,
                      layout=args.layout)
    print()
    print(format_table(result.table))
    print()
    for line in format_claims(result.table):
        print(line)
    print(f"tuning: {result.tune}")
    print("stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
          + f"; total {time.perf_counter() - start:.0f}s")
    print("wrote: " + ", ".join(result.files))
    written = Path(result.files[-1])
    print("README.md gets this table with: python scripts/demo.py --readme" + ("" if written == RESULT else f" {written}"))
    return 0


if __name__ == "__main__":
    cli.run(main)
