"""Issue 13's faults, each reproduced as a user meets it (the real scripts, a real full or read-only
disk, a real decompression bomb, a real kill -9): one `error:` line, exit status 2, and nothing
left that was not there before. The tune faults are in tests/tune/test_faults_tune.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from faults import one_error_line, snapshot
from kit.errors import KitError

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[2]


def script(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{args[0]}", *map(str, args[1:])], capture_output=True, text=True,
                          cwd=ROOT, env=env)


def _retarget(recipe: Path, output: Path) -> Path:
    d = yaml.safe_load(recipe.read_text())
    d["output"] = str(output)
    recipe.write_text(yaml.safe_dump(d, sort_keys=False))
    return recipe


# ---- decompression bombs ----------------------------------------------------------------------

def test_a_bomb_is_one_line_in_phash_and_prepare_leaves_neither_file(competition, bomb):
    """A 20000 x 20000 PNG among the train images: phash.py and prepare.py gave Pillow's
    DecompressionBombError traceback, and prepare had written folds.csv before hashing failed."""
    root = competition()
    (root / "train" / "tr00001.jpg").unlink()
    os.symlink(bomb, root / "train" / "tr00001.jpg")
    before = snapshot(root)
    out = one_error_line(script("phash.py", root))
    assert "tr00001.jpg: refused to decode: more than 200,000,000 pixels" in out and "WHALE_KIT_MAX_PIXELS" in out
    out = one_error_line(script("prepare.py", root))
    assert "tr00001.jpg: refused to decode" in out
    assert snapshot(root) == before  # neither folds.csv nor hashes.csv, no temporaries


def test_the_pixel_limit_is_the_users_to_raise(tmp_path, monkeypatch):
    from PIL import Image

    from kit.data.images import BadImage, decode

    Image.new("L", (300, 200)).save(tmp_path / "a.png")
    monkeypatch.delenv("WHALE_KIT_MAX_PIXELS", raising=False)
    env = dict(os.environ, WHALE_KIT_MAX_PIXELS="50000")
    out = subprocess.run([sys.executable, "-c", "from kit.data.images import decode; decode(r'%s', 'L')" % (tmp_path / "a.png")],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert "300 x 200 = 60,000 pixels, over the limit of 50,000" in out.stderr
    assert decode(tmp_path / "a.png", "L").size == (300, 200)
    monkeypatch.setenv("WHALE_KIT_MAX_PIXELS", "many")
    with pytest.raises(KitError, match=r"\$WHALE_KIT_MAX_PIXELS is 'many'"):
        decode(tmp_path / "a.png", "L")
    monkeypatch.delenv("WHALE_KIT_MAX_PIXELS")
    with pytest.raises(BadImage, match="a.png.missing: image not found"):
        decode(tmp_path / "a.png.missing", "L")


def test_a_bomb_in_the_report_gallery_is_shown_unreadable_and_the_run_completes(project, bomb):
    """blend.py's report decoded every gallery image: a bomb gave a traceback after the CSV and
    pseudo-labels were written. Its pixels are not needed for the submission, so the report says
    the image is unreadable (never decoding it) and all three files are written together."""
    data = project["comp"].root
    for folder, csv in (("train", "train.csv"), ("test", "sample_submission.csv")):
        (data / folder).mkdir(exist_ok=True)
        for name in (data / csv).read_text().split()[1:]:
            os.symlink(bomb, data / folder / name.split(",")[0])
    start = time.perf_counter()
    out = script("blend.py", project["recipe"])
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - start < 60  # no 400 MB decode per thumbnail
    out_dir = project["root"] / "blends" / "submissions"
    assert sorted(p.name for p in out_dir.iterdir()) == ["final.csv", "final.html", "final.pseudo.csv"]
    assert "unreadable: tr" in (out_dir / "final.html").read_text()


# ---- full and read-only disks ------------------------------------------------------------------

def test_a_full_disk_is_one_line_and_blend_writes_none_of_its_files(project, full_disk):
    """blend.py on a full disk: an ENOSPC traceback, the CSV and pseudo-labels left without the report."""
    out_dir = full_disk(project["root"] / "full")
    recipe = _retarget(project["recipe"], out_dir)
    before = snapshot(out_dir)
    err = one_error_line(script("blend.py", recipe))
    assert f"{out_dir}/final" in err and "No space left on device" in err
    assert snapshot(out_dir) == before


def test_a_full_disk_in_phash_is_one_line(competition, full_disk, tmp_path):
    root = competition()
    out_dir = full_disk(tmp_path / "full")
    before = snapshot(out_dir)
    err = one_error_line(script("phash.py", root / "train", "--out", out_dir / "hashes.csv"))
    assert f"{out_dir}/hashes.csv" in err and "No space left on device" in err
    assert snapshot(out_dir) == before


def test_a_refused_write_is_one_line(project, read_only_disk):
    out_dir = read_only_disk(project["root"] / "ro")
    recipe = _retarget(project["recipe"], out_dir)
    err = one_error_line(script("blend.py", recipe))
    assert str(out_dir) in err and "Read-only file system" in err
    assert snapshot(out_dir) == {}


def test_phash_out_naming_a_directory_is_one_line(competition, tmp_path):
    root = competition()
    (tmp_path / "hashes").mkdir()
    err = one_error_line(script("phash.py", root / "train", "--out", tmp_path / "hashes"))
    assert "--out" in err and "is a directory" in err
    assert list((tmp_path / "hashes").iterdir()) == []


# ---- kills --------------------------------------------------------------------------------------

WRITER = """
import sys, time
from kit.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writers_temporary_is_removed_by_the_next_run(project):
    """kill -9 left `.<name>.*.tmp` files (an 11 MB `.model.onnx.*.tmp`) that no later run removed.
    Temporaries carry their host and process; the next writer of the same file removes a dead one."""
    target = project["root"] / "blends" / "submissions" / "final.csv"
    target.parent.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    left = list(target.parent.glob(".final.csv.*.tmp"))
    assert len(left) == 1 and not target.exists()
    old = target.parent / ".final.pseudo.csv.abc123xy.tmp"  # an older kit's name: no host, no process
    old.write_text("stale")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    out = script("blend.py", project["recipe"])
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["final.csv", "final.html", "final.pseudo.csv"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    from kit.io import clean_stale

    target = tmp_path / "x.csv"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert clean_stale(target) == [] and len(list(tmp_path.glob(".x.csv.*.tmp"))) == 1
    finally:
        writer.kill()
        writer.wait()
    assert len(clean_stale(target)) == 1 and list(tmp_path.iterdir()) == []
    other = tmp_path / ".x.csv.bak.abcdefgh.tmp"  # x.csv.bak's temporary, beside x.csv: not x.csv's to remove
    other.write_text("another output's")
    os.utime(other, (time.time() - 3 * 86400,) * 2)
    assert clean_stale(target) == [] and other.exists()


def test_a_kill_between_the_two_renames_of_a_directory_loses_nothing(tmp_path, monkeypatch):
    """atomic_dir moves the old directory aside, then the new one in: a kill between the two left
    the user's previous output under `.<name>.old`. The next writer puts it back first."""
    from kit import io
    from kit.io import clean_stale

    (tmp_path / ".test.old").mkdir()
    (tmp_path / ".test.old" / "scores.npy").write_bytes(b"previous")
    clean_stale(tmp_path / "test")  # just moved aside: perhaps a live writer's swap, left alone
    assert not (tmp_path / "test").exists()
    monkeypatch.setattr(io, "SWAP_GRACE", -1)  # a minute later (a rename sets the change time; utime cannot)
    clean_stale(tmp_path / "test")
    assert (tmp_path / "test" / "scores.npy").read_bytes() == b"previous"


# ---- what a run does not write, it does not leave behind ------------------------------------------

def test_files_this_run_does_not_write_are_removed_with_its_commit(project):
    """A pseudo-label gate that closes, and `--no-report`, used to leave the previous run's
    final.pseudo.csv and final.html beside the new submission, to be read as this run's."""
    out_dir = project["root"] / "blends" / "submissions"
    assert script("blend.py", project["recipe"]).returncode == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["final.csv", "final.html", "final.pseudo.csv"]
    d = yaml.safe_load(project["recipe"].read_text())
    d["pseudo"] = {"precision": 0.9999}  # no cut of a few validation images can show that
    project["recipe"].write_text(yaml.safe_dump(d, sort_keys=False))
    out = script("blend.py", project["recipe"], "--no-report")
    assert out.returncode == 0, out.stderr
    assert "removed " in out.stdout and "a previous run's pseudo-labels" in out.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["final.csv"]


def test_a_removal_waits_for_the_commit(tmp_path):
    from kit.io import outputs, write_text

    old = tmp_path / "old.csv"
    old.write_text("x\n")
    with pytest.raises(RuntimeError):
        with outputs(echo=None) as out:
            out.remove(old)
            write_text(tmp_path / "new.csv", "y\n", out)
            raise RuntimeError("the run fails")
    assert old.read_text() == "x\n" and not (tmp_path / "new.csv").exists()
    with outputs(echo=None) as out:  # removed, then written after all: written
        out.remove(old)
        write_text(old, "z\n", out)
    assert old.read_text() == "z\n"
    with outputs(echo=None) as out:
        out.remove(old)
    assert list(tmp_path.iterdir()) == []
