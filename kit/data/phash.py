"""The perceptual hash the 2019 solutions used, bit for bit `str(imagehash.phash(Image.open(f)))`.

imagehash's recipe: `convert('L')`, `resize((32, 32), LANCZOS)`, `scipy.fftpack.dct` along axis 0
then axis 1 (unnormalised DCT-II: X[k] = 2 sum_n x[n] cos(pi k (2n + 1) / 64)), the low 8 x 8
block including DC, bits = block > median(block), row-major, first bit most significant, as 16
hex digits. Pillow decodes and resizes exactly as imagehash has it do; the 8 x 8 block is one
fixed (8 x 32) matrix product on each side, D X D^T, about 30x cheaper than two full DCTs.

Bit-exactness: a bit flips only if a coefficient sits on the median, and for such near-ties
(flat or mirror-symmetric images, whose coefficients are exactly 0 in exact arithmetic) the
answer is decided by rounding noise, which differs between a matrix product and pocketfft.
When any coefficient lies within `TIE_TOLERANCE` (relative) of the median, the block is
recomputed with `scipy.fftpack.dct`, the very transform imagehash calls, so ties break alike.

`fast=True` (labelled "fast" wherever offered) decodes JPEGs at 1/2-1/8 scale with
`Image.draft('L', ...)` before the resize: several times faster, NOT bit-equal to imagehash
(a few bits differ on some images). Train and test must be hashed in the same mode;
`write_hashes` hashes both in one call.
"""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.fftpack  # only for near-ties: the exact transform imagehash uses
from PIL import Image

from kit.data.competition import IMAGE_SUFFIXES, Competition, load_competition
from kit.data.images import open_image
from kit.errors import KitError
from kit.io import cpu_count, read_csv, write_csv

HASH_SIZE = 8
IMAGE_SIZE = 32  # hash_size * highfreq_factor (4), as in imagehash.phash
TIE_TOLERANCE = 1e-7  # relative to the largest coefficient; rounding error is ~1e-12 of it
HASH_COLUMNS = ("Image", "phash")

_n = np.arange(IMAGE_SIZE)
_k = np.arange(HASH_SIZE)
# rows 0..7 of the unnormalised DCT-II matrix scipy.fftpack.dct applies (type 2, norm=None)
DCT_LOW = 2.0 * np.cos(np.pi * _k[:, None] * (2 * _n[None, :] + 1) / (2 * IMAGE_SIZE))


def hash_pixels(pixels: np.ndarray) -> int:
    """The 64-bit phash (as an int) of a 32 x 32 uint8 greyscale array."""
    low = DCT_LOW @ pixels.astype(np.float64) @ DCT_LOW.T
    med = np.median(low)
    if np.abs(low - med).min() <= TIE_TOLERANCE * max(float(np.abs(low).max()), 1.0):

        low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:HASH_SIZE, :HASH_SIZE]
        med = np.median(low)
    return int(np.packbits((low > med).ravel()).view(">u8")[0])


def to_hex(value: int) -> str:
    return f"{value:016x}"


def _small_grey(image: Image.Image, fast: bool = False) -> np.ndarray:
    if fast and image.format == "JPEG":
        # ask the JPEG decoder for the smallest DCT scale that is still >= 32 x 32, luma only
        image.draft("L", (IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def phash_image(image: Image.Image) -> str:
    """phash of an open PIL image, as 16 hex digits (exact mode)."""
    return to_hex(hash_pixels(_small_grey(image)))


def phash_file(path: str | os.PathLike, fast: bool = False) -> str:
    """phash of an image file, as 16 hex digits; `fast` = JPEG draft decoding (not bit-exact)."""
    with open_image(path) as image:  # a bad image (or a decompression bomb) is a BadImage naming it
        return to_hex(hash_pixels(_small_grey(image, fast)))


def _phash_job(job: tuple[str, bool]) -> str:
    return phash_file(*job)


def phash_files(paths: Sequence[str | os.PathLike], workers: int | None = None, fast: bool = False) -> list[str]:
    """phash of many files, in order, on `workers` processes (default: all cores)."""
    jobs = [(str(p), fast) for p in paths]
    workers = max(1, min(workers or cpu_count(), len(jobs)))
    if workers == 1 or len(jobs) < 16:
        return [_phash_job(j) for j in jobs]
    chunk = max(1, min(64, len(jobs) // (workers * 8)))
    with multiprocessing.get_context().Pool(workers) as pool:
        return pool.map(_phash_job, jobs, chunksize=chunk)


def image_files(directory: str | os.PathLike) -> list[str]:
    """The image files of a directory (by suffix), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KitError(f"{directory}: image directory not found")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise KitError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return names


def write_directory_hashes(directory: str | os.PathLike, out_csv: str | os.PathLike,
                           workers: int | None = None, fast: bool = False) -> Path:
    """`Image,phash` for every image of one directory, written atomically."""
    names = image_files(directory)
    hashes = phash_files([Path(directory) / n for n in names], workers, fast)
    write_csv(out_csv, pd.DataFrame({HASH_COLUMNS[0]: names, HASH_COLUMNS[1]: hashes}))
    return Path(out_csv)


def competition_hashes(comp, workers: int | None = None, fast: bool = False) -> pd.DataFrame:
    """`Image,phash` rows for the train and test images of a loaded kit.data.Competition."""
    train, test = list(comp.train["image"]), list(comp.test_images)
    paths = [comp.image_path(n, "train") for n in train] + [comp.image_path(n, "test") for n in test]
    return pd.DataFrame({HASH_COLUMNS[0]: train + test, HASH_COLUMNS[1]: phash_files(paths, workers, fast)})


def write_hashes(competition_dir, out_csv: str | os.PathLike | None = None,
                 workers: int | None = None, fast: bool = False) -> Path:
    """`Image,phash` for the train and test images of a competition (default: DIR/hashes.csv).
    `competition_dir`: the directory, or an already loaded kit.data.Competition."""
    comp = competition_dir if isinstance(competition_dir, Competition) else load_competition(competition_dir)
    out = Path(out_csv) if out_csv is not None else comp.root / "hashes.csv"
    write_csv(out, competition_hashes(comp, workers, fast))
    return out


def read_hashes(path: str | os.PathLike) -> dict[str, int]:
    """hashes.csv → {image: 64-bit hash}; malformed rows are a KitError naming the file."""
    frame = read_csv(path, HASH_COLUMNS, "image hashes")
    bad = ~frame["phash"].str.fullmatch(r"[0-9a-fA-F]{16}").astype(bool)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise KitError(f"{path}: row {i + 2}: phash {frame['phash'].iloc[i]!r} is not 16 hex digits")
    dup = frame["Image"][frame["Image"].duplicated()]
    if len(dup):
        raise KitError(f"{path}: image {dup.iloc[0]!r} is listed more than once")
    return dict(zip(frame["Image"].tolist(), [int(h, 16) for h in frame["phash"].tolist()]))


def hashes_for(table: dict[str, int], images: Sequence[str], path: str | os.PathLike, what: str) -> np.ndarray:
    """The hashes of `images` as uint64, in order; any image missing from `table` is a KitError."""
    missing = [n for n in images if n not in table]
    if missing:
        raise KitError(
            f"{path}: no hash for {len(missing)} {what} image(s), e.g. {missing[0]!r}; "
            f"run `python scripts/phash.py DIR` (or prepare.py) again"
        )
    return np.fromiter((table[n] for n in images), dtype=np.uint64, count=len(images))
