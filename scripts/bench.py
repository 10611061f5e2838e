"""Benchmarks, kept out of the test suite: `python scripts/bench.py [section ...]` (default: all).

Each section is one function registered with `@section("name")` that calls its stage's
`kit/<stage>/bench.py` and prints the tables it measures: figures, targets and ratios. The machine
is described once at the top. Add a section by writing its stage's bench function and a thin one here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit.bench import machine  # noqa: E402
from kit.errors import KitError  # noqa: E402

SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {}


def section(name: str):
    def register(fn):
        SECTIONS[name] = fn
        return fn

    return register


@section("post")
def bench_post_section(args: argparse.Namespace) -> None:
    """Post-processing at Kaggle scale: whole blend vs a plain reference vs the I/O floor; Hamming
    matching; phash vs imagehash (kit/bench/post.py)."""
    from kit.bench.post import bench_post

    bench_post().print()


@section("tune")
def bench_tune_section(args: argparse.Namespace) -> None:
    """Tuning trials per second at Kaggle validation scale, one fold and out-of-fold (kit/bench/tune.py)."""
    from kit.bench.tune import bench_tune

    for table in bench_tune():
        table.print()


@section("export")
def bench_export_section(args: argparse.Namespace) -> None:
    """onnxruntime vs eager PyTorch (kit/bench/export.py)."""
    try:
        from kit.bench.export import bench_export
    except ImportError as e:
        print(f"\nexport: skipped ({e})")
        return
    print()
    bench_export()


@section("train")
def bench_train_section(args: argparse.Namespace) -> None:
    """Training images/s per recipe in models/: model alone vs the real loop (kit/bench/train.py)."""
    try:
        from kit.bench.train import bench_train, training_competition
    except ImportError as e:
        print(f"\ntrain: skipped ({e})")
        return
    print()
    rows = bench_train(training_competition(args.data), steps=args.steps, compile=args.compile)
    _save(args, "train", rows)


@section("match")
def bench_match_section(args: argparse.Namespace) -> None:
    """The local matcher: extraction images/s and verified pairs/s per extractor, a Kaggle-sized pass
    projected (kit/bench/local.py)."""
    try:
        from kit.bench.local import bench_match
    except ImportError as e:
        print(f"\nmatch: skipped ({e}; pip install 'whale-kit[local]')")
        return
    for table in bench_match(args.small):
        table.print()


@section("gpu")
def bench_gpu_section(args: argparse.Namespace) -> None:
    """The GPU check in one command (kit/bench/gpu.py): versions, the train rows, a full-size
    recipe's real loop from scratch, export parity on the GPU, the demo's training stage."""
    from kit.demo import TINY_RECIPES
    from kit.bench.train import training_competition
    from kit.bench.gpu import gpu_check

    print()
    _save(args, "gpu", gpu_check(training_competition(args.data), Path(args.small), TINY_RECIPES, steps=args.steps,
                                 compile=args.compile, allow_cpu=args.cpu))


def _save(args: argparse.Namespace, name: str, result) -> None:
    """--out DIR: the section's figures as DIR/<name>.json too."""
    if args.out:
        import json

        from kit.io import write_text

        write_text(Path(args.out) / f"{name}.json", json.dumps(result, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Print benchmark tables: " + ", ".join(SECTIONS),
                                epilog="examples:\n  python scripts/bench.py post\n  python scripts/bench.py train\n"
                                       "  python scripts/bench.py gpu --out $OUT    # on a GPU machine, under 5 minutes",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sections", nargs="*", help=f"sections to run (default: all but gpu): {', '.join(SECTIONS)}")
    p.add_argument("--data",
                   help="train, gpu: the competition to train on (default data/medium, generated when absent)")
    p.add_argument("--small", default="data/small", help="gpu, match: the demo's competition (default data/small)")
    p.add_argument("--steps", type=int, default=None, help="train, gpu: optimizer steps of each real-loop run "
                   "(default 30 on the CPU, 60 on a GPU)")
    p.add_argument("--compile", action="store_true", help="train, gpu: also time the model under torch.compile")
    p.add_argument("--cpu", action="store_true", help="gpu: run the check without a GPU (a dry run of the command)")
    p.add_argument("--out", help="also write each section's figures as OUT/<section>.json")
    args = p.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    print(machine())
    try:
        for name in args.sections or [n for n in SECTIONS if n != "gpu"]:
            SECTIONS[name](args)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
