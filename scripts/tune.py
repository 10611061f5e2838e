"""Tune a blend recipe's weights and thresholds with Optuna against the local score (the recipe's metric, MAP@5 by default)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Search member weights, temperatures, the new_whale threshold, leak distance and balance constants "
        "with Optuna (seeded TPE) on part of the validation images; report the held-out part too; write "
        "blends/<name>.tuned.yaml. Run the same command again to resume a study.",
        "python scripts/tune.py blends/final.yaml --trials 300\n"
        "  python scripts/tune.py blends/final.yaml --trials 2000 --jobs 2 --storage journal:/mnt/shared/final.log",
    )
    p.add_argument("recipe", help="blend recipe (YAML); its optional tune: section pins parameters or narrows ranges")
    p.add_argument("--trials", type=int, default=200, help="finished trials the study should hold (default 200)")
    p.add_argument("--storage", help="Optuna storage: sqlite:///PATH (default sqlite:///models/studies.db), "
                                     "postgresql://..., or journal:PATH for a journal file on a shared disk")
    p.add_argument("--study", help="study name (default: the recipe name plus a digest of its search space)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--seed", type=int, help="sampler and split seed (default: the recipe's tune.seed, 0)")
    p.add_argument("--grace", type=int, default=15, metavar="SECONDS",
                   help="seconds without a heartbeat after which a killed worker's running trial is marked failed "
                        "(sqlite and PostgreSQL; default 15)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar (none is drawn when output is not a terminal)")
    args = p.parse_args(argv)

    from kit.io import outputs
    from kit.tune.study import tune

    try:
        with outputs(echo=None) as out:  # the tuned recipe and its report: both in place, or neither
            s = tune(args.recipe, args.trials, storage=args.storage, study_name=args.study, jobs=args.jobs,
                     seed=args.seed, progress=not args.quiet, out=out, grace=args.grace)
            from kit.report.html import report_path, write_tune_report

            if args.no_report:  # the previous tuning's report would be read as this one's
                out.remove(report_path(s.tuned))
            else:
                report = write_tune_report(s, out=out)
    except KeyboardInterrupt:
        print("interrupted: nothing written; the study keeps every finished trial, and the same command goes on "
              "from them", file=sys.stderr)
        return 130
    print(f"study {s.study_name} in {s.storage}: {s.n_trials} finished trials"
          + (f" ({s.trials_per_second:.1f} trials/s this run)" if s.trials_per_second else ""))
    print(s.table())
    print("best parameters:")
    for name, value in s.best_params.items():
        imp = s.importances.get(name)
        print(f"  {name:<40} {value:<12.5g}" + (f" importance {imp:.2f}" if imp is not None else ""))
    print(f"wrote {s.tuned_path}  (run: python scripts/blend.py {s.tuned_path})")
    if not args.no_report:
        print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    cli.run(main)
