"""Prepare a competition: validation folds and perceptual hashes; or generate a synthetic one first."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script
# --init times training steps: idle OpenMP threads sleep (as in train.py), or a busy machine reads 10x slow
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kit import cli  # noqa: E402
from kit.data.prepare import prepare  # noqa: E402
from kit.errors import KitError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Write folds.csv and hashes.csv for a competition directory; with --synthetic, generate one first.",
        "python scripts/prepare.py --synthetic small --out data/small --seed 0\n"
        "  python scripts/prepare.py ~/kaggle/humpback-whale-identification\n"
        "  python scripts/prepare.py ~/data/faces --init ~/work/faces   # + starter recipes in a working directory",
    )
    p.add_argument("data", nargs="?", help="competition directory (Kaggle layout) to prepare")
    p.add_argument("--synthetic", metavar="SIZE", help="generate a synthetic competition: tiny, small, medium or kaggle")
    p.add_argument("--out", help="where --synthetic writes the competition")
    p.add_argument("--layout", default="humpback", choices=("humpback", "happywhale", "animalclef"),
                   help="--synthetic: Kaggle 2019's flukes (default); Happywhale 2022's shape: species with their "
                        "own flukes and dorsal fins, image,species,individual_id, new_individual; or AnimalCLEF 2025's: "
                        "three datasets, metadata.csv, images/<dataset>/<database|query>/, one label per query")
    p.add_argument("--seed", type=int, default=0, help="seed for the generator and the folds (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress display (a log or a pipe gets lines, never bars)")
    p.add_argument("--init", metavar="WORKDIR", help="also write starter recipes fitted to the data and this machine "
                   "(models/, blends/, README.md) into WORKDIR, outside the kit; never overwrites")
    p.add_argument("--minutes", type=float, help="--init: training time a member may take (default 4 on a CPU, "
                   "60 on a GPU): its recipe trains by time, the loop setting the epochs from its own speed")
    p.add_argument("--pretrained", default="auto", metavar="auto|hub|none|PATH",
                   help="--init: where the members' backbones start: auto (timm's hub weights when cached or "
                        "reachable, else from scratch; default), hub, none (from scratch), or a weight file or a "
                        "folder of them (<backbone>.safetensors|.pth, or a Hugging Face download)")
    p.add_argument("--work", metavar="DIR",
                   help="a writable directory that stands in for the competition directory when that is read-only "
                        "(Kaggle's /kaggle/input): its files are linked there, and the kit's own (folds.csv, hashes.csv, "
                        "the caches) written there; name DIR as the data in every later step")
    p.add_argument("--folds", type=int, default=3, help="number of validation folds, disjoint in identities (default 3)")
    p.add_argument("--unknown-share", type=float, metavar="SHARE",
                   help="the unknown label's share of each fold: the share you expect in the test set "
                        "(default 0.31, the 2019 winners' 230 of 742)")
    args = p.parse_args(argv)

    if args.synthetic:
        if not args.out:
            raise KitError("--synthetic needs --out DIR")
        from kit.data.synthetic import generate

        data = Path(args.out)
        generate(data, size=args.synthetic, seed=args.seed, progress=not args.quiet, layout=args.layout)
    elif args.data:
        data = Path(args.data)
    else:
        raise KitError("give a competition directory, or --synthetic SIZE --out DIR")
    if args.work:
        from kit.data.workdir import working_copy

        data = working_copy(data, args.work)
        print(f"{data}: stands in for {args.data} (its files linked); use {data} as the data from now on")
    if not ((data / "folds.csv").is_file() and (data / "hashes.csv").is_file()) or not args.init or args.unknown_share is not None:
        prepare(data, args.folds, args.seed, unknown_share=args.unknown_share)
    if args.init:
        from kit.starter import init_workdir

        init_workdir(data, args.init, args.minutes, args.pretrained)
    return 0


if __name__ == "__main__":
    cli.run(main)
