"""A local member: match each query's local features against its shortlist's gallery photos (kit/local)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kit, whichever venv runs the script

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Make a local member: keypoints and descriptors of every photo (cached beside the crop cache), then each "
        "validation and test query matched against the gallery photos of the top identities a blend ranks for it, "
        "each pair verified by a robust geometric fit; an identity's score is its best photo's inlier count. Writes "
        "models/<name>/preds/local/{val|oof,test}/ (kind inliers) and models/<name>/local.json. Blend it as "
        "{model: models/<name>, view: local}: its calibration (inliers) is fitted on validation. Needs OpenCV: "
        "pip install 'whale-kit[local]'.",
        "python scripts/match.py blends/demo.yaml                     # shortlist: the demo blend's top 50\n"
        "  python scripts/match.py blends/mine.yaml --identities 20 --extractor orb --name local-orb\n"
        "  python scripts/match.py blends/faces.yaml --foreground grabcut --flip same   # no boxes, symmetric faces",
    )
    p.add_argument("shortlist", help="a blend recipe whose ranking picks each query's identities to match (not one "
                                     "with a local member)")
    p.add_argument("--name", default="local", help="the member's directory under --models (default local)")
    p.add_argument("--models", default="models", help="where members live (default models)")
    p.add_argument("--identities", type=int, default=50, help="identities matched per query (default 50)")
    p.add_argument("--extractor", default="sift", choices=("sift", "orb"), help="sift (RootSIFT; default) or orb")
    p.add_argument("--size", type=int, default=512, help="the crop's longest side for matching, pixels (default 512)")
    p.add_argument("--keypoints", type=int, default=500, help="keypoints per photo, the strongest (default 500)")
    p.add_argument("--foreground", default="none", choices=("none", "grabcut"),
                   help="photos without boxes: keep only keypoints GrabCut calls foreground (default none)")
    p.add_argument("--no-boxes", action="store_true", help="match whole photos even where bounding_boxes.csv exists")
    p.add_argument("--flip", default="none", choices=("none", "same"),
                   help="same: a mirrored query too, the better count (symmetric subjects); default none")
    p.add_argument("--model", default="homography", choices=("homography", "similarity"),
                   help="the geometric model verified: USAC MAGSAC homography (default) or a RANSAC similarity")
    p.add_argument("--ratio", type=float, default=0.8, help="Lowe's ratio test (default 0.8)")
    p.add_argument("--threshold", type=float, default=6.0, help="reprojection error allowed, pixels (default 6)")
    p.add_argument("--workers", type=int, default=None, help="threads (default: the cores)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    args = p.parse_args(argv)

    from kit.local.features import FeatureSpec
    from kit.local.match import MatchCfg
    from kit.local.member import LocalCfg, build_local_member

    cfg = LocalCfg(args.name, args.identities, args.flip,
                   FeatureSpec(args.extractor, args.size, args.keypoints, use_boxes=not args.no_boxes,
                               foreground=args.foreground),
                   MatchCfg(args.ratio, model=args.model, threshold=args.threshold))
    build_local_member(args.shortlist, cfg, models=args.models, progress=not args.quiet, workers=args.workers)
    return 0


if __name__ == "__main__":
    cli.run(main)
