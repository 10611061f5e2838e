"""Tuning across machines through PostgreSQL, as the README documents it: a real server (the OS
package, started in a temporary directory on a Unix socket, no TCP), two tune.py processes started
together on one study of a fresh database, as two machines would: no trial lost, none duplicated.
Skipped, with the reason, where PostgreSQL or its Python driver is not installed; CI installs both."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tune_project import tune_together

from kit.post.recipe import load_recipe
from kit.tune.space import search_space
from kit.tune.storage import with_driver
from kit.tune.study import study_name_for


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:  # the socket file's name carries a port number even without TCP
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """The URL of a fresh database on a PostgreSQL server of our own, stopped and removed after."""
    pytest.importorskip("psycopg2", reason="no psycopg2: pip install psycopg2-binary (the [test] extra has it)")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server: apt-get install postgresql (.ci/run does, as root)")
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="kit-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(home, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*cmd: str) -> None:
        out = subprocess.run([*as_user, str(bin_dir / cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{cmd[0]}: {out.stdout[-1500:]} {out.stderr[-1500:]}"

    data = home / "data"
    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "kit", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60", "start",
           "-o", f"-k {home} -p {port} -c listen_addresses='' -c fsync=off")
        pg("createdb", "-h", str(home), "-p", str(port), "-U", "kit", "studies")
        yield f"postgresql://kit@/studies?host={home}&port={port}"  # as the README writes it: no driver named
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def test_two_machines_tune_one_study_in_postgresql(project, postgres):
    n = 16
    path = project.recipe()
    for out in tune_together(path, postgres, n):
        assert f"in {postgres}: {n} finished trials" in out
    recipe = load_recipe(path)
    name = study_name_for(recipe, search_space(recipe), recipe.tune.holdout, recipe.tune.seed)
    trials = optuna.load_study(study_name=name, storage=with_driver(postgres)).get_trials()
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.number for t in finished) == list(range(n)), [(t.number, t.state.name) for t in trials]
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n  # no parameter set twice
    surplus = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.PRUNED and t.number >= n for t in surplus)


def test_a_bare_server_url_gets_the_installed_driver(monkeypatch):
    """postgresql://, as the README writes it, crashed in 41 lines: SQLAlchemy 2.1 maps it to psycopg 3,
    and the [postgres] extra installs psycopg2."""
    import importlib.util

    from kit.errors import KitError

    installed = {"psycopg2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert with_driver("postgresql://u:p@host/db") == "postgresql+psycopg2://u:p@host/db"
    assert with_driver("postgres://u@host/db") == "postgresql+psycopg2://u@host/db"
    assert with_driver("postgresql+psycopg://u@host/db") == "postgresql+psycopg://u@host/db"  # the user's choice
    assert with_driver("sqlite:///models/studies.db") == "sqlite:///models/studies.db"
    installed.add("psycopg")
    assert with_driver("postgresql://u@host/db") == "postgresql+psycopg://u@host/db"
    with pytest.raises(KitError, match=r"mysql://\.\.\.: no mysql driver is installed: pip install mysqlclient"):
        with_driver("mysql://u@host/db")
