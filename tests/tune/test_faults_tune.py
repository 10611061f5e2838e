"""Issue 13's tune faults, as a user meets them: two tune.py started together on a new sqlite file,
the parent of `--jobs` workers killed, a study on a full disk, a report that cannot be written.
PostgreSQL, a real server, is in test_postgres.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError
from tune_project import ROOT, edit_yaml, script, script_env, tune_together

from faults import one_error_line, snapshot
from kit.post.recipe import load_recipe
from kit.tune.space import search_space
from kit.tune.study import study_name_for

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_of(path: Path, url: str):
    recipe = load_recipe(path)
    name = study_name_for(recipe, search_space(recipe), recipe.tune.holdout, recipe.tune.seed)
    return optuna.load_study(study_name=name, storage=url)


def test_two_tune_runs_started_together_on_a_new_sqlite_file(project):
    """One of them died with an IntegrityError traceback ("table studies already exists") while
    Optuna created its tables; now the loser tries again. Both finish, and the study holds exactly
    the trials asked for, each once, no parameters twice (runs seeded alike proposed the same trials:
    the sampler's seed is now the trial's). The race is lost about one time in three: three rounds."""
    path = project.recipe()
    n = 6
    for round_ in range(3):
        url = project.sqlite(f"race{round_}")
        tune_together(path, url, n)
        finished = _study_of(path, url).get_trials(states=(TrialState.COMPLETE,))
        assert sorted(t.number for t in finished) == list(range(n))
        assert len({tuple(sorted(t.params.items())) for t in finished}) == n  # none proposed twice


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_tune_kills_its_workers(project):
    """kill -9 of `tune.py --jobs 2` left its two workers running, tuning on unattended. They now
    end with it (the kernel tells them), and the next run marks their trials in flight FAILED."""
    path = project.recipe()
    url = project.sqlite()
    parent = subprocess.Popen([sys.executable, "scripts/tune.py", str(path), "--trials", "100000", "--storage", url,
                               "--jobs", "2", "--no-report", "--quiet"], cwd=ROOT, env=script_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert parent.poll() is None, parent.stderr.read()
            workers = [k for k in _children(parent.pid) if "_worker" in Path(f"/proc/{k}/cmdline").read_text()
                       or "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
            if len(workers) >= 2:
                try:
                    if len(_study_of(path, url).get_trials(states=(TrialState.COMPLETE,))) >= 4:
                        break
                except KeyError:  # the study is not created yet
                    pass
            time.sleep(0.2)
        assert len(workers) >= 2, "the workers never started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived tune.py"
    finally:
        parent.kill()
        parent.wait()
        for w in workers:  # should the kernel not have ended them, the test does: not a CI's cores
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _workers(pid: int) -> list[int]:
    """The `--jobs` worker processes of tune.py `pid` (not multiprocessing's resource tracker)."""
    out = []
    for k in _children(pid):
        try:
            if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text():
                out.append(k)
        except FileNotFoundError:
            pass
    return out


def _as_a_terminal_starts_it() -> None:
    """Ctrl-C not ignored, whatever the test runner inherited: a shell's `cmd &` without job control
    starts its command with SIGINT ignored, a disposition every child keeps (tune.py then rightly
    ignores Ctrl-C, and these tests would wait for it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _started(path: Path, url: str, jobs: int) -> subprocess.Popen:
    """tune.py with far more trials than it will run, in its own process group (a terminal's), once
    its study holds 4 finished trials (and its workers run)."""
    proc = subprocess.Popen([sys.executable, "scripts/tune.py", str(path), "--trials", "100000", "--storage", url,
                             "--jobs", str(jobs), "--no-report", "--quiet"], cwd=ROOT, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_a_terminal_starts_it)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if len(_workers(proc.pid)) >= (jobs if jobs > 1 else 0) and \
                        len(_study_of(path, url).get_trials(states=(TrialState.COMPLETE,))) >= 4:
                    return proc
            except (KeyError, SQLAlchemyError):  # the database, its tables or the study are not created yet
                pass
            time.sleep(0.2)
        raise AssertionError("tune.py never got going")
    except BaseException:  # never leave a tuner of 100,000 trials behind on a CI's cores
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


@pytest.mark.parametrize("jobs, whom", [(1, "group"), (2, "group"), (2, "parent")])
def test_ctrl_c_is_one_line_at_once_and_the_study_keeps_its_trials(project, jobs, whom):
    """Ctrl-C printed Optuna's 48-line traceback (115 with --jobs 2), and a SIGINT to tune.py alone
    waited minutes for its workers' remaining trials. Now: one line, exit 130, within seconds, the
    workers gone, nothing written, and the study's finished trials kept for the next run."""
    path, url = project.recipe(), project.sqlite(f"ctrl-c-{jobs}-{whom}")
    proc = _started(path, url, jobs)
    workers = _workers(proc.pid)
    assert len(workers) == (jobs if jobs > 1 else 0)
    try:
        start = time.time()
        if whom == "group":  # a terminal's Ctrl-C: every process of the foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert time.time() - start < 30
        assert proc.returncode == 130
        assert err.strip().splitlines() == ["interrupted: nothing written; the study keeps every finished trial, "
                                            "and the same command goes on from them"], err
        assert not any(_alive(w) for w in workers)
        assert not (path.parent / f"{path.stem}.tuned.yaml").exists()
        states = [t.state for t in _study_of(path, url).get_trials()]
        assert states.count(TrialState.COMPLETE) >= 4 and TrialState.RUNNING not in states
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: tune.py and any worker left
        except ProcessLookupError:
            pass
        proc.wait()


def test_a_study_on_a_full_disk_is_one_line(project, full_disk):
    """sqlite on a full disk: an `OSError: [Errno 28]` traceback; now one line naming the storage,
    and no tuned recipe."""
    disk = full_disk(project.root / "full")
    path = project.recipe()
    blends = snapshot(path.parent)
    err = one_error_line(script("tune.py", str(path), "--trials", "3", "--storage", f"sqlite:///{disk / 'studies.db'}"))
    assert f"--storage sqlite:///{disk}/studies.db" in err and ("full" in err or "No space" in err)
    assert snapshot(path.parent) == blends


def test_the_tuned_recipe_and_its_report_are_written_together(project, read_only_disk):
    """A report that cannot be written (its directory is read-only) leaves no tuned recipe either."""
    disk = read_only_disk(project.root / "ro")
    path = edit_yaml(project.recipe(), lambda d: d.update(output=str(disk)))
    blends = snapshot(path.parent)
    err = one_error_line(script("tune.py", str(path), "--trials", "3", "--storage", project.sqlite()))
    assert f"{disk}/final" in err and "Read-only file system" in err
    assert snapshot(path.parent) == blends
