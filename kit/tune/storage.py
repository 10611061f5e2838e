"""Where Optuna keeps a study: a URL to a storage (`open_storage`: sqlite:///, postgresql://,
mysql:// or journal:PATH), the study created once however many tune.py race to it (`create_study`),
and a storage's failure as one line naming it (`storage_errors`)."""
from __future__ import annotations

import contextlib
import importlib.util
import random
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from kit.errors import KitError
from kit.io import DISK_ERRORS

GRACE = 15  # seconds without a heartbeat after which a RUNNING trial counts as a killed worker's


def _sqlite_write_ahead(engine) -> None:
    """A trial is some 20 small commits (its parameters one by one, the heartbeat, the value), and
    sqlite's default journal syncs the disk at each: half the trial's time. Write-ahead logging
    with `synchronous=NORMAL` syncs at checkpoints only, still loses nothing to a killed process
    (only to a power cut), and lets workers read while one writes. Local disks only, as sqlite is."""
    from sqlalchemy import event

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections Optuna opened to set the schema up, without the pragmas


# a server URL without a driver (postgresql://, as the README writes it) gets the first one installed:
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and the [postgres] extra installs psycopg2
DRIVERS = {"postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
           "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql"))}


def with_driver(url: str) -> str:
    """`url` with an installed SQLAlchemy driver named for a bare postgresql:// or mysql:// (and
    postgres://, an old spelling); other URLs as they are. A KitError when no driver is installed."""
    scheme, sep, rest = url.partition("://")
    scheme = "postgresql" if scheme == "postgres" else scheme
    if not sep or scheme not in DRIVERS:
        return url
    for module, driver in DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            return f"{scheme}+{driver}://{rest}"
    extra = ("pip install -e '.[postgres]' (psycopg2), or psycopg" if scheme == "postgresql"
             else "pip install mysqlclient, or pymysql")
    raise KitError(f"--storage {scheme}://...: no {scheme} driver is installed: {extra}")


def open_storage(url: str, grace: int = GRACE):
    """An Optuna storage from a URL: RDB (sqlite:///, postgresql://, mysql://) or `journal:PATH`.
    `grace`: seconds without a heartbeat before an RDB storage fails a killed worker's trial."""
    import optuna

    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if url.startswith(("sqlite:", "postgres", "mysql")):
        url = with_driver(url)
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # two workers share one file
        # A killed worker's trial stays RUNNING; heartbeats let the next run mark it FAILED.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=max(1, min(5, grace // 3)), grace_period=grace, **kwargs)
        if url.startswith("sqlite:///"):
            _sqlite_write_ahead(storage.engine)
        return storage
    raise KitError(f"--storage {url!r}: expected sqlite:///PATH, postgresql://..., mysql://... or journal:PATH")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A storage that fails (a full disk, a refused file, a server that went away) is one line naming
    it; Optuna's experimental-feature warnings are silenced inside."""
    import optuna

    try:
        with warnings.catch_warnings():
            # Optuna 4 calls multivariate TPE and stale-trial failing experimental, once per process:
            # noise in a log, and it would break the one-line error of a failed run
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    except _storage_failures() as e:
        raise KitError(f"--storage {url}: {_reason(e)}") from None
    except OSError as e:  # a journal file's disk
        if e.errno not in DISK_ERRORS:
            raise
        raise KitError(f"--storage {url}: {e.strerror}") from None


def _storage_failures() -> tuple[type[BaseException], ...]:
    """What a storage raises when it fails: SQLAlchemy's errors, and Optuna's wrapper of them."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError, optuna.exceptions.StorageInternalError


def _reason(e: BaseException) -> str:
    cause = getattr(e, "orig", None) or e.__cause__ or e
    return (str(getattr(cause, "orig", None) or cause).splitlines() or [type(cause).__name__])[0]


def create_study(url: str, study_name: str, grace: int = GRACE):
    """Create (or load) the study. Several tune.py started at once on a new database race to create
    Optuna's tables ("table studies already exists"); the loser tries again, and then finds them."""
    import optuna

    for attempt in range(7):
        try:
            return optuna.create_study(study_name=study_name, storage=open_storage(url, grace), direction="maximize",
                                       load_if_exists=True)
        except _storage_failures():
            if attempt == 6:
                raise
            time.sleep(0.05 * 2 ** attempt + random.random() * 0.05)
