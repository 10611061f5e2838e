"""Blend members by a recipe: the local score (the recipe's metric) per step on val, then the test submission and pseudo-labels."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit import cli  # noqa: E402
from kit.errors import KitError  # noqa: E402
from kit.io import outputs  # noqa: E402
from kit.post.files import blend_files  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Run a blend recipe (blends/<name>.yaml): prints the val ablation table (the recipe's metric, MAP@5 by default, after blend, "
        "+ leak, + new_whale, + balance), writes submissions/<name>.csv, submissions/<name>.pseudo.csv and the report submissions/<name>.html.",
        "python scripts/blend.py blends/final.yaml\n"
        "  python scripts/blend.py blends/final.yaml --members   # and the member table with its claims",
    )
    p.add_argument("recipe", help="blend recipe YAML (see kit/post/recipe.py for the format)")
    p.add_argument("--json", action="store_true", help="also print the numbers as one JSON line at the end")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--members", action="store_true",
                   help="then print the member table (the demo's): each member alone with its own new_whale threshold, "
                        "the blend untuned, with its threshold fitted, and tuned, on the held-out part of val "
                        "(tune.holdout, which must be above 0) and on the test truth, with paired bootstrap claims. The "
                        "tuned row is blends/<name>.tuned.yaml when tune.py made it from this recipe as it is now")
    p.add_argument("--tuned", metavar="PATH",
                   help="with --members: the tuned recipe for the tuned row instead. Checked: the recipe's data, fold, "
                        "members, tune.holdout and tune.seed, as the file records them (else an error). Printed: whether "
                        "tune.py made it from this recipe as it is now; if not, its trials may have seen held-out images")
    args = p.parse_args(argv)

    if args.tuned and not args.members:
        raise KitError("--tuned goes with --members")
    if args.members:  # everything the table needs is checked before anything is written
        from kit.post.recipe import load_recipe
        from kit.tune.members import check_member_table, load_tuned, member_table_for, tuned_beside

        recipe = load_recipe(args.recipe)
        check_member_table(recipe)
        tuned, tuned_note = load_tuned(args.tuned, args.recipe) if args.tuned else tuned_beside(args.recipe)

    with outputs() as out:  # the submission, pseudo-labels and report: all in place, or none
        run = blend_files(args.recipe, out=out, diagnostics=not args.no_report)
        from kit.report.html import report_path, write_report

        if args.no_report:  # the previous run's report would be read as this submission's
            out.remove(report_path(run.recipe), note=f"removed {report_path(run.recipe)}: the previous run's report (--no-report)")
        else:
            run.summary["report"] = str(write_report(run, out=out))
    if args.members:
        from kit.post.compare import format_claims, format_table

        table = member_table_for(recipe, tuned).to_dict()
        print()
        print("members: each alone with its own new_whale threshold fitted on the tuning part of val, like the "
              "blend's; every row scored on the held-out part and the test truth")
        print(tuned_note)
        print()
        print(format_table(table))
        print()
        for line in format_claims(table):
            print(line)
        run.summary["members"] = table
    if args.json:
        print(json.dumps(run.summary))
    return 0


if __name__ == "__main__":
    cli.run(main)
