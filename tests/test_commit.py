"""A run's outputs become visible together or not at all (kit/io.py, Outputs.commit): the writer is
killed between any two steps of its commit, and a reader then sees the previous run's set whole or
this run's whole, never a mix; two writers at once leave one of their sets whole."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kit.io import JOURNAL, settle

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[1]

# an export's shape: model.onnx, four prediction-set directories in two folders, export.json last
WRITER = """
import os, sys, time
from pathlib import Path
from kit import io

root, generation, cut, slow = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with io.outputs(echo=None) as out:
    io.write_text(root / "model.onnx", generation, out)
    for view in ("logit", "cosine"):
        for split in ("val", "test"):
            with io.atomic_dir(root / "preds" / view / split, out) as d:
                (d / "scores").write_text(generation)
    io.write_text(root / "export.json", generation, out)
    renames, real = [0], os.replace

    def replace(a, b):  # every rename of the commit (its journals' and its outputs'), counted
        if renames[0] == cut:
            os._exit(9)  # kill -9: nothing of Python's runs
        renames[0] += 1
        time.sleep(slow)
        return real(a, b)

    os.replace = replace
"""
FILES = ["model.onnx", "export.json"] + [f"preds/{v}/{s}/scores" for v in ("logit", "cosine") for s in ("val", "test")]


def write(root: Path, generation: str, cut: int = -1, slow: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), generation, str(cut), str(slow)], cwd=ROOT)


def read(root: Path) -> set[str]:
    """What a reader (blend.py, export.py's freshness check) sees: settled first, as they do."""
    settle(root)
    return {(root / f).read_text() if (root / f).exists() else "missing" for f in FILES}


def test_a_kill_between_any_two_steps_leaves_the_old_set_or_the_new_one(tmp_path):
    root = tmp_path / "member"
    assert write(root, "A").wait() == 0 and read(root) == {"A"}
    cuts, seen = 0, []
    while True:
        shutil.rmtree(root)
        assert write(root, "A").wait() == 0
        code = write(root, "B", cut=cuts).wait()
        seen.append(read(root))
        assert seen[-1] in ({"A"}, {"B"}), (cuts, seen[-1])
        assert not list(root.rglob(JOURNAL))  # finished by the reader
        if code == 0:  # no rename left to cut before
            break
        assert code == 9
        cuts += 1
    assert cuts >= 9 and {"A"} in seen and {"B"} in seen  # 3 journals, then the outputs' renames
    # and the next writer after a cut commit: its own set, whole, no temporary of the killed one left
    shutil.rmtree(root)
    assert write(root, "A").wait() == 0
    assert write(root, "B", cut=5).wait() == 9
    assert write(root, "C").wait() == 0 and read(root) == {"C"}
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize("round_", range(2))
def test_two_writers_at_once_leave_one_set_whole(tmp_path, round_):
    root = tmp_path / "member"
    assert write(root, "A").wait() == 0
    writers = [write(root, "B", slow=0.02), write(root, "C", slow=0.02)]
    assert [w.wait() for w in writers] == [0, 0]
    assert read(root) in ({"B"}, {"C"})
