"""The synthetic competition's plan: every label, name, duplicate and per-image flag of a seed, drawn
with one generator, no pixels (kit/data/synthetic.py's docstring has the calibration; it renders the
photos and writes the competition), and the label files of the Kaggle layouts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.data.synthetic_photos import _PLAN, _SPECIES, SPECIES
from kit.errors import KitError

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

HAPPYWHALE_UNKNOWN = "new_individual"


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

    def file(self, i: int) -> str:
        """Image i's file relative to the competition directory."""
        folders = ("train_images", "test_images") if self.layout == "happywhale" else ("train", "test")
        return f"{folders[0] if i < self.n_train else folders[1]}/{self.image[i]}"

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

    def write_labels(self, root: Path, boxes: dict[int, tuple[int, int, int, int]], widths: tuple[int, int]) -> None:
        """The label files (train.csv, test_truth.csv, sample_submission.csv, bounding_boxes.csv) and
        synthetic.json, written into `root`; `boxes`: the rendered images' boxes, by index."""
        happy = self.layout == "happywhale"
        _write_csv(root / "train.csv", self.frame("train"))
        truth = self.frame("test")
        _write_csv(root / "test_truth.csv", truth)
        train = self.frame("train")
        image_col, label_col, unknown = (("image", "individual_id", HAPPYWHALE_UNKNOWN) if happy
                                         else ("Image", "Id", UNKNOWN))
        per_id = train[train[label_col] != unknown][label_col].value_counts()
        top = sorted(per_id.index, key=lambda i: (-per_id[i], i))[:4]
        _write_csv(root / "sample_submission.csv",
                   pd.DataFrame({image_col: truth[image_col], "predictions" if happy else "Id": " ".join([unknown, *top])}))
        order = np.argsort(self.image, kind="stable")
        _write_csv(root / "bounding_boxes.csv", pd.DataFrame(
            [(self.image[i], *boxes[int(i)]) for i in order], columns=["Image", "x0", "y0", "x1", "y1"]))
        meta = {
            "generator": "kit.data.synthetic", "version": VERSION, "size": self.size, "seed": int(self.seed),
            **({"layout": self.layout, "species": _species_counts(self)} if happy else {}),
            "unknown": HAPPYWHALE_UNKNOWN if happy else UNKNOWN,
            "counts": self.counts(), "image_width": list(widths),
            "test_duplicates": self.test_duplicates(), "train_conflicts": self.train_conflicts(),
        }
        (root / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n")

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


def draw(size: str = "small", seed: int = 0) -> tuple[Plan, int, int]:
    """The 2019 layout's draw of a competition's labels, names and duplicates (no pixels), pure and
    fast; with its number of known ids and of train new_whales (animals 0 .. n_ids - 1 are the ids,
    the next n_new the train new_whales, one photo each; the rest the test's never-seen animals)."""
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
    return Plan(size, seed, n_train, image, label, animal, source, grey, caption), n_ids, n_new


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
