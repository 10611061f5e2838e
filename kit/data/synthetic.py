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
per-image flag with one seeded generator (kit/data/synthetic_plan.py: pure, milliseconds even at
the kaggle size), then each image is rendered from its own generator (`np.random.default_rng([seed, stream, index])`), so
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
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image

from kit.data.synthetic_animalclef import with_datasets
from kit.data.synthetic_photos import _COPY, photo
from kit.data.synthetic_plan import (  # noqa: F401  (HAPPYWHALE_UNKNOWN .. VERSION: the generator's names, re-exported)
    HAPPYWHALE_UNKNOWN, SIZES, UNKNOWN, VERSION, Plan, SizeSpec, _spec, _with_species, draw)
from kit.errors import KitError
from kit.io import atomic_dir, cpu_count
from kit.progress import progress as progress_bar

LAYOUT_NAMES = ("humpback", "happywhale", "animalclef")


def plan(size: str = "small", seed: int = 0, layout: str = "humpback") -> Plan:
    """Draw a competition's labels, names and duplicates (no pixels): pure and fast. The happywhale
    and animalclef layouts are the same draw (so the same difficulty) with species, or datasets and
    new individuals, and their names on top (kit/data/synthetic_animalclef.py)."""
    if layout not in LAYOUT_NAMES:
        raise KitError(f"layout {layout!r} is not a synthetic layout; choose one of {', '.join(LAYOUT_NAMES)}")
    out, n_ids, n_new = draw(size, seed)
    if layout == "animalclef":
        return with_datasets(out, n_ids, n_new)
    return out if layout == "humpback" else _with_species(out, n_ids)




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
    for i in range(len(p.image)):
        tasks.append((p.seed, i, int(p.source[i]), int(p.animal[i]), bool(p.grey[i]), bool(p.caption[i]),
                      widths, str(root / p.file(i)), None if p.species is None else str(p.species[i])))
    # Neighbouring tasks share an animal, so a worker's animal cache hits; order never changes output.
    tasks.sort(key=lambda t: (t[3], t[1]))
    return tasks


def generate(out: str | os.PathLike, size: str = "small", seed: int = 0, progress: bool = True,
             workers: int | None = None, layout: str = "humpback") -> Path:
    """Write a synthetic competition to `out` (Kaggle 2019 layout, Happywhale 2022's with
    `layout="happywhale"`, AnimalCLEF 2025's with `layout="animalclef"`, + test_truth.csv); return it."""
    spec = _spec(size)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KitError(f"{out}: already exists and is not empty; choose a new --out directory")
    if workers is None:
        workers = cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise KitError(f"workers must be a positive integer, got {workers!r}")
    p = plan(size, seed, layout)

    boxes: dict[int, tuple[int, int, int, int]] = {}
    with atomic_dir(out) as tmp:
        for folder in sorted({p.file(i).rpartition("/")[0] for i in range(len(p.image))}):
            (tmp / folder).mkdir(parents=True)
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
        p.write_labels(tmp, boxes, spec.width)
    return out


