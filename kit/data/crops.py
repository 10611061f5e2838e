"""The decoded-crop cache: each image decoded, cropped and resized once per input size, then read
from one memory-mapped uint8 array by every member, every epoch and export.

`crop(path, box, spec)` is the members' preprocessing up to pixels: the fluke box grown by
`box_margin` (clipped to the photo), or the whole photo, resized to the input size (H, W), with
`ROOM` of that size added on every side: real pixels where the photo has them, the crop's mean
colour where it does not. The network's input is the centre (H, W) of it (`centre`); the room is
what the training augmentation zooms out, shifts and rotates into.

On disk, `<competition>/cache/crops-<H>x<W>-<grey|rgb>-<box margin|photo>/`:
- `pixels.npy`: (N, H + 2 ph, W + 2 pw, C) uint8, every train and test image (C = 1 for grey);
- `index.json`: the spec, each image's key (its file relative to the competition: `train/<name>`,
  AnimalCLEF's `images/<dataset>/<split>/<file>`), file size, mtime and box, and the images that
  could not be decoded, with the reason (their rows are zeros).

`open_crops` rebuilds the whole cache when the image list or the spec changes, and decodes an
image again when its file or its box changed. It decodes on a thread per core (Pillow's decode
and resize release the GIL). Processes asking for the same cache at once (folds trained side by
side) take turns through a file lock: one builds, the others find it fresh (kit/data/rowcache.py).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from kit.data.images import BadImage, decode  # noqa: F401  (crop raises it; callers import it here)
from kit.data.rowcache import open_row_cache
from kit.errors import KitError

ROOM = 0.125  # share of the crop's height / width kept on each side for the augmentation
VERSION = 1  # of `crop`: a cache made by another version is rebuilt

Box = Sequence[int] | None


@dataclass(frozen=True)
class CropSpec:
    """What a member's pixels depend on."""

    size: tuple[int, int]  # (H, W) of the network input
    channels: int  # 1: greyscale, 3: RGB
    use_boxes: bool
    box_margin: float

    @classmethod
    def of(cls, info) -> "CropSpec":
        """The spec of a MemberInfo."""
        return cls(tuple(int(v) for v in info.input_size), int(info.channels), bool(info.use_boxes),
                   float(info.box_margin))

    @property
    def room(self) -> tuple[int, int]:
        """(ph, pw): pixels of room above/below and left/right of the centre."""
        h, w = self.size
        return int(round(h * ROOM)), int(round(w * ROOM))

    @property
    def shape(self) -> tuple[int, int, int]:
        (h, w), (ph, pw) = self.size, self.room
        return h + 2 * ph, w + 2 * pw, self.channels

    @property
    def key(self) -> str:
        h, w = self.size
        boxes = f"box{self.box_margin:g}" if self.use_boxes else "photo"
        return f"crops-{h}x{w}-{'grey' if self.channels == 1 else 'rgb'}-{boxes}"


# ---- one image ---------------------------------------------------------------------------------

def crop(path: str | os.PathLike, box: Box, spec: CropSpec) -> np.ndarray:
    """(H + 2 ph, W + 2 pw, C) uint8: the region around the box (or photo), resized. Raises BadImage."""
    image = decode(path, "L" if spec.channels == 1 else "RGB")
    width, height = image.size
    left, top, right, bottom = 0.0, 0.0, float(width), float(height)
    if spec.use_boxes and box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        dx, dy = spec.box_margin * (x1 - x0), spec.box_margin * (y1 - y0)
        l, t = max(0, int(round(x0 - dx))), max(0, int(round(y0 - dy)))
        r, b = min(width, int(round(x1 + dx))), min(height, int(round(y1 + dy)))
        if r > l and b > t:  # a box outside the photo: keep the whole photo
            left, top, right, bottom = float(l), float(t), float(r), float(b)
    (h, w), (ph, pw) = spec.size, spec.room
    hc, wc, c = spec.shape
    sx, sy = w / (right - left), h / (bottom - top)  # output pixels per source pixel
    region = (left - pw / sx, top - ph / sy, right + pw / sx, bottom + ph / sy)
    if region[0] >= 0 and region[1] >= 0 and region[2] <= width and region[3] <= height:
        out = np.asarray(image.resize((wc, hc), Image.Resampling.BILINEAR, box=region), np.uint8)
    else:  # the room reaches past the photo: the whole output pixels inside it, the rest its mean colour
        ox0, oy0 = math.ceil(max(0.0, -region[0]) * sx - 1e-6), math.ceil(max(0.0, -region[1]) * sy - 1e-6)
        ox1 = math.floor((min(region[2], width) - region[0]) * sx + 1e-6)
        oy1 = math.floor((min(region[3], height) - region[1]) * sy + 1e-6)
        source = (max(0.0, region[0] + ox0 / sx), max(0.0, region[1] + oy0 / sy),
                  min(float(width), region[0] + ox1 / sx), min(float(height), region[1] + oy1 / sy))
        part = np.asarray(image.resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BILINEAR, box=source), np.uint8)
        part = part.reshape(oy1 - oy0, ox1 - ox0, c)
        out = np.empty((hc, wc, c), np.uint8)
        out[:] = np.round(part.reshape(-1, c).mean(0)).astype(np.uint8)
        out[oy0:oy1, ox0:ox1] = part
    return out.reshape(hc, wc, c)


