"""A synthetic humpback-fluke competition in the Kaggle 2019 layout, calibrated on the real one.

Every accuracy claim of the kit is measured on these competitions, so they copy what makes the
real one hard: a long-tailed label file dominated by `new_whale` and single-image ids, photos of
one animal that differ more than two animals do, greyscale and captioned photos, and the
planted duplicates ("the leak") and conflicting train labels the winners exploited.

Calibration (the real 2019 train.csv, 25,361 images; read once to derive these numbers):
- 9,664 `new_whale` images (38.1%); 5,004 known ids over the other 15,697 images.
- images per known id: 2,073 ids with one image (41.4%), 1,285 with two, 568 with three ...
  up to one id with 73 (`REAL_IMAGES_PER_ID`, the whole histogram). A smaller competition takes
  evenly spaced quantiles of that histogram, so it keeps its shape (share of singletons, of
  pairs, the tail) at any size; the "kaggle" size reproduces it exactly.
- test: 7,960 images, about 27.6% `new_whale` (never-seen animals); the known ones are drawn
  with probability proportional to the id's train count, as a random split by image would.
- 8,270 train images are greyscale (32.6%; real ones are single-channel JPEGs, so are ours),
  1,460 carry written text (5.8%).
- planted duplicates: ~135 of 7,960 test images (1.7%) re-encode a train image (2018
  playground: ~1,566 of 15,610); we plant 3.5%, so a small competition has a couple dozen.
  A few train pictures appear twice under two labels (an id and new_whale, or two ids): 0.2%.
- fluke boxes (a public kernel's boxes, 33,321 images): the fluke spans ~90% of the photo
  width (median x0 21, x1 991 of 1,050) and its visible part is ~3.2 times wider than tall.

A competition is drawn in two steps: `plan(size, seed)` fixes every label, name, duplicate and
per-image flag with one seeded generator (pure, milliseconds even at the kaggle size), then each
image is rendered from its own generator (`np.random.default_rng([seed, stream, index])`), so
the files are byte-identical for a seed whatever the number of workers. An animal is a fluke
outline (two lobes with their own scalloped, notched trailing edge and tips, a median notch, a
peduncle), a ventral black/white pattern from noise fields, spots and scars: all drawn per lobe,
so a mirrored fluke is another animal. A photo flexes the lobes and warps them (yaw, grazing
pitch, roll, scale, crop), hides the base under a level water line with foam and spray, sets it
on sea (and sometimes sky), and varies light, wet sheen, haze, blur, grain, resolution, colour,
caption and JPEG quality; scars gained later in life appear only on later photos. The written
box is the visible fluke's, loosened by ~3% per side as a detector's would be.

How hard: on "small", a raw-pixel nearest neighbour (box crop, 32x64 grey, cosine) scores MAP@5
0.42 at its best new_whale threshold (top-1 29% on known test ids); chance is ~0.28.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from kit.errors import KitError
from kit.io import atomic_dir, cpu_count
from kit.progress import progress as progress_bar

UNKNOWN = "new_whale"
VERSION = 1  # bump when a change alters the files a seed gives

# The real 2019 histogram: number of known ids (value) having that many train images (key).
REAL_IMAGES_PER_ID = {
    1: 2073, 2: 1285, 3: 568, 4: 273, 5: 172, 6: 136, 7: 86, 8: 76, 9: 62, 10: 46, 11: 39,
    12: 26, 13: 14, 14: 16, 15: 19, 16: 16, 17: 17, 18: 6, 19: 8, 20: 7, 21: 7, 22: 5, 23: 4,
    24: 7, 25: 2, 27: 1, 29: 2, 30: 3, 31: 3, 32: 1, 33: 1, 34: 2, 35: 1, 36: 1, 37: 3, 40: 3,
    45: 2, 47: 1, 48: 1, 49: 1, 50: 1, 51: 1, 54: 1, 57: 1, 61: 1, 62: 1, 65: 1, 73: 1,
}
REAL_TRAIN, REAL_TEST, REAL_IDS, REAL_NEW_WHALE = 25_361, 7_960, 5_004, 9_664
TEST_NEW_WHALE_SHARE = 0.276
GREY_SHARE = 8_270 / 25_361
CAPTION_SHARE = 1_460 / 25_361
TEST_DUPLICATE_SHARE = 0.035
TRAIN_CONFLICT_SHARE = 0.002

# Generator streams: each seeds its own generators, so adding draws to one never shifts another.
_PLAN, _ANIMAL, _PHOTO, _COPY, _SPECIES = 0, 1, 2, 3, 4

# Happywhale 2022's shape (`layout="happywhale"`): 51,033 train images of 15,587 individuals of 30
# species, the unknown label `new_individual`. The ten commonest species, by their share of the
# train images; each is drawn as a fluke or a dorsal fin of its own proportions and tone, and its
# test images are new animals more or less often than the others (`unknown`: a factor on the share).
@dataclass(frozen=True)
class Species:
    share: float
    shape: str  # fluke | fin
    unknown: float = 1.0
    height: tuple[float, float] = (0.4, 0.6)  # fin: apex above the base, canonical units
    falcate: tuple[float, float] = (1.4, 2.4)  # fin: how hooked the trailing edge is (1: straight)
    sweep: tuple[float, float] = (0.05, 0.25)  # fin: how far back the apex leans
    tone: tuple[float, float] = (0.2, 0.35)  # skin between the animal's black (0) and white (1)
    notches: tuple[int, int] = (1, 6)  # fin: nicks in the trailing edge, the animal's fingerprint


SPECIES = {
    "bottlenose_dolphin": Species(0.19, "fin", 1.0),
    "beluga": Species(0.15, "fin", 0.5, height=(0.08, 0.16), falcate=(1.0, 1.2), sweep=(-0.1, 0.1),
                      tone=(0.8, 0.92), notches=(0, 3)),
    "humpback_whale": Species(0.15, "fluke", 1.0),
    "blue_whale": Species(0.10, "fin", 1.6, height=(0.1, 0.2), falcate=(1.2, 2.0), tone=(0.35, 0.5), notches=(0, 3)),
    "false_killer_whale": Species(0.07, "fin", 0.8, height=(0.45, 0.65), falcate=(2.0, 3.0), sweep=(0.15, 0.35),
                                  tone=(0.06, 0.14)),
    "dusky_dolphin": Species(0.06, "fin", 1.2, height=(0.35, 0.5), tone=(0.3, 0.5)),
    "spinner_dolphin": Species(0.04, "fin", 1.4, height=(0.4, 0.55), falcate=(1.0, 1.4), tone=(0.25, 0.4)),
    "killer_whale": Species(0.04, "fin", 0.6, height=(0.7, 0.9), falcate=(1.0, 1.5), sweep=(0.0, 0.12),
                            tone=(0.04, 0.1)),
    "minke_whale": Species(0.04, "fin", 1.5, height=(0.15, 0.3), tone=(0.3, 0.45), notches=(0, 2)),
    "gray_whale": Species(0.03, "fluke", 1.3, tone=(0.3, 0.55)),
}
HAPPYWHALE_UNKNOWN = "new_individual"
LAYOUT_NAMES = ("humpback", "happywhale")


@dataclass(frozen=True)
class SizeSpec:
    n_train: int
    n_test: int
    width: tuple[int, int]  # photo width range in pixels (height follows from the aspect ratio)


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(200, 63, (256, 384)),
    "small": SizeSpec(2_000, 628, (256, 512)),
    "medium": SizeSpec(6_000, 1_883, (256, 512)),
    "kaggle": SizeSpec(REAL_TRAIN, REAL_TEST, (256, 512)),
}


# --------------------------------------------------------------------------------------------
# The plan: labels, names, duplicates, per-image flags. No pixels.


@dataclass(frozen=True)
class Plan:
    """Everything about a competition but its pixels; images are train first, then test."""

    size: str
    seed: int
    n_train: int
    image: np.ndarray  # (n,) str: file names, 9 hex digits + ".jpg"
    label: np.ndarray  # (n,) str: the train label, or the test image's true label
    animal: np.ndarray  # (n,) int: the animal in the picture (a copy shows its source's animal)
    source: np.ndarray  # (n,) int: index of the image this one re-encodes, -1 for a photo
    grey: np.ndarray  # (n,) bool: saved as a single-channel JPEG
    caption: np.ndarray  # (n,) bool: carries written text
    layout: str = "humpback"
    species: np.ndarray | None = None  # (n,) str, happywhale: each image's animal's species
    ids: dict | None = None  # happywhale: the plan's label -> the individual_id written

    @property
    def n_test(self) -> int:
        return len(self.image) - self.n_train

    def frame(self, split: str) -> pd.DataFrame:
        """`Image,Id` for "train" (train.csv) or "test" (test_truth.csv), sorted by image; in the
        happywhale layout `image,species,individual_id`."""
        part = slice(0, self.n_train) if split == "train" else slice(self.n_train, None)
        if self.layout == "happywhale":
            frame = pd.DataFrame({"image": self.image[part], "species": self.species[part],
                                  "individual_id": [self.ids.get(l, HAPPYWHALE_UNKNOWN) for l in self.label[part]]})
            return frame.sort_values("image", ignore_index=True)
        frame = pd.DataFrame({"Image": self.image[part], "Id": self.label[part]})
        return frame.sort_values("Image", ignore_index=True)

    def test_duplicates(self) -> dict[str, str]:
        """Test image -> the train image it re-encodes."""
        idx = np.flatnonzero(self.source[self.n_train :] >= 0) + self.n_train
        return {str(self.image[i]): str(self.image[self.source[i]]) for i in idx}

    def train_conflicts(self) -> list[dict[str, str]]:
        """Train pictures listed twice under two different labels."""
        idx = np.flatnonzero(self.source[: self.n_train] >= 0)
        return [
            {"image": str(self.image[i]), "label": str(self.label[i]),
             "source": str(self.image[self.source[i]]), "source_label": str(self.label[self.source[i]])}
            for i in idx
        ]

    def counts(self) -> dict[str, int]:
        train, test = self.label[: self.n_train], self.label[self.n_train :]
        known = train[train != UNKNOWN]
        _, per_id = np.unique(known, return_counts=True)
        return {
            "train": int(self.n_train),
            "test": int(self.n_test),
            "ids": int(len(per_id)),
            "train_new_whale": int((train == UNKNOWN).sum()),
            "test_new_whale": int((test == UNKNOWN).sum()),
            "ids_with_one_image": int((per_id == 1).sum()),
            "ids_with_two_images": int((per_id == 2).sum()),
            "largest_id": int(per_id.max()) if len(per_id) else 0,
            "greyscale": int(self.grey.sum()),
            "captioned": int(self.caption.sum()),
            "test_duplicates": int((self.source[self.n_train :] >= 0).sum()),
            "train_conflicts": int((self.source[: self.n_train] >= 0).sum()),
        }


def _spec(size: str) -> SizeSpec:
    if size not in SIZES:
        raise KitError(f"size {size!r} is not a synthetic competition size; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def _images_per_id(n_ids: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """Image counts for n_ids ids summing to total, shaped like the real histogram."""
    real = np.repeat(np.array(list(REAL_IMAGES_PER_ID)), list(REAL_IMAGES_PER_ID.values()))
    counts = real[((np.arange(n_ids) + 0.5) * len(real) / n_ids).astype(int)].copy()
    # Settle the rounding on ids with 3+ images, so the singleton and pair shares stay exact.
    while (diff := total - int(counts.sum())) != 0:
        big = np.flatnonzero(counts >= (3 if diff > 0 else 4))
        if len(big) == 0:
            big = np.flatnonzero(counts >= (1 if diff > 0 else 2))
        pick = rng.choice(big, size=min(abs(diff), len(big)), replace=False)
        counts[pick] += np.sign(diff)
    return rng.permutation(counts)


def _hex_names(rng: np.random.Generator, n: int, digits: int) -> list[str]:
    names: list[str] = []
    seen: set[int] = set()
    while len(names) < n:
        for v in rng.integers(0, 16**digits, size=n - len(names) + 8).tolist():
            if v not in seen and len(names) < n:
                seen.add(v)
                names.append(f"{v:0{digits}x}")
    return names


def plan(size: str = "small", seed: int = 0, layout: str = "humpback") -> Plan:
    """Draw a competition's labels, names and duplicates (no pixels): pure and fast. The happywhale
    layout is the same draw (so the same difficulty) with species and Happywhale's names on top."""
    if layout not in LAYOUT_NAMES:
        raise KitError(f"layout {layout!r} is not a synthetic layout; choose one of {', '.join(LAYOUT_NAMES)}")
    spec = _spec(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise KitError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([seed, _PLAN])
    n_train, n_test = spec.n_train, spec.n_test

    # Train: known ids shaped like the real histogram, the rest new_whale (one animal each).
    n_new = round(REAL_NEW_WHALE * n_train / REAL_TRAIN)
    n_ids = max(1, round(REAL_IDS * n_train / REAL_TRAIN))
    per_id = _images_per_id(n_ids, n_train - n_new, rng)
    animal = np.concatenate([np.repeat(np.arange(n_ids), per_id), n_ids + np.arange(n_new)])
    animal = rng.permutation(animal)
    known = animal < n_ids  # a train slot's label is its animal's id, or new_whale
    source = np.full(n_train, -1)

    # Conflicting train duplicates: a slot re-encodes another slot's picture under its own label;
    # half are new_whale slots copying an id's picture, half id slots (of ids with 3+ images)
    # copying a picture of another id or of a new_whale.
    n_conflict = max(2, round(TRAIN_CONFLICT_SHARE * n_train))
    rich = known & (per_id[np.minimum(animal, n_ids - 1)] >= 3)
    taken = np.zeros(n_train, bool)
    for k in range(n_conflict):
        slots = np.flatnonzero(~taken & (~known if k % 2 == 0 else rich))
        if len(slots) == 0:
            continue
        slot = rng.choice(slots)
        candidates = np.flatnonzero(~taken & (animal != animal[slot]) & (known if k % 2 == 0 else True))
        src = rng.choice(candidates)
        source[slot] = src
        taken[[slot, src]] = True

    # Test: planted duplicates of train pictures, never-seen animals, known ids by train count.
    n_dup = max(3, round(TEST_DUPLICATE_SHARE * n_test))
    dup_src = rng.choice(np.flatnonzero(source < 0), size=n_dup, replace=False)
    n_new_test = max(0, round(TEST_NEW_WHALE_SHARE * n_test) - int((~known[dup_src]).sum()))
    n_known_test = n_test - n_dup - n_new_test
    test_animal = np.concatenate([
        animal[dup_src],
        n_ids + n_new + np.arange(n_new_test),
        rng.choice(n_ids, size=n_known_test, p=per_id / per_id.sum()),
    ])
    test_source = np.concatenate([dup_src, np.full(n_new_test + n_known_test, -1)])
    order = rng.permutation(n_test)
    test_animal, test_source = test_animal[order], test_source[order]

    animal = np.concatenate([animal, test_animal])
    source = np.concatenate([source, test_source])
    ids = np.array([f"w_{h}" for h in _hex_names(rng, n_ids, 7)], dtype=object)
    label = np.where(animal < n_ids, ids[np.minimum(animal, n_ids - 1)], UNKNOWN).astype(object)
    copy = source >= 0
    # A train conflict keeps its slot's label; a planted test duplicate takes its source's.
    label[n_train:][copy[n_train:]] = label[source[n_train:][copy[n_train:]]]
    animal[copy] = animal[source[copy]]
    n = n_train + n_test
    grey = rng.random(n) < GREY_SHARE
    caption = rng.random(n) < CAPTION_SHARE
    grey[copy], caption[copy] = grey[source[copy]], caption[source[copy]]
    image = np.array([f"{h}.jpg" for h in _hex_names(rng, n, 9)], dtype=object)
    out = Plan(size, seed, n_train, image, label, animal, source, grey, caption)
    return out if layout == "humpback" else _with_species(out, n_ids)


def _with_species(p: Plan, n_ids: int) -> Plan:
    """Each animal its species (a known identity by the species' share of images; a new animal by
    that share times the species' `unknown` factor), and Happywhale's 12-hex individual ids; from
    a stream of its own, so the humpback draw of the seed is unchanged."""
    rng = np.random.default_rng([p.seed, _SPECIES])
    names = list(SPECIES)
    share = np.array([SPECIES[s].share for s in names])
    new_share = share * np.array([SPECIES[s].unknown for s in names])
    n_animals = int(p.animal.max()) + 1
    species_of = np.where(np.arange(n_animals) < n_ids, rng.choice(len(names), n_animals, p=share / share.sum()),
                          rng.choice(len(names), n_animals, p=new_share / new_share.sum()))
    known = sorted({str(l) for l in p.label if l != UNKNOWN})
    ids = dict(zip(known, _hex_names(rng, len(known), 12)))
    species = np.array([names[k] for k in species_of[p.animal]], dtype=object)
    return dataclasses.replace(p, layout="happywhale", species=species, ids=ids)


# --------------------------------------------------------------------------------------------
# Animals: a fluke outline and ventral pattern in a canonical frame, drawn once per animal.

TEX_W, TEX_H = 512, 256
UNIT = 236.0  # canonical pixels per fluke unit; a lobe spans one unit from the notch
ORIGIN = (256.0, 44.0)  # canonical pixel of the median notch's level line (u, v) = (0, 0)


@dataclass(frozen=True)
class _Animal:
    alpha: np.ndarray  # (TEX_H, TEX_W) float32 in [0, 1]: the fluke's silhouette
    mask: Image.Image  # the same as an L image, ready to warp
    pattern: Image.Image  # L: ventral pigmentation, 0 black .. 255 white, spots and old scars
    scars: tuple  # (birth, points, width, value): drawn on photos taken after `birth`
    dark: np.ndarray  # (3,) float32 skin colours
    white: np.ndarray
    v_base: float  # canonical v where the lobes meet the peduncle


def _noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A smooth random field: a (rows, cols) normal grid upsampled bicubically to size (w, h)."""
    small = rng.standard_normal((max(2, grid[0]), max(2, grid[1]))).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


def _trailing_edge(rng: np.random.Generator, a: np.ndarray) -> tuple[np.ndarray, dict]:
    """One lobe's trailing edge v(a), a in [0, 1] from the notch to the tip, and its shape."""
    tip = rng.uniform(-0.08, 0.04)  # the tip's height (negative: above the notch line)
    depth = rng.uniform(0.16, 0.34)  # how far the notch sits below the tip
    power = rng.uniform(1.2, 2.6)
    sag = rng.uniform(-0.04, 0.06)  # concave or convex lobe
    v = tip + depth * (1 - a) ** power + sag * np.sin(np.pi * a)
    for k in (1, 2, 3):
        v += rng.normal(0, 0.008 / k) * np.sin(2 * np.pi * k * a + rng.uniform(0, 2 * np.pi))
    # Scallops between serration points: the trailing edge is the fluke's fingerprint.
    n = int(rng.integers(12, 40))
    points = np.concatenate([[0.0], np.sort(rng.uniform(0.04, 0.99, n)), [1.0]])
    amp = rng.uniform(0.003, 0.016) * rng.lognormal(0, 0.5, n + 1)
    seg = np.clip(np.searchsorted(points, a, side="right") - 1, 0, n)
    frac = (a - points[seg]) / np.maximum(points[seg + 1] - points[seg], 1e-6)
    v += amp[seg] * np.sin(np.pi * np.clip(frac, 0, 1)) ** 0.6
    # Bites and nicks: notches cut deep into the edge.
    for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
        c, w, d = rng.uniform(0.1, 0.95), rng.uniform(0.015, 0.06), rng.uniform(0.015, 0.06)
        v += d * np.clip(1 - (np.abs(a - c) / w) ** 2, 0, None) ** rng.uniform(0.3, 1.0)
    curl = rng.uniform(0, 0.06) * np.clip((a - 0.8) / 0.2, 0, None) ** 2
    return v - curl, {"tip": tip, "curl": curl}


@functools.lru_cache(maxsize=32)  # tasks come grouped by animal; ~1 MB each
def _animal(seed: int, index: int) -> _Animal:
    rng = np.random.default_rng([seed, _ANIMAL, index])
    u = (np.arange(TEX_W, dtype=np.float32) + 0.5 - ORIGIN[0]) / UNIT
    v = ((np.arange(TEX_H, dtype=np.float32) + 0.5 - ORIGIN[1]) / UNIT)[:, None]

    # Outline: per lobe a trailing edge (top) and a leading edge (bottom) meeting at the tip.
    top = np.full(TEX_W, 10.0, np.float32)
    bot = np.full(TEX_W, -10.0, np.float32)
    base = rng.uniform(0.52, 0.72)  # the lobes meet the peduncle this far below the notch line
    for side in (u < 0, u >= 0):
        span = rng.uniform(0.92, 1.0)
        a = np.abs(u[side]) / span
        inside = a <= 1
        t, shape = _trailing_edge(rng, np.clip(a, 0, 1))
        lead = shape["tip"] - shape["curl"] + (base - shape["tip"]) * (1 - np.clip(a, 0, 1)) ** rng.uniform(0.4, 0.7)
        lead += rng.normal(0, 0.01) * np.sin(np.pi * np.clip(a, 0, 1) * rng.uniform(1, 3))
        top[side] = np.where(inside, t, 10.0)
        bot[side] = np.where(inside, np.maximum(lead, t + 0.004), -10.0)
    notch_w, notch_d = rng.uniform(0.015, 0.05), rng.uniform(0.03, 0.09)
    top += notch_d * np.clip(1 - np.abs(u) / notch_w, 0, None) ** 1.5
    ped_w, ped_k = rng.uniform(0.06, 0.1), rng.uniform(0.05, 0.3)
    ped = ped_w + ped_k * np.clip(v - base, 0, None)
    inside_top = np.clip((v - top) * UNIT + 0.5, 0, 1)
    inside_bot = np.clip((bot - v) * UNIT + 0.5, 0, 1)
    inside_ped = np.clip((ped - np.abs(u)) * UNIT + 0.5, 0, 1) * (v > base - 0.1)
    alpha = (inside_top * np.maximum(inside_bot, inside_ped)).astype(np.float32)

    # Ventral pattern: a thresholded noise field biased by the usual humpback features.
    field = (_noise(rng, (4, 8), (TEX_W, TEX_H)) + 0.55 * _noise(rng, (8, 16), (TEX_W, TEX_H))
             + 0.3 * _noise(rng, (16, 32), (TEX_W, TEX_H)) + 0.15 * _noise(rng, (48, 96), (TEX_W, TEX_H)))
    field /= field.std() + 1e-6
    # Distance below a smoothed trailing edge: a bite cuts through the fringe, not along it.
    smooth_top = np.convolve(np.minimum(top, 1.0), np.ones(15) / 15, mode="same")
    below_edge = np.clip((v - smooth_top) * UNIT, 0, None)
    field -= rng.uniform(0, 3) * np.exp(-below_edge / rng.uniform(2, 14))  # dark trailing fringe
    field -= rng.uniform(0, 2) * np.exp(-np.clip((bot - v) * UNIT, 0, None) / rng.uniform(3, 25))
    field += rng.normal(0, 1.0) * np.exp(-((u / rng.uniform(0.05, 0.35)) ** 2))  # median band
    field -= rng.uniform(0.5, 3) * np.clip((v - base) * 8, 0, 1) * (np.abs(u) < 0.3)  # peduncle
    if rng.random() < 0.35:  # streaks radiating from the peduncle
        angle = np.arctan2(v - base - rng.uniform(0.2, 0.6), u)
        ray = rng.standard_normal(int(rng.integers(20, 60)))
        field += rng.uniform(0.5, 1.5) * np.interp(angle, np.linspace(-np.pi, 0, len(ray)), ray)
    kind = rng.choice(3, p=[0.25, 0.35, 0.4])  # mostly white, mixed, mostly black
    white_share = [rng.uniform(0.65, 0.97), rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.3)][kind]
    cut = NormalDist().inv_cdf(min(max(1 - white_share, 0.005), 0.995))
    soft = rng.uniform(0.02, 0.12)
    pigment = 1 / (1 + np.exp(-np.clip((field - cut) / soft, -30, 30)))
    pigment = pigment * rng.uniform(0.8, 1.0) + 0.04  # whites are never quite white
    pattern = Image.fromarray(np.clip(pigment * 255, 0, 255).astype(np.uint8))

    # Spots (barnacles, healed marks) and scars; scars with birth > 0 appear later in life.
    draw = ImageDraw.Draw(pattern)
    ys, xs = np.nonzero(alpha > 0.5)
    n_spots = int(min(600, rng.lognormal(3.2, 1.2))) if len(xs) else 0
    pick = rng.integers(0, len(xs), n_spots) if n_spots else np.zeros(0, int)
    radius = np.clip(rng.lognormal(0.0, 0.5, n_spots), 0.5, 4)
    for x, y, r in zip(xs[pick].tolist(), ys[pick].tolist(), radius.tolist()):
        shade = pigment[y, x] > 0.5
        value = int(rng.integers(10, 80) if shade else rng.integers(170, 245))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=value)
    scars = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3, 4]))):  # rake marks: parallel lines
        k = int(rng.integers(len(xs))) if len(xs) else 0
        x0, y0 = (int(xs[k]), int(ys[k])) if len(xs) else (256, 100)
        ang, length = rng.uniform(0, np.pi), rng.uniform(15, 70)
        dx, dy = np.cos(ang), np.sin(ang)
        gap = rng.uniform(3, 8)
        value = int(rng.integers(180, 250) if rng.random() < 0.7 else rng.integers(10, 60))
        birth = 0.0 if rng.random() < 0.6 else rng.uniform(0, 1)
        for j in range(int(rng.integers(2, 5))):
            ox, oy = -dy * gap * j, dx * gap * j
            pts = [(x0 + ox, y0 + oy), (x0 + ox + dx * length, y0 + oy + dy * length)]
            scars.append((birth, pts, int(rng.integers(1, 4)), value))
    for _ in range(int(rng.choice([0, 0, 1, 2]))):  # single long lines
        k = int(rng.integers(len(xs))) if len(xs) else 0
        x0, y0 = (int(xs[k]), int(ys[k])) if len(xs) else (256, 100)
        ang, length = rng.uniform(0, np.pi), rng.uniform(40, 160)
        bend = rng.normal(0, 10)
        pts = [(x0 + np.cos(ang) * length * t - np.sin(ang) * bend * np.sin(np.pi * t),
                y0 + np.sin(ang) * length * t + np.cos(ang) * bend * np.sin(np.pi * t)) for t in np.linspace(0, 1, 6)]
        value = int(rng.integers(5, 50) if pigment[y0, x0] > 0.5 else rng.integers(190, 250))
        scars.append((0.0 if rng.random() < 0.7 else rng.uniform(0, 1), pts, int(rng.integers(1, 3)), value))
    for birth, pts, width, value in scars:
        if birth == 0.0:
            draw.line(pts, fill=value, width=width)
    later = tuple(s for s in scars if s[0] > 0)

    dark = np.array([22, 24, 29], np.float32) * rng.uniform(0.7, 1.4)
    white = np.array([234, 237, 240], np.float32) - rng.uniform(0, 25)
    mask = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))
    return _Animal(alpha, mask, pattern, later, dark.astype(np.float32), white.astype(np.float32), float(base))


