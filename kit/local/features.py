"""Local features: keypoints and descriptors of every train and test image, inside the crop the
members see, at a resolution chosen for matching, computed once and cached.

What identifies an animal is local (a fluke's notches, a flank's stripes, scars, pigment), and a
matcher with geometric verification needs no training (issue "A second kind of eye"). The crop is
the members' (the box grown by its margin, or the whole photo), resized so that its longest side
is `size` pixels (never enlarged), greyscale. Where there are no boxes, `foreground: grabcut` keeps
only keypoints on what OpenCV's GrabCut, started from the photo less a tenth on each side, calls
foreground: field photos match on grass and sky otherwise.

Extractors (OpenCV, `pip install 'whale-kit[local]'`):
- `sift`: SIFT keypoints, descriptors stored as uint8 (SIFT's own range) and compared as RootSIFT
  (L1-normalised, square-rooted: Hellinger similarity; Arandjelovic & Zisserman 2012);
- `orb`: ORB's 256-bit binary descriptors, compared by Hamming distance: about 3x cheaper to
  extract, less distinctive.

On disk, `<competition>/cache/local-<extractor>-<size>-<keypoints>-<box margin|photo>[-grabcut]/`
(kit/data/rowcache.py: built once, an image redone alone when its file or box changes, bad images
remembered, a lock so parallel runs build once): `xy.npy` (N, K, 2) float32 keypoint positions in
the crop, `desc.npy` (N, K, D) uint8, `count.npy` (N,) int32 keypoints found (rows past it are zero),
`size.npy` (N, 2) int32 the crop's (W, H); with `mirror: true` the same of each image mirrored too
(`xy_m`, `desc_m`, `count_m`), for members whose mirrors keep the identity (`flip: same`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from kit.data.crops import Box, image_keys, stamp
from kit.data.images import decode
from kit.data.rowcache import open_row_cache
from kit.errors import KitError

VERSION = 1
DESCRIPTOR_BYTES = {"sift": 128, "orb": 32}
GRABCUT_SIDE = 160  # GrabCut runs on this small a copy: a foreground estimate, not a segmentation


@dataclass(frozen=True)
class FeatureSpec:
    """What an image's local features depend on."""

    extractor: str = "sift"  # sift | orb
    size: int = 512  # the crop's longest side, pixels (smaller crops are not enlarged)
    keypoints: int = 500  # at most this many per image, the strongest
    use_boxes: bool = True
    box_margin: float = 0.05
    foreground: str = "none"  # none | grabcut (for photos without boxes)
    mirror: bool = False  # also the mirrored image's features (flip: same)

    def __post_init__(self):
        if self.extractor not in DESCRIPTOR_BYTES:
            raise KitError(f"local features: extractor {self.extractor!r}; expected one of {', '.join(DESCRIPTOR_BYTES)}")
        if self.foreground not in ("none", "grabcut"):
            raise KitError(f"local features: foreground {self.foreground!r}; expected none or grabcut")
        if self.size < 64 or self.keypoints < 8:
            raise KitError(f"local features: size {self.size} (>= 64) and keypoints {self.keypoints} (>= 8)")

    @property
    def key(self) -> str:
        crop = f"box{self.box_margin:g}" if self.use_boxes else "photo"
        extra = ("-grabcut" if self.foreground == "grabcut" else "") + ("-mirror" if self.mirror else "")
        return f"local-{self.extractor}-{self.size}-{self.keypoints}-{crop}{extra}"

    @property
    def width(self) -> int:
        return DESCRIPTOR_BYTES[self.extractor]


def load_crop(path: str | os.PathLike, box: Box, spec: FeatureSpec) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the box grown by its margin (clipped to the photo) or the photo, its
    longest side at most `spec.size`. Raises BadImage."""
    image = decode(path, "RGB")
    width, height = image.size
    if spec.use_boxes and box is not None:
        x0, y0, x1, y1 = box
        mx, my = (x1 - x0) * spec.box_margin, (y1 - y0) * spec.box_margin
        region = (max(0.0, x0 - mx), max(0.0, y0 - my), min(float(width), x1 + mx), min(float(height), y1 + my))
    else:
        region = (0.0, 0.0, float(width), float(height))
    rw, rh = max(region[2] - region[0], 1.0), max(region[3] - region[1], 1.0)
    scale = min(1.0, spec.size / max(rw, rh))
    out = (max(8, int(round(rw * scale))), max(8, int(round(rh * scale))))
    return np.asarray(image.resize(out, Image.Resampling.BILINEAR, box=region), np.uint8)


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 0/255: GrabCut's foreground, started from the photo less a tenth on each side,
    on a copy whose longest side is GRABCUT_SIDE; everything when GrabCut finds nothing."""
    h, w = rgb.shape[:2]
    s = min(1.0, GRABCUT_SIDE / max(h, w))
    small = cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (max(8, int(w * s)), max(8, int(h * s))),
                       interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    mask = np.zeros((sh, sw), np.uint8)
    rect = (sw // 10, sh // 10, sw - 2 * (sw // 10), sh - 2 * (sh // 10))
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small, mask, rect, bgd, fgd, 2, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return np.full((h, w), 255, np.uint8)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    if fg.mean() < 255 * 0.05:  # a sliver: GrabCut lost the animal; better all than nothing
        return np.full((h, w), 255, np.uint8)
    fg = cv2.dilate(fg, np.ones((5, 5), np.uint8))
    return cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)


