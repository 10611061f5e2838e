"""Blend members by a recipe: local MAP@5 per step on val, then the test submission and pseudo-labels."""
from __future__ import annotations

import json

from kit import cli
from kit.post.pipeline import blend_files


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Run a blend recipe (blends/<name>.yaml): prints the val ablation table (MAP@5 after blend, "
        "+ leak, + new_whale, + balance), writes submissions/<name>.csv, submissions/<name>.pseudo.csv and the report submissions/<name>.html.",
        "python scripts/blend.py blends/final.yaml",
    )
    p.add_argument("recipe", help="blend recipe YAML (see kit/post/recipe.py for the format)")
    p.add_argument("--json", action="store_true", help="also print the numbers as one JSON line at the end")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    args = p.parse_args(argv)
    run = blend_files(args.recipe)
    if not args.no_report:
        from kit.report.html import write_report

        run.summary["report"] = str(write_report(run))
        print(f"wrote {run.summary['report']}")
    if args.json:
        print(json.dumps(run.summary))
    return 0


if __name__ == "__main__":
    cli.run(main)
