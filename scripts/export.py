"""Export trained members to ONNX (checked against PyTorch) and write their prediction sets."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit import cli  # noqa: E402
from kit.errors import KitError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Export each trained member (models/<name>/checkpoint.pt) to models/<name>/model.onnx, check it "
        "against PyTorch (relative error <= 1e-4), run it with onnxruntime over the validation fold, the "
        "test images and the train gallery, and write models/<name>/preds/{logit,cosine}/{val,test}/. An "
        "out-of-fold member (trained with --folds) is exported fold by fold, then gets "
        "models/<name>/preds/<view>/oof/ (every fold's val set, stacked) and test/ (the folds' mean).",
        "python scripts/export.py                       # every trained member under models/\n"
        "  python scripts/export.py models/resnet18_tiny --data data/tiny --batch 64 --provider cpu",
    )
    p.add_argument("members", nargs="*", help="member directories (default: every models/*/ with a checkpoint.pt, "
                                              "and every out-of-fold member)")
    p.add_argument("--data", help="competition directory (default: the data: of each member's recipe)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (the network sees 2x with flip TTA; default 32)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"),
                   help="onnxruntime provider: auto = CUDA when a GPU is usable, else CPU; where onnxruntime "
                        "has no CUDA provider but PyTorch sees a GPU, auto runs the checked PyTorch network "
                        "on it (export.json: provider torch-cuda) (default auto)")
    p.add_argument("--skip-infer", action="store_true", help="export and check only; no prediction sets")
    p.add_argument("--force", action="store_true", help="redo members whose outputs are newer than their checkpoint")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx and infer with it on the CUDA provider")
    p.add_argument("--tta", default="auto", choices=("auto", "flip", "none"),
                   help="horizontal-flip TTA: auto = for members trained on flips (augment.flip twin or same), "
                        "flip = always, none = originals only (default auto)")
    p.add_argument("--cosine", default="centre", choices=("centre", "nearest"),
                   help="cosine view: identity centres (default) or the nearest gallery image")
    p.add_argument("--knn", type=int, default=0, metavar="K",
                   help="also write the knn view: each identity's best cosine among a query's K nearest gallery images "
                        "(Happywhale 2022's 1st place; e.g. 50; default 0: none)")
    p.add_argument("--new-identities", action="store_true",
                   help="cosine view: add gallery identities the member was not trained on (after its own)")
    p.add_argument("--workers", type=int, default=None, help="image-reading threads (default: the cores)")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime intra-op threads on the CPU (default: the cores; on a machine shared with "
                        "other jobs, 1 can be faster)")
    p.add_argument("--quiet", action="store_true", help="no progress display (a log or a pipe gets lines, never bars)")
    p.add_argument("--models", default="models", help="where to look for members when none is named (default models)")
    p.add_argument("--check-map5", action="store_true",
                   help="after export, score the prediction sets and the eager PyTorch member alike (local MAP@5, "
                        "new_whale at a fixed threshold); fail if they differ by more than 1e-4. For an out-of-fold "
                        "member, each fold member is checked")
    args = p.parse_args(argv)

    from kit.export.layout import find_members, oof_children
    from kit.export.member import export_member

    # the flags' own checks, in the flags' words (the library says "batch must be >= 1")
    if args.batch < 1:
        raise KitError(f"--batch must be >= 1, got {args.batch}")
    if args.knn < 0:
        raise KitError(f"--knn must be >= 0 (0: no knn view), got {args.knn}")
    members = args.members or find_members(args.models)
    if not members:
        raise KitError(f"{args.models}/: no trained member (no */checkpoint.pt); train one with scripts/train.py")
    for member in members:
        export_member(member, args.data, batch=args.batch, provider=args.provider, skip_infer=args.skip_infer,
                      force=args.force, fp16=args.fp16, tta=args.tta, cosine=args.cosine,
                      new_identities=args.new_identities, knn=args.knn, workers=args.workers, threads=args.threads,
                      progress=not args.quiet)
        if args.check_map5 and not args.skip_infer:
            folds = oof_children(member)
            if folds:
                print(f"{member}: --check-map5 checks each fold member; the oof and fold-averaged test sets "
                      "are combined from their checked sets, not scored again")
            for checked in folds.values() if folds else [member]:
                check_map5(checked, args.data, args.batch)
    return 0


def check_map5(member, data, batch: int) -> None:
    from kit.export.check import map5_parity

    rows = map5_parity(member, data, batch=batch)
    if not rows:
        print(f"{member}: nothing to score (no validation fold and no test_truth.csv)")
    for r in rows:
        print(f"{member}: {r.view:<6} {r.split:<4} {r.images:>5} images  MAP@5 onnxruntime {r.map5_onnx:.5f}  "
              f"pytorch {r.map5_torch:.5f}  difference {r.diff:.1e}  (max score difference {r.max_score_diff:.1e}; "
              f"new_whale at {r.threshold:.3g}, the view's best on validation)")
    bad = [r for r in rows if r.diff > 1e-4]
    if bad:
        raise KitError(f"{member}: local MAP@5 of onnxruntime and PyTorch differ by {max(r.diff for r in bad):.2e} "
                       f"(> 1e-4) on {', '.join(f'{r.view}/{r.split}' for r in bad)}")


if __name__ == "__main__":
    cli.run(main)
