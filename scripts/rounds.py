"""Pseudo-label rounds: retrain every member of a blend with its pseudo-labels, export, blend, select; N times."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle OpenMP threads sleep

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Pseudo-label rounds (Happywhale 2022's 1st and 2nd places): round r retrains every member of the blend "
        "with round r-1's pseudo-labels (the recipe's pseudo.threshold), exports it and blends "
        "blends/<name>-pl<r>.yaml; prints each round's MAP@5 on validation and test truth with its gain over round 0.",
        "python scripts/rounds.py blends/final.yaml --rounds 2")
    p.add_argument("recipe", help="the blend recipe of round 0 (its members trained and exported)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of retraining, 1 to 10 (default 2)")
    p.add_argument("--force", action="store_true", help="retrain and re-export rounds already done")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    args = p.parse_args(argv)

    from kit.rounds import format_rounds, pseudo_rounds

    rows = pseudo_rounds(args.recipe, args.rounds, force=args.force, progress=not args.quiet)
    print(format_rounds(rows))
    return 0


if __name__ == "__main__":
    cli.run(main)
