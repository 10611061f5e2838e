"""A working directory that stands in for a read-only competition directory.

Kaggle mounts a competition's data read-only (/kaggle/input/<name>), and the kit writes its own files
beside the data: folds.csv and hashes.csv (prepare.py) and the caches (cache/: decoded crops, local
features). `working_copy(data, work)` makes `work` a competition directory of its own: every entry of
`data` linked there (nothing copied: the images stay where they are), the kit's files written there.
Every later step names `work` as its data (recipes' `data:`, --data).
"""
from __future__ import annotations

import os
from pathlib import Path

from kit.data.competition import load_competition
from kit.errors import KitError
from kit.io import disk_errors_named

DERIVED = ("folds.csv", "hashes.csv", "cache")  # what the kit writes into a competition directory


def working_copy(data: str | os.PathLike, work: str | os.PathLike) -> Path:
    """`work` made (or brought up to date) as a stand-in for the competition at `data`: links to
    `data`'s entries, but none to the kit's own files (DERIVED), which are written in `work`."""
    data, work = Path(data), Path(work)
    load_competition(data, check_images=False)  # a competition at all, before anything is made
    if work.resolve() == data.resolve() or work.resolve().is_relative_to(data.resolve()):
        raise KitError(f"--work {work}: must lie outside the competition directory {data}")
    with disk_errors_named(work):
        work.mkdir(parents=True, exist_ok=True)
        for entry in sorted(data.iterdir()):
            if entry.name in DERIVED or entry.name.startswith("."):
                continue
            link = work / entry.name
            if link.is_symlink():
                if link.resolve() == entry.resolve():
                    continue
                link.unlink()  # a link to another competition's entry (--work used before for another)
            elif link.exists():
                raise KitError(f"{link}: already there, and not a link to {entry}: --work needs a directory of "
                               f"its own (or the one an earlier --work made)")
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return work


def check_writable(data: Path, what: str) -> None:
    """A KitError, with the way out, when the kit cannot write its files into the competition directory."""
    if not os.access(data, os.W_OK) or _read_only_mount(data):
        raise KitError(f"{data}: read-only (as Kaggle's /kaggle/input is), and {what} writes its files there: give "
                       f"--work DIR, a writable directory that stands in for it (python scripts/prepare.py {data} "
                       f"--work /kaggle/working/{data.resolve().name}), then use DIR as the data everywhere")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)  # root may write anywhere but on a read-only mount
    except (OSError, AttributeError):
        return False