def centre(pixels: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The network's view of cached pixels: (..., H, W, C) cut from (..., Hc, Wc, C)."""
    (h, w), (ph, pw) = spec.size, spec.room
    return pixels[..., ph:ph + h, pw:pw + w, :]


# ---- the cache ---------------------------------------------------------------------------------

@dataclass
class CropCache:
    """The cached pixels of every image of one competition, for one spec."""

    directory: Path
    spec: CropSpec
    keys: list[str]  # each image's file relative to the competition (image_keys), in row order
    pixels: np.ndarray  # (N, Hc, Wc, C) uint8, memory-mapped read-only
    bad: np.ndarray  # (N,) bool: could not be decoded (zeros in pixels)
    reasons: dict[str, str]  # key -> why, for the bad ones

    def __post_init__(self):
        self._row = {k: i for i, k in enumerate(self.keys)}

    def rows(self, keys: Iterable[str]) -> np.ndarray:
        try:
            return np.fromiter((self._row[k] for k in keys), np.int64)
        except KeyError as e:
            raise KitError(f"{self.directory}: image {e.args[0]!r} is not in the crop cache") from None


def image_keys(comp) -> tuple[list[str], list[Path], list[Box]]:
    """Every train and test image of a competition: (keys, paths, boxes). A key is the image's file
    relative to the competition ('/'-separated: `train/<name>`, or AnimalCLEF's `images/<dataset>/...`)."""
    keys, paths, boxes = [], [], []
    box_of = {}
    if comp.boxes is not None:
        box_of = {n: (int(a), int(b), int(c), int(d)) for n, a, b, c, d in
                  zip(comp.boxes.index, comp.boxes["x0"], comp.boxes["y0"], comp.boxes["x1"], comp.boxes["y1"])}
    for split, names in (("train", comp.train["image"]), ("test", comp.test_images)):
        for name in names:
            keys.append(comp.relative_path(name, split))
            paths.append(comp.image_path(name, split))
            boxes.append(box_of.get(name))
    return keys, paths, boxes


def stamp(path: Path, box: Box, use_boxes: bool) -> list:
    """What an image's cached rows depend on: its file's size and mtime, and its box when used."""
    try:
        st = path.stat()
        stat = [st.st_size, st.st_mtime_ns]
    except OSError:
        stat = [None, None]
    return stat + [list(box) if (use_boxes and box is not None) else None]


def open_crops(comp, spec: CropSpec, *, cache_root: str | os.PathLike | None = None, progress: bool = False,
               workers: int | None = None, echo=None) -> CropCache:
    """The competition's crop cache for `spec`, built or brought up to date first (kit/data/rowcache.py).

    `cache_root` defaults to `<competition>/cache`. `echo(line)` hears what was (re)built.
    """
    directory = Path(cache_root or comp.root / "cache") / spec.key
    keys, paths, boxes = image_keys(comp)
    stamps = [stamp(p, b, spec.use_boxes) for p, b in zip(paths, boxes)]
    arrays, reasons = open_row_cache(
        directory, keys, stamps, _spec_dict(spec), VERSION, {"pixels": (spec.shape, "uint8")},
        lambda i: {"pixels": crop(paths[i], boxes[i], spec)}, what="crop cache", progress=progress, workers=workers,
        echo=echo)
    bad = np.zeros(len(keys), bool)
    bad[[i for i, k in enumerate(keys) if k in reasons]] = True
    return CropCache(directory, spec, keys, arrays["pixels"], bad, reasons)


def _spec_dict(spec: CropSpec) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
