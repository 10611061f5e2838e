"""Shared fixtures: small competition directories made on the spot (kit/testing.py), in each Kaggle layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kit.testing import make_competition

# No test reaches a weight hub: timm and huggingface_hub read their local caches only, and the
# starter's `--pretrained auto` takes that for "out of reach" (set before either is imported).
os.environ["HF_HUB_OFFLINE"] = "1"

# Test tiers (pyproject.toml registers the markers): what a test needs, read from the fixtures it uses,
# so that no test has to say it twice. `slow` is marked where the test is written (@pytest.mark.slow).
MARK_BY_FIXTURE = {"full_disk": "root", "read_only_disk": "root", "postgres": "postgres"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in MARK_BY_FIXTURE:
                item.add_marker(MARK_BY_FIXTURE[fixture])


@pytest.fixture
def competition(tmp_path):
    """Factory: competition(layout="humpback", **kw) -> a fresh directory."""
    count = iter(range(1000))
    return lambda layout="humpback", **kw: make_competition(tmp_path / f"{layout}{next(count)}", layout, **kw)


# ---- faults: a full disk, a read-only one, a decompression bomb (issue 13's hardening tests) ----

def _mount_tmpfs(path: Path, options: str) -> str | None:
    """Mount a tmpfs at `path`; the reason it cannot be done, or None."""
    import subprocess

    if os.geteuid() != 0:
        return "mounting a small tmpfs (a disk to fill) needs root, as CI runs"
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    return None if out.returncode == 0 else f"cannot mount a tmpfs here: {out.stderr.strip()}"


@pytest.fixture
def full_disk(tmp_path):
    """Factory: full_disk(path, keep=(), size="4m") mounts a tmpfs of `size` at `path`, copies `keep`
    (files or directories) into it, then fills what is left: every later write there fails with ENOSPC."""
    import shutil
    import subprocess

    mounted = []

    def make(path: Path, keep=(), size: str = "4m") -> Path:
        reason = _mount_tmpfs(path, f"size={size}")
        if reason:
            pytest.skip(reason)
        mounted.append(path)
        for item in keep:
            (shutil.copytree if Path(item).is_dir() else shutil.copy2)(item, path / Path(item).name)
        with open(path / "filler.bin", "wb", buffering=0) as f:  # the disk's last bytes, as a user's file
            try:
                while f.write(b"\0" * 65536):
                    pass
            except OSError:
                pass
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_disk(tmp_path):
    """Factory: read_only_disk(path) mounts an empty read-only tmpfs at `path` (EROFS on writes:
    root ignores file permissions, so a read-only mount is how a test refuses it a write)."""
    import subprocess

    mounted = []

    def make(path: Path, keep=()) -> Path:
        """`keep`: files or directories copied in before the disk turns read-only (a tmpfs of 64 MB)."""
        import shutil

        reason = _mount_tmpfs(path, "size=64m" if keep else "ro,size=1m")
        if reason:
            pytest.skip(reason)
        mounted.append(path)
        if keep:
            for item in map(Path, keep):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, path / item.name)
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def bomb(tmp_path_factory) -> Path:
    from faults import write_bomb

    return write_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")