@functools.lru_cache(maxsize=32)
def _fin(seed: int, index: int, species: str) -> _Animal:
    """A dorsal fin above a curved back, in the fluke's canonical frame: a convex leading edge up to
    the apex, a hooked (falcate) trailing edge down to the base with nicks in it (the animal's
    fingerprint, as a fluke's trailing edge is), skin of the species' tone with scars and spots."""
    sp = SPECIES[species]
    rng = np.random.default_rng([seed, _ANIMAL, index])
    u = (np.arange(TEX_W, dtype=np.float32) + 0.5 - ORIGIN[0]) / UNIT
    v = ((np.arange(TEX_H, dtype=np.float32) + 0.5 - ORIGIN[1]) / UNIT)[:, None]
    base = rng.uniform(0.58, 0.68)
    apex_v = base - rng.uniform(*sp.height)
    apex_u = rng.uniform(*sp.sweep)
    lead_u, trail_u = rng.uniform(-0.8, -0.45), apex_u + rng.uniform(0.2, 0.45)
    t = np.clip((v - apex_v) / (base - apex_v), 0, 1)  # 0 at the apex, 1 at the base
    lead = apex_u + (lead_u - apex_u) * t ** rng.uniform(0.45, 0.8)
    hook = rng.uniform(*sp.falcate)
    trail = apex_u + (trail_u - apex_u) * t ** hook + rng.uniform(0.0, 0.08) * (hook - 1) * np.sin(np.pi * t)
    for _ in range(int(rng.integers(sp.notches[0], sp.notches[1] + 1))):
        c, w, d = rng.uniform(0.05, 0.95), rng.uniform(0.015, 0.06), rng.uniform(0.01, 0.07)
        trail = trail - d * np.clip(1 - (np.abs(t - c) / w) ** 2, 0, None) ** rng.uniform(0.3, 1.0)
    fin = (np.clip((u - lead) * UNIT + 0.5, 0, 1) * np.clip((trail - u) * UNIT + 0.5, 0, 1)
           * np.clip((v - apex_v) * UNIT + 0.5, 0, 1))
    back = np.clip((v - (base - 0.02 + rng.uniform(0.05, 0.2) * u ** 2)) * UNIT + 0.5, 0, 1) * (np.abs(u) < 1.05)
    alpha = np.maximum(fin, back).astype(np.float32)

    tone = rng.uniform(*sp.tone)
    field = _noise(rng, (4, 8), (TEX_W, TEX_H)) + 0.5 * _noise(rng, (16, 32), (TEX_W, TEX_H))
    pigment = np.clip(tone + 0.06 * field / (field.std() + 1e-6), 0.02, 0.98)
    pattern = Image.fromarray((pigment * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pattern)
    ys, xs = np.nonzero(fin > 0.5)
    light = tone < 0.6  # marks show light on dark skin, dark on white
    for _ in range(int(min(300, rng.lognormal(2.5, 1.0)))) if len(xs) else ():
        k = int(rng.integers(len(xs)))
        r = float(np.clip(rng.lognormal(0.0, 0.5), 0.5, 4))
        value = int(rng.integers(150, 240) if light else rng.integers(20, 90))
        draw.ellipse((xs[k] - r, ys[k] - r, xs[k] + r, ys[k] + r), fill=value)
    scars = []
    for _ in range(int(rng.choice([0, 1, 2, 3]))) if len(xs) else ():
        k = int(rng.integers(len(xs)))
        ang, length = rng.uniform(0, np.pi), rng.uniform(10, 60)
        pts = [(float(xs[k]), float(ys[k])), (xs[k] + np.cos(ang) * length, ys[k] + np.sin(ang) * length)]
        value = int(rng.integers(170, 250) if light else rng.integers(10, 60))
        scars.append((0.0 if rng.random() < 0.7 else rng.uniform(0, 1), pts, int(rng.integers(1, 3)), value))
    for birth, pts, width, value in scars:
        if birth == 0.0:
            draw.line(pts, fill=value, width=width)
    dark = np.array([22, 24, 29], np.float32) * rng.uniform(0.7, 1.4)
    white = np.array([234, 237, 240], np.float32) - rng.uniform(0, 25)
    mask = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))
    later = tuple(s for s in scars if s[0] > 0)
    return _Animal(alpha, mask, pattern, later, dark, white, float(base + 0.15))  # water near the fin's base


