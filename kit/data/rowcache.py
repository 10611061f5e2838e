"""A per-image cache of fixed-shape rows: one memory-mapped `.npy` file per array, one row per image
of a competition, and an `index.json` that vouches for them. The decoded-crop cache
(kit/data/crops.py) and the local-feature cache (kit/local/features.py) are two of its uses.

`open_row_cache` rebuilds every array when the image list or the spec changes, and computes an
image's rows again when its stamp (file size, mtime, box) changed. It computes on a thread per
core (Pillow's decode and OpenCV release the GIL). Processes asking for the same cache at once take
turns through a file lock: one builds, the others find it fresh. The index is written last and
removed before an update, so a killed build leaves no index vouching for half-written rows.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from kit.data.images import BadImage
from kit.errors import KitError
from kit.io import atomic_path, cpu_count, locked, write_text
from kit.progress import progress as progress_bar

Arrays = dict[str, tuple[tuple[int, ...], str]]  # name -> (one row's shape, dtype)


def read_index(path: Path) -> dict | None:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or damaged: rebuild
    return index if isinstance(index, dict) else None


def open_row_cache(directory: Path, keys: list[str], stamps: list, spec: dict, version: int, arrays: Arrays,
                   compute: Callable[[int], dict[str, np.ndarray]], *, what: str, progress: bool = False,
                   workers: int | None = None, echo=None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({name: read-only memory map (N, *shape)}, {key: why} of the images that could not be read).

    `compute(i)` gives image i's rows ({name: array of the row's shape}); a BadImage leaves its rows
    zero and is remembered with its reason. `what` names the cache in messages ("crop cache")."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        hint = (" (a read-only competition directory: python scripts/prepare.py DATA --work DIR makes a writable "
                "stand-in)" if e.errno == errno.EROFS else "")
        raise KitError(f"{directory}: cannot create the {what} ({e.strerror}){hint}") from None
    index_path = directory / "index.json"
    paths = {name: directory / f"{name}.npy" for name in arrays}
    with locked([directory / "lock"]):
        index = read_index(index_path)
        fresh = (index is not None and index.get("version") == version and index.get("spec") == spec
                 and index.get("keys") == keys and all(p.is_file() for p in paths.values()))
        stale: list[int] = []
        if fresh:
            stale = [i for i, (old, new) in enumerate(zip(index["stamps"], stamps)) if old != new]
            redo = {keys[i] for i in stale}
            reasons = {k: v for k, v in index["bad"].items() if k not in redo}
            if stale:
                index_path.unlink()  # an interrupted update leaves no index vouching for half-written rows
                maps = {name: np.load(p, mmap_mode="r+") for name, p in paths.items()}
                reasons.update(_fill(maps, stale, keys, compute, progress, workers, f"updating {what}"))
                for m in maps.values():
                    m.flush()
                del maps
                if echo:
                    echo(f"{what} {directory}: {len(stale)} changed image(s) done again")
        else:
            index_path.unlink(missing_ok=True)
            with contextlib.ExitStack() as stack:
                tmps = {name: stack.enter_context(atomic_path(p)) for name, p in paths.items()}
                # np.save's header first, then rows written in place through a memory map
                maps = {name: np.lib.format.open_memmap(tmps[name], mode="w+", dtype=np.dtype(dtype),
                                                        shape=(len(keys), *shape))
                        for name, (shape, dtype) in arrays.items()}
                for tmp in tmps.values():
                    reserve(tmp)
                reasons = _fill(maps, range(len(keys)), keys, compute, progress, workers, f"building the {what}")
                for m in maps.values():
                    m.flush()
                del maps
            if echo:
                size = sum(p.stat().st_size for p in paths.values()) / 2**20
                echo(f"{what} {directory}: {len(keys):,} images, {size:,.0f} MB" + (f", {len(reasons)} bad" if reasons else ""))
        if not fresh or stale:  # the index last: it vouches for the rows
            write_text(index_path, json.dumps({"version": version, "spec": spec, "keys": keys, "stamps": stamps,
                                               "bad": reasons}) + "\n")
    return {name: np.load(p, mmap_mode="r") for name, p in paths.items()}, reasons


def reserve(path: Path) -> None:
    """Allocate the whole of a (sparse) file now. A memory-mapped file's pages get their disk blocks
    when first written: on a disk with less room than the file, the row that finds none kills the
    process with SIGBUS (nothing said, a temporary left behind). Allocated here, a full disk is an
    ENOSPC now, which the caller names. Filesystems that cannot allocate ahead keep the old behaviour."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise


def _fill(maps: dict[str, np.ndarray], rows: Iterable[int], keys: list[str], compute, progress: bool,
          workers: int | None, desc: str) -> dict[str, str]:
    """Compute `rows` into the arrays on a thread pool; returns {key: reason} of the bad ones (zeros)."""
    rows = list(rows)
    chunks = [rows[i:i + 32] for i in range(0, len(rows), 32)]
    bad: dict[str, str] = {}

    def work(chunk: list[int]) -> dict[str, str]:
        out = {}
        for i in chunk:
            try:
                for name, row in compute(i).items():
                    maps[name][i] = row
            except BadImage as e:
                for m in maps.values():
                    m[i] = 0
                out[keys[i]] = str(e)
        return out

    with ThreadPoolExecutor(max_workers=workers or cpu_count(), thread_name_prefix="rows") as pool, \
            progress_bar(len(rows), desc, "img", enabled=progress) as bar:
        futures = {pool.submit(work, chunk): len(chunk) for chunk in chunks}
        for future in as_completed(futures):
            bad.update(future.result())
            bar.update(futures[future])
    return bad
