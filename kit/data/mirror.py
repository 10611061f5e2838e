"""Does a mirrored photo keep its animal's identity? Measured on the competition's own photos, for
the starter's `augment.flip` (`prepare.py --init`).

A face is about symmetric: its mirror image is the same dog (`flip: same`, a free augmentation). A
fluke's notches or a flank's stripes are not: the mirror of a left flank is no animal of the
collection, and the 2019 winners trained it as a new identity (`flip: twin`). Which one a
collection is, its photos can tell without any training:

- pairs (a, b) of two photos of one identity, and a stranger c (a photo of another identity);
- each photo as a small greyscale thumbnail, brightness and contrast taken out (the pattern only:
  colour would survive a mirror whatever the animal's symmetry);
- the identity signal: how much more a looks like b than like c, sim(a, b) - sim(a, c);
- the mirror's: the same with a mirrored, sim(a', b) - sim(a', c) (the stranger keeps a pose or
  framing that a mirror breaks for everyone out of the comparison).

`retained` = the mirror's signal over the identity signal, with a bootstrap interval over pairs:
about 1 for a symmetric subject, about 0 for an asymmetric one. Where the thumbnails carry no
identity signal at all (real photos with the animal small in the frame), nothing can be told and
the answer is `none`: flip nothing, which is never wrong, only a lost augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from kit.data.images import BadImage, open_image

PAIRS = 300  # identities sampled (one pair each)
THUMB_PIXELS = 16 * 32  # a thumbnail's area: coarse enough to forgive a few pixels of pose
SPLIT = 0.5  # `retained` whose whole interval lies above it: same; below it: twin; across it: none
MIN_SIGNAL_T = 3.0  # the identity signal's t statistic below which nothing can be told


@dataclass(frozen=True)
class FlipMeasure:
    choice: str  # same | twin | none
    retained: float  # the mirror's identity signal over the original's (nan: no signal)
    low: float
    high: float  # the bootstrap 95% interval of `retained`
    signal_t: float  # the identity signal's t statistic (mean over its standard error)
    pairs: int

    def why(self) -> str:
        """The figure behind the choice, in words (the recipe's comment)."""
        if self.pairs == 0:
            return "no identity has two readable photos: nothing to measure"
        if self.signal_t < MIN_SIGNAL_T:
            return (f"{self.pairs} pairs of one animal's photos look no more alike than strangers at thumbnail size "
                    f"(t = {self.signal_t:.1f}): the photos cannot tell; a mirror is left out")
        kept = f"a mirrored photo keeps {self.retained:.0%} [{self.low:.0%}, {self.high:.0%}] of its animal's likeness"
        if self.choice == "same":
            return f"{kept} ({self.pairs} pairs): symmetric, a mirror is the same animal"
        if self.choice == "twin":
            return f"{kept} ({self.pairs} pairs): asymmetric, a mirror is another animal"
        return f"{kept} ({self.pairs} pairs): between symmetric and not; a mirror is left out"


def thumbnail(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: greyscale, area-resized, zero mean and unit norm (the pattern, not the light)."""
    x = np.asarray(image.convert("L").resize((size[1], size[0]), Image.Resampling.BOX), np.float32).ravel()
    x -= x.mean()
    norm = float(np.linalg.norm(x))
    return (x / norm if norm > 0 else x).reshape(size)


def thumb_size(aspect: float) -> tuple[int, int]:
    """(H, W) of THUMB_PIXELS at the crops' aspect (W / H)."""
    aspect = min(max(aspect, 0.25), 4.0)
    h = max(4, int(round(np.sqrt(THUMB_PIXELS / aspect))))
    return h, max(4, int(round(h * aspect)))


def measure(thumbs: np.ndarray, pairs: np.ndarray, strangers: np.ndarray, seed: int = 0) -> FlipMeasure:
    """FlipMeasure from thumbnails (n, H, W) (unit-norm, as `thumbnail` makes them), `pairs` (p, 2)
    rows of two photos of one identity, and one stranger's row per pair."""
    p = len(pairs)
    if p < 2:
        return FlipMeasure("none", float("nan"), float("nan"), float("nan"), 0.0, p)
    flat = thumbs.reshape(len(thumbs), -1)
    mirrored = thumbs[:, :, ::-1].reshape(len(thumbs), -1)
    a, b, c = pairs[:, 0], pairs[:, 1], strangers
    sim = lambda x, y: np.einsum("ij,ij->i", x, y)  # noqa: E731
    signal = sim(flat[a], flat[b]) - sim(flat[a], flat[c])
    mirror = sim(mirrored[a], flat[b]) - sim(mirrored[a], flat[c])
    t = float(signal.mean() / (signal.std(ddof=1) / np.sqrt(p) + 1e-12))
    if t < MIN_SIGNAL_T:
        return FlipMeasure("none", float("nan"), float("nan"), float("nan"), t, p)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, p, (2000, p))
    ratios = mirror[idx].mean(axis=1) / np.maximum(signal[idx].mean(axis=1), 1e-12)
    low, high = (float(v) for v in np.quantile(ratios, [0.025, 0.975]))
    choice = "same" if low > SPLIT else "twin" if high < SPLIT else "none"
    return FlipMeasure(choice, float(mirror.mean() / signal.mean()), low, high, t, p)


def measure_flip(comp, aspect: float, use_boxes: bool, seed: int = 0) -> FlipMeasure:
    """Measure a competition's train photos: one pair of photos for up to PAIRS identities with
    two or more, each with a stranger from another pair; boxes crop when `use_boxes`."""
    rng = np.random.default_rng(seed)
    known = comp.train[comp.train["label"] != comp.unknown]
    groups = [g for _, g in known.groupby("label", sort=True)["image"] if len(g) >= 2]
    order = rng.permutation(len(groups))[:PAIRS]
    chosen = [tuple(rng.choice(groups[i].to_numpy(), 2, replace=False)) for i in order]
    size = thumb_size(aspect)
    thumbs, rows, pairs = [], {}, []

    def row(name: str) -> int | None:
        if name not in rows:
            try:
                with open_image(comp.image_path(name)) as im:
                    full = im.size
                    im.draft("RGB", (size[1] * 4, size[0] * 4))  # a JPEG decodes at a fraction of its size
                    box = comp.boxes.loc[name] if use_boxes and comp.boxes is not None and name in comp.boxes.index else None
                    if box is not None:  # boxes are in the full-size photo's pixels
                        sx, sy = im.size[0] / full[0], im.size[1] / full[1]
                        im = im.crop((box.x0 * sx, box.y0 * sy, box.x1 * sx, box.y1 * sy))
                    thumbs.append(thumbnail(im, size))
            except BadImage:
                rows[name] = None
                return None
            rows[name] = len(thumbs) - 1
        return rows[name]

    for a, b in chosen:
        ra, rb = row(a), row(b)
        if ra is not None and rb is not None:
            pairs.append((ra, rb))
    if len(pairs) < 2:
        return FlipMeasure("none", float("nan"), float("nan"), float("nan"), 0.0, len(pairs))
    pairs_arr = np.array(pairs, np.int64)
    strangers = np.roll(pairs_arr[:, 1], 1)  # the next pair's photo: another identity
    return measure(np.stack(thumbs), pairs_arr, strangers, seed)