def _animal_of(seed: int, index: int, species: str | None) -> _Animal:
    """The animal of a photo: a humpback fluke (the 2019 layout), or its species' fluke or fin."""
    if species is None:
        return _animal(seed, index)
    sp = SPECIES[species]
    if sp.shape == "fin":
        return _fin(seed, index, species)
    animal = _animal(seed, index)
    if species == "humpback_whale":
        return animal
    # another fluked species: its own tone, the humpback's black-and-white pattern muted to mottling
    rng = np.random.default_rng([seed, _SPECIES, index])
    tone = rng.uniform(*sp.tone)
    muted = np.asarray(animal.pattern, np.float32) / 255 * 0.3 + tone - 0.15
    return dataclasses.replace(animal, pattern=Image.fromarray(np.clip(muted * 255, 0, 255).astype(np.uint8)))


# --------------------------------------------------------------------------------------------
# Photos: pose, water, sea and sky, light, lens, caption, JPEG.


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE data mapping output points dst (4, 2) to input points src (4, 2)."""
    rows, rhs = [], []
    for (x, y), (X, Y) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -x * X, -y * X])
        rows.append([0, 0, 0, x, y, 1, -x * Y, -y * Y])
        rhs += [X, Y]
    return tuple(np.linalg.solve(np.array(rows, float), np.array(rhs, float)).tolist())


def _pose(rng: np.random.Generator, w: int, h: int):
    """A function mapping canonical (u, v) to photo (x, y): scale, yaw, pitch, roll, position."""
    frac = float(np.clip(rng.normal(0.9, 0.12), 0.45, 1.25))  # fluke span / photo width
    unit = frac * w / 2
    yaw = float(np.clip(rng.normal(0, 0.4), -0.9, 0.9))
    pitch = rng.uniform(0.45, 1.1)  # < 1: the fluke tilted away, seen at a grazing angle
    roll = np.deg2rad(rng.normal(0, 7))
    depth = rng.uniform(2.5, 6)  # camera distance in fluke units: perspective strength
    cx = w / 2 + rng.normal(0, 0.06) * w
    cy = h * rng.uniform(0.38, 0.6)

    def forward(u, v):
        x0, y0 = u, (v - 0.3) * pitch
        s = depth / (depth + x0 * np.sin(yaw))
        x1, y1 = x0 * np.cos(yaw) * s, y0 * s
        x2 = x1 * np.cos(roll) - y1 * np.sin(roll)
        y2 = x1 * np.sin(roll) + y1 * np.cos(roll)
        return cx + x2 * unit, cy + y2 * unit

    return forward, unit


def _sea(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Sea (and sometimes sky over a horizon) as (h, w, 3) float32 in 0..1."""
    hue = rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])  # blue, grey, green-grey, dark navy
    base = np.array([[0.3, 0.4, 0.52], [0.45, 0.47, 0.5], [0.33, 0.42, 0.42], [0.13, 0.17, 0.24]][hue], np.float32)
    base = base * rng.uniform(0.6, 1.5) + rng.normal(0, 0.01) * np.array([-1, 0.5, 1], np.float32)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    grad = 1 + rng.uniform(-0.3, 0.3) * (ys - 0.5)
    waves = _noise(rng, (max(2, h // 5), max(2, w // 40)), (w, h)) * rng.uniform(0.04, 0.18)
    waves += _noise(rng, (max(2, h // 2), max(2, w // 10)), (w, h)) * rng.uniform(0.02, 0.08)
    lum = grad * (1 + waves)
    sea = base[None, None, :] * lum[..., None]
    glint = np.clip((waves - rng.uniform(0.1, 0.3)) * 4, 0, 1) * rng.uniform(0, 0.6)
    sea += glint[..., None]
    if rng.random() < 0.22:  # horizon and sky above it
        horizon = int(h * rng.uniform(0.0, 0.3))
        sky = np.array([0.75, 0.8, 0.88], np.float32) * rng.uniform(0.8, 1.2)
        sky_grad = (1 - 0.15 * (1 - ys[:horizon] / max(horizon, 1) * 1.0))[..., None]
        sea[:horizon] = sky[None, None, :] * sky_grad
        if rng.random() < 0.4 and horizon > 4:  # a distant shore
            band = int(rng.integers(2, max(3, horizon // 3)))
            sea[horizon - band : horizon] *= rng.uniform(0.3, 0.6)
    return sea


_FONTS: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
_CAPTION_WORDS = ("Cascadia", "Hervey Bay", "Maui", "Tonga", "Gulf of Maine", "Husavik", "Monterey",
                  "Happywhale", "NOAA", "Reunion", "Azores", "Kaikoura")


def _caption(rng: np.random.Generator, image: Image.Image) -> None:
    w, h = image.size
    size = int(np.clip(h * rng.uniform(0.045, 0.09), 9, 40))
    font = _FONTS.get(size) or _FONTS.setdefault(size, ImageFont.load_default(size=size))
    year, kind = int(rng.integers(1990, 2019)), int(rng.integers(4))
    text = [f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{year}",
            f"(c) {_CAPTION_WORDS[int(rng.integers(len(_CAPTION_WORDS)))]} {year}",
            f"HW-{int(rng.integers(1, 9999)):04d}",
            f"{_CAPTION_WORDS[int(rng.integers(len(_CAPTION_WORDS)))]} #{int(rng.integers(1, 999))}"][kind]
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    x = int(rng.uniform(0.02, 0.05) * w) if rng.random() < 0.5 else max(0, w - tw - int(0.03 * w))
    y = int(h - th - rng.uniform(0.03, 0.08) * h) if rng.random() < 0.75 else int(0.03 * h)
    colour = [(255, 255, 255), (255, 235, 60), (10, 10, 10)][int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
    draw.text((x, y), text, fill=colour if image.mode == "RGB" else colour[0], font=font)


def _photo(seed: int, index: int, animal_index: int, grey: bool, caption: bool,
           widths: tuple[int, int], species: str | None = None) -> tuple[Image.Image, tuple[int, int, int, int], int]:
    """Render one photo of an animal: the image, the fluke's (or fin's) box and a JPEG quality."""
    rng = np.random.default_rng([seed, _PHOTO, index])
    animal = _animal_of(seed, animal_index, species)
    w = int(widths[1] if rng.random() < 0.6 else rng.integers(widths[0], widths[1] + 1))
    r = rng.random()
    aspect = 1.5 if r < 0.3 else rng.uniform(1.3, 2.6) if r < 0.93 else rng.uniform(2.6, 3.6)
    h = max(64, int(round(w / aspect)))

    # The animal as it is at this photo's date (later scars only after their birth), its lobes
    # flexed as they are at this moment of the dive.
    when = rng.random()
    pattern = animal.pattern
    if any(birth <= when for birth, *_ in animal.scars):
        pattern = pattern.copy()
        draw = ImageDraw.Draw(pattern)
        for birth, pts, width, value in animal.scars:
            if birth <= when:
                draw.line(pts, fill=value, width=width)
    u = (np.arange(TEX_W) + 0.5 - ORIGIN[0]) / UNIT
    flex = np.where(u < 0, rng.normal(0, 0.07), rng.normal(0, 0.07)) * u**2 * UNIT
    rows = np.clip(np.arange(TEX_H)[:, None] + np.round(flex).astype(int)[None, :], 0, TEX_H - 1)
    mask = Image.fromarray(np.take_along_axis(np.asarray(animal.mask), rows, axis=0))
    pattern = Image.fromarray(np.take_along_axis(np.asarray(pattern), rows, axis=0))

    for _attempt in range(8):  # redraw a pose that leaves too little fluke in view
        forward, unit = _pose(rng, w, h)
        corners = np.array([(0, 0), (TEX_W, 0), (TEX_W, TEX_H), (0, TEX_H)], float)
        cu, cv = (corners[:, 0] - ORIGIN[0]) / UNIT, (corners[:, 1] - ORIGIN[1]) / UNIT
        dst = np.stack(forward(cu, cv), axis=1)
        coeffs = _perspective_coeffs(dst, corners)
        alpha = np.asarray(mask.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR),
                           np.float32) / 255
        # Water line: canonical depth below the lobes' base, then waves along it.
        v_water = animal.v_base + (rng.uniform(-0.3, 0.15) if rng.random() < 0.8 else rng.uniform(0.15, 0.5))
        v_water = min(v_water, 0.86)  # the canonical frame ends at v = 0.9: no floating peduncle
        # Water is level: its line tilts only with the camera, however the fluke turns.
        x_c, y_c = forward(0.0, v_water)
        xs = np.arange(w, dtype=np.float32)
        water = y_c + np.tan(rng.normal(0, 0.04)) * (xs - x_c)
        water += np.asarray(Image.fromarray(rng.standard_normal((1, max(2, w // 30))).astype(np.float32))
                            .resize((w, 1), Image.Resampling.BICUBIC))[0] * rng.uniform(0.5, 3)
        ys = np.arange(h, dtype=np.float32)[:, None]
        above = np.clip(water[None, :] - ys, 0, 1)
        visible = alpha * above
        seen = visible > 0.5
        if seen.sum() > 0.04 * w * h:
            break
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) if len(rows) else (0, 0, w, h)

    # Colour: pattern between the animal's black and white, lit from above, over the sea.
    pat = np.asarray(pattern.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR),
                     np.float32)[..., None] / 255
    skin = (animal.dark + (animal.white - animal.dark) * pat) / 255
    # Uneven light on a wet, curved surface: broad shading and sheen that greys the black.
    shade = 1 + rng.uniform(-0.25, 0.15) * (ys / h - 0.5) * 2 + _noise(rng, (3, 5), (w, h)) * rng.uniform(0.05, 0.3)
    sheen = np.clip(_noise(rng, (4, 8), (w, h)) - rng.uniform(0.5, 1.5), 0, None) * rng.uniform(0.05, 0.3)
    skin = skin * shade[..., None] + sheen[..., None]
    sea = _sea(rng, w, h)
    img = sea * (1 - visible[..., None]) + skin * visible[..., None]
    # Foam and spray where the fluke leaves the water.
    band = np.clip(1 - ((ys - water[None, :]) / rng.uniform(3, 16)) ** 2, 0, None)
    centre_x = forward(0.0, animal.v_base)[0]
    near = np.exp(-(((xs - centre_x) / (unit * rng.uniform(0.3, 1.2))) ** 2))[None, :]
    froth = np.clip(_noise(rng, (max(2, h // 6), max(2, w // 6)), (w, h)) * 0.7 + rng.uniform(-0.4, 0.8), 0, 1)
    foam = np.clip(band * near * froth * rng.uniform(0.3, 1.6), 0, 1)[..., None]
    img = img * (1 - foam) + np.float32(0.92) * foam
    if rng.random() < 0.25:  # sheets of water streaming off the trailing edge
        x0, y0, x1, y1 = box
        sheet = np.clip(_noise(rng, (3, max(2, (x1 - x0) // 20)), (x1 - x0, y1 - y0)) - rng.uniform(0.5, 1.2), 0, 1)
        sheet = (sheet * visible[y0:y1, x0:x1] * rng.uniform(0.3, 0.7))[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - sheet) + np.float32(0.85) * sheet
    # Light: contrast and exposure, haze, a warm or cool cast: one affine map per channel.
    contrast, exposure = rng.uniform(0.7, 1.3), rng.normal(0, 0.07)
    haze = rng.uniform(0, 0.35) if rng.random() < 0.4 else 0.0
    haze_level = rng.uniform(0.5, 0.85)
    cast = 1 + rng.normal(0, 0.04) * np.array([0.5, 0.1, -0.5], np.float32)
    scale = contrast * (1 - haze) * cast * 255
    shift = ((0.5 - 0.5 * contrast + exposure) * (1 - haze) + haze * haze_level) * cast * 255 + 0.5
    img = img * scale.astype(np.float32) + shift.astype(np.float32)
    if rng.random() < 0.5:  # sensor grain
        img += (rng.random((h, w, 1), dtype=np.float32) - 0.5) * np.float32(255 * rng.uniform(0.02, 0.1))
    out = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8), "RGB")
    gamma = rng.uniform(0.8, 1.25)
    out = out.point([round(255 * (i / 255) ** gamma) for i in range(256)] * 3)
    # Lens: low-resolution originals and blur.
    if rng.random() < 0.18:
        f = rng.uniform(1.8, 3.5)
        out = out.resize((max(8, int(w / f)), max(8, int(h / f))), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
    radius = rng.choice([0, 0.5, 0.8, 1.2, 1.8], p=[0.35, 0.25, 0.2, 0.12, 0.08])
    if radius:
        out = out.filter(ImageFilter.GaussianBlur(float(radius)))
    if grey:
        out = out.convert("L")
    if caption:
        _caption(rng, out)
    quality = int(rng.integers(60, 96))
    # The box as a detector gives it (the real boxes come from a public kernel's model): loose.
    bw, bh = box[2] - box[0], box[3] - box[1]
    jitter = rng.normal(0, 0.03, 4) * np.array([bw, bh, bw, bh])
    x0, y0 = int(np.clip(box[0] + jitter[0], 0, w - 2)), int(np.clip(box[1] + jitter[1], 0, h - 2))
    x1, y1 = int(np.clip(box[2] + jitter[2], x0 + 2, w)), int(np.clip(box[3] + jitter[3], y0 + 2, h))
    return out, (x0, y0, x1, y1), quality


def _encode(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _recopy(seed: int, index: int, data: bytes, box: tuple[int, int, int, int]) -> tuple[bytes, tuple[int, int, int, int]]:
    """Re-encode a picture as another file would hold it: re-cropped, resized, new quality."""
    rng = np.random.default_rng([seed, _COPY, index])
    image = Image.open(io.BytesIO(data))
    image.load()
    w, h = image.size
    l, t, r, b = 0, 0, w, h
    if rng.random() < 0.5:
        l, t = int(rng.uniform(0, 0.015) * w), int(rng.uniform(0, 0.015) * h)
        r, b = w - int(rng.uniform(0, 0.015) * w), h - int(rng.uniform(0, 0.015) * h)
        image = image.crop((l, t, r, b))
    f = 1.0 if rng.random() < 0.3 else rng.uniform(0.7, 1.0)
    nw, nh = max(8, int(round((r - l) * f))), max(8, int(round((b - t) * f)))
    if (nw, nh) != image.size:
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    sx, sy = nw / (r - l), nh / (b - t)
    x0, y0 = int(np.clip((box[0] - l) * sx, 0, nw - 1)), int(np.clip((box[1] - t) * sy, 0, nh - 1))
    x1, y1 = int(np.clip(np.ceil((box[2] - l) * sx), x0 + 1, nw)), int(np.clip(np.ceil((box[3] - t) * sy), y0 + 1, nh))
    return _encode(image, int(rng.integers(70, 97))), (x0, y0, x1, y1)


def _render_bytes(seed: int, index: int, animal: int, grey: bool, caption: bool, widths,
                  species: str | None = None) -> tuple[bytes, tuple]:
    image, box, quality = _photo(seed, index, animal, grey, caption, widths, species)
    return _encode(image, quality), box


def _render(task: tuple) -> tuple[int, tuple[int, int, int, int]]:
    """Worker: render one image (a photo, or a re-encoded copy of one) and write it."""
    seed, index, src, animal, grey, caption, widths, path, species = task
    data, box = _render_bytes(seed, index if src < 0 else src, animal, grey, caption, widths, species)
    if src >= 0:
        data, box = _recopy(seed, index, data, box)
    Path(path).write_bytes(data)
    return index, box


def _render_chunk(tasks: list[tuple]) -> list[tuple[int, tuple[int, int, int, int]]]:
    return [_render(t) for t in tasks]


def _worker_init() -> None:
    """Keep a worker's freed image buffers in its heap: glibc otherwise hands each multi-MB
    array back to the kernel and faults it in again for the next image (a quarter of the time)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: no matter
        pass


def _context():
    """Fork where there is one: workers need no importable __main__ (stdin, notebooks, scripts
    without a main guard) and start at once; they only run numpy and Pillow. Spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


# --------------------------------------------------------------------------------------------
# Writing a competition.


def _tasks(p: Plan, root: Path, widths: tuple[int, int]) -> list[tuple]:
    tasks = []
    folders = ("train_images", "test_images") if p.layout == "happywhale" else ("train", "test")
    for i in range(len(p.image)):
        folder = folders[0] if i < p.n_train else folders[1]
        tasks.append((p.seed, i, int(p.source[i]), int(p.animal[i]), bool(p.grey[i]), bool(p.caption[i]),
                      widths, str(root / folder / p.image[i]), None if p.species is None else str(p.species[i])))
    # Neighbouring tasks share an animal, so a worker's animal cache hits; order never changes output.
    tasks.sort(key=lambda t: (t[3], t[1]))
    return tasks


def generate(out: str | os.PathLike, size: str = "small", seed: int = 0, progress: bool = True,
             workers: int | None = None, layout: str = "humpback") -> Path:
    """Write a synthetic competition to `out` (Kaggle 2019 layout, or Happywhale 2022's with
    `layout="happywhale"`, + test_truth.csv); return it."""
    spec = _spec(size)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KitError(f"{out}: already exists and is not empty; choose a new --out directory")
    if workers is None:
        workers = cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise KitError(f"workers must be a positive integer, got {workers!r}")
    p = plan(size, seed, layout)
    seed = int(seed)
    happy = layout == "happywhale"

    boxes: dict[int, tuple[int, int, int, int]] = {}
    with atomic_dir(out) as tmp:
        (tmp / ("train_images" if happy else "train")).mkdir()
        (tmp / ("test_images" if happy else "test")).mkdir()
        tasks = _tasks(p, tmp, spec.width)
        bar = progress_bar(len(tasks), f"synthetic {size}", "img", enabled=progress, leave=True)
        if workers == 1:
            for task in tasks:
                i, box = _render(task)
                boxes[i] = box
                bar.update()
        else:
            chunks = [tasks[k : k + 16] for k in range(0, len(tasks), 16)]
            pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=_context(), initializer=_worker_init)
            try:
                for done in as_completed([pool.submit(_render_chunk, c) for c in chunks]):
                    rendered = done.result()
                    boxes.update(rendered)
                    bar.update(len(rendered))
            finally:  # on an error or Ctrl-C, drop the chunks not yet started
                pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

        _write_csv(tmp / "train.csv", p.frame("train"))
        truth = p.frame("test")
        _write_csv(tmp / "test_truth.csv", truth)
        train = p.frame("train")
        image_col, label_col, unknown = (("image", "individual_id", HAPPYWHALE_UNKNOWN) if happy
                                         else ("Image", "Id", UNKNOWN))
        per_id = train[train[label_col] != unknown][label_col].value_counts()
        top = sorted(per_id.index, key=lambda i: (-per_id[i], i))[:4]
        _write_csv(tmp / "sample_submission.csv",
                   pd.DataFrame({image_col: truth[image_col], "predictions" if happy else "Id": " ".join([unknown, *top])}))
        order = np.argsort(p.image, kind="stable")
        _write_csv(tmp / "bounding_boxes.csv", pd.DataFrame(
            [(p.image[i], *boxes[int(i)]) for i in order], columns=["Image", "x0", "y0", "x1", "y1"]))
        meta = {
            "generator": "kit.data.synthetic", "version": VERSION, "size": size, "seed": seed,
            **({"layout": layout, "species": _species_counts(p)} if happy else {}),
            "unknown": HAPPYWHALE_UNKNOWN if happy else UNKNOWN,
            "counts": p.counts(), "image_width": list(spec.width),
            "test_duplicates": p.test_duplicates(), "train_conflicts": p.train_conflicts(),
        }
        (tmp / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def _species_counts(p: Plan) -> dict:
    """Per species: train images, identities, test images and the share of them new animals."""
    train, test = p.frame("train"), p.frame("test")
    out = {}
    for name in SPECIES:
        tr, te = train[train.species == name], test[test.species == name]
        known = tr.individual_id[tr.individual_id != HAPPYWHALE_UNKNOWN]
        out[name] = {"train": len(tr), "ids": int(known.nunique()), "test": len(te),
                     "test_new": round(float((te.individual_id == HAPPYWHALE_UNKNOWN).mean()) if len(te) else 0.0, 3)}
    return out


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")
