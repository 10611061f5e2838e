"""Perceptual hashes (imagehash's phash, bit for bit) of a directory's images, on all cores."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit import cli  # noqa: E402
from kit.data.phash import write_directory_hashes, write_hashes  # noqa: E402
from kit.errors import KitError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Write `Image,phash` (16 hex digits, equal to str(imagehash.phash(Image.open(f)))) for every image "
        "of IMAGES_DIR; given a competition directory (with train.csv), hashes its train and test images "
        "into DIR/hashes.csv.",
        "python scripts/phash.py data/small/train --out train_hashes.csv\n"
        "  python scripts/phash.py data/small            # -> data/small/hashes.csv",
    )
    p.add_argument("images", help="a directory of images, or a competition directory")
    p.add_argument("--out", help="output CSV (default for a competition: DIR/hashes.csv)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--fast", action="store_true",
                   help="FAST mode: JPEG draft decoding, several times faster, NOT bit-equal to imagehash; "
                        "hash train and test the same way")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise KitError(f"--workers must be >= 1, got {args.workers}")
    directory = Path(args.images)
    if args.out and Path(args.out).is_dir():  # before hashing, not after
        raise KitError(f"--out {args.out}: is a directory; give a CSV file name (e.g. {Path(args.out) / 'hashes.csv'})")
    start = time.perf_counter()
    if (directory / "train.csv").is_file():
        out = write_hashes(directory, args.out, args.workers, args.fast)
    else:
        if not args.out:
            raise KitError("--out is needed for a plain image directory (e.g. --out hashes.csv)")
        out = write_directory_hashes(directory, args.out, args.workers, args.fast)
    n = sum(1 for _ in open(out)) - 1
    mode = "fast (not bit-exact)" if args.fast else "exact"
    print(f"wrote {out}: {n:,} hashes, {mode} mode, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    cli.run(main)
