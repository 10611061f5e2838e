"""Score a submission by a competition's metric (Kaggle's MAP@5 by default), or check it against a competition."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit import cli  # noqa: E402
from kit.data import load_competition  # noqa: E402
from kit.errors import KitError  # noqa: E402
from kit.metric import check_submission  # noqa: E402
from kit.metrics import METRICS, metric_of_truth, score_files  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "MAP@5 (or --metric) of SUBMISSION against TRUTH (one true label per image), or --check a submission's format.",
        "python scripts/score.py submissions/final.csv data/small/test_truth.csv --json\n"
        "  python scripts/score.py submissions/final.csv data/small/test_truth.csv --metric top1\n"
        "  python scripts/score.py --check submissions/final.csv --data data/small",
    )
    p.add_argument("submission", help="submission CSV: image, space-separated labels (first 5 count)")
    p.add_argument("truth", nargs="?", help="truth CSV: image, one label (e.g. test_truth.csv)")
    p.add_argument("--json", action="store_true", help='print {"<metric>": float, "n": int}')
    p.add_argument("--metric",
                   help=f"the competition's metric: {', '.join(sorted(METRICS))} (kit/metrics/); default: animalclef for a truth in the organisers' "
                        "solution columns (new_identity), else map5")
    p.add_argument("--unknown", help="the unknown label (default: new_whale or new_individual, whichever TRUTH holds)")
    p.add_argument("--check", action="store_true", help="validate the submission against --data's test set and labels")
    p.add_argument("--data", help="competition directory, for --check")
    p.add_argument("--strict", action="store_true",
                   help="refuse (exit 2) what is otherwise a warning: a header no layout uses, images the truth lacks, "
                        "truth images the submission lacks (scored 0), rows of more than 5 labels")
    args = p.parse_args(argv)

    if args.check:
        if not args.data:
            raise KitError("--check needs --data DIR (the competition the submission is for)")
        problems = check_submission(args.submission, load_competition(args.data, check_images=False))
        if problems:
            raise KitError(f"{args.submission}: " + "; ".join(problems))
        print(f"{args.submission}: valid submission for {args.data}")
        return 0
    if not args.truth:
        raise KitError("give TRUTH (a CSV with one label per image), or use --check --data DIR")
    name = args.metric or metric_of_truth(args.truth)
    value, n = score_files(args.submission, args.truth, strict=args.strict, name=name, unknown=args.unknown)
    print(json.dumps({name: value, "n": n}) if args.json else f"{METRICS[name].title} {value:.5f} on {n} images")
    return 0


if __name__ == "__main__":
    cli.run(main)