def _detector(spec: FeatureSpec):
    if spec.extractor == "sift":
        return cv2.SIFT_create(nfeatures=spec.keypoints)
    return cv2.ORB_create(nfeatures=spec.keypoints, fastThreshold=10)


def extract(rgb: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(xy (n, 2) float32, descriptors (n, D) uint8) of an RGB crop, the strongest `keypoints`."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    mask = foreground_mask(rgb) if spec.foreground == "grabcut" else None
    points, desc = _detector(spec).detectAndCompute(grey, mask)
    if desc is None or not points:
        return np.zeros((0, 2), np.float32), np.zeros((0, spec.width), np.uint8)
    order = np.argsort([-p.response for p in points], kind="stable")[:spec.keypoints]
    xy = np.array([points[i].pt for i in order], np.float32).reshape(-1, 2)
    desc = desc[order]
    if spec.extractor == "sift":  # SIFT's float descriptor lies in 0..255 already: stored as bytes
        desc = np.clip(np.rint(desc), 0, 255)
    return xy, desc.astype(np.uint8)


@dataclass
class FeatureCache:
    """The local features of every train and test image of a competition (kit/data/crops.image_keys order)."""

    directory: Path
    spec: FeatureSpec
    keys: list[str]  # "<train or test directory>/<image name>"
    xy: np.ndarray  # (N, K, 2) float32
    desc: np.ndarray  # (N, K, D) uint8
    count: np.ndarray  # (N,) int32
    size: np.ndarray  # (N, 2) int32 (W, H) of each crop
    bad: np.ndarray  # (N,) bool
    reasons: dict[str, str]
    mirrored: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # xy, desc, count of the mirrored images

    def __post_init__(self):
        self._row = {k: i for i, k in enumerate(self.keys)}

    def rows(self, keys) -> np.ndarray:
        try:
            return np.fromiter((self._row[k] for k in keys), np.int64)
        except KeyError as e:
            raise KitError(f"{self.directory}: image {e.args[0]!r} is not in the feature cache") from None


def open_features(comp, spec: FeatureSpec, *, cache_root: str | os.PathLike | None = None, progress: bool = False,
                  workers: int | None = None, echo=None) -> FeatureCache:
    """The competition's local features for `spec`, computed or brought up to date first."""
    directory = Path(cache_root or comp.root / "cache") / spec.key
    keys, paths, boxes = image_keys(comp)
    stamps = [stamp(p, b, spec.use_boxes) for p, b in zip(paths, boxes)]
    k, d = spec.keypoints, spec.width
    arrays = {"xy": ((k, 2), "float32"), "desc": ((k, d), "uint8"), "count": ((), "int32"), "size": ((2,), "int32")}
    if spec.mirror:
        arrays |= {"xy_m": ((k, 2), "float32"), "desc_m": ((k, d), "uint8"), "count_m": ((), "int32")}

    def compute(i: int) -> dict[str, np.ndarray]:
        rgb = load_crop(paths[i], boxes[i], spec)
        out = {"size": np.array([rgb.shape[1], rgb.shape[0]], np.int32)}
        for suffix, image in (("", rgb), ("_m", rgb[:, ::-1])) if spec.mirror else (("", rgb),):
            xy, desc = extract(image, spec)
            row_xy, row_desc = np.zeros((k, 2), np.float32), np.zeros((k, d), np.uint8)
            row_xy[:len(xy)], row_desc[:len(desc)] = xy, desc
            out |= {f"xy{suffix}": row_xy, f"desc{suffix}": row_desc, f"count{suffix}": np.int32(len(xy))}
        return out

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one image a thread, a thread a core: OpenCV's own pool would oversubscribe them
    try:
        maps, reasons = open_row_cache(directory, keys, stamps, asdict(spec), VERSION, arrays, compute,
                                       what="feature cache", progress=progress, workers=workers, echo=echo)
    finally:
        cv2.setNumThreads(threads)
    bad = np.zeros(len(keys), bool)
    bad[[i for i, key in enumerate(keys) if key in reasons]] = True
    mirrored = (maps["xy_m"], maps["desc_m"], maps["count_m"]) if spec.mirror else None
    return FeatureCache(directory, spec, keys, maps["xy"], maps["desc"], maps["count"], maps["size"], bad, reasons,
                        mirrored)
