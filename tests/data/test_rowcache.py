"""The row cache (kit/data/rowcache.py) on a disk with less room than the cache."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BUILD = """
import sys
from pathlib import Path
import numpy as np
from kit import cli
from kit.data.rowcache import open_row_cache

def main(argv=None):
    keys = [f"im{i}" for i in range(64)]
    open_row_cache(Path(sys.argv[1]) / "cache", keys, [0] * 64, {}, 1, {"rows": ((64, 64), "uint8")},
                   lambda i: {"rows": np.full((64, 64), 7, np.uint8)}, what="crop cache")
    return 0

cli.run(main)
"""


def test_a_cache_larger_than_the_free_space_is_one_line_not_a_sigbus(full_disk, tmp_path):
    """The cache is a sparse memory-mapped file: on a disk with some room, but less than the cache,
    the first row past the room killed the build with SIGBUS (exit 135, nothing printed) and left
    its temporary behind."""
    disk = full_disk(tmp_path / "disk")
    filler = disk / "filler.bin"
    with open(filler, "r+b") as f:  # 128 KB free: the header fits, the 256 KB of rows do not
        f.truncate(filler.stat().st_size - 128 * 1024)
    out = subprocess.run([sys.executable, "-c", BUILD, str(disk)], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode != -7 and out.returncode != 135, "killed by SIGBUS"
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and "rows.npy" in lines[0] and "No space left on device" in lines[0]
    assert sorted(p.name for p in (disk / "cache").iterdir()) == ["lock"]  # no temporary, no index
