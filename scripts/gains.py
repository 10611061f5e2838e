"""Each method since 2019 against its baseline on a competition the demo trained: MAP@5 gains with intervals."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle OpenMP threads sleep

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Measure what sub-center ArcFace with dynamic margins, GeM over two stages, the head at 10x the learning "
        "rate, the species head (Happywhale layout), "
        "the knn view, the local matcher (alone and added), per-species new_whale thresholds (Happywhale layout) "
        "and one pseudo-label round gain over "
        "their baselines, after scripts/demo.py trained the demo's members (kit/gains.py says how).",
        "python scripts/demo.py && python scripts/gains.py blends/demo.yaml\n"
        "  python scripts/demo.py --data data/happywhale --layout happywhale && "
        "python scripts/gains.py blends/demo-happywhale.yaml")
    p.add_argument("blend", nargs="?", default="blends/demo.yaml", help="the demo's blend recipe (default blends/demo.yaml)")
    args = p.parse_args(argv)

    from kit.gains import format_gains, measure

    rows = measure(args.blend)
    print(format_gains(rows, f"gains on {args.blend} (paired bootstrap 95% intervals)"))
    return 0


if __name__ == "__main__":
    cli.run(main)
