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
import io
import dataclasses
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kit.data.synthetic_photos import _COPY, _PLAN, _SPECIES, SPECIES, photo
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


def _encode(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def recopy(seed: int, index: int, data: bytes, box: tuple[int, int, int, int]) -> tuple[bytes, tuple[int, int, int, int]]:
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


def photo_bytes(seed: int, index: int, animal: int, grey: bool, caption: bool, widths,
                  species: str | None = None) -> tuple[bytes, tuple]:
    image, box, quality = photo(seed, index, animal, grey, caption, widths, species)
    return _encode(image, quality), box


def _render(task: tuple) -> tuple[int, tuple[int, int, int, int]]:
    """Worker: render one image (a photo, or a re-encoded copy of one) and write it."""
    seed, index, src, animal, grey, caption, widths, path, species = task
    data, box = photo_bytes(seed, index if src < 0 else src, animal, grey, caption, widths, species)
    if src >= 0:
        data, box = recopy(seed, index, data, box)
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
