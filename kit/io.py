"""Atomic writes and checked reads: nothing half-written, every bad file named."""
from __future__ import annotations

import contextlib
import errno
import functools
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from kit.errors import KitError


@functools.cache
def _umask() -> int:
    """This process's umask, read when the first output is written (never changed at import)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, then put it back
    os.umask(mask)
    return mask


def cpu_count() -> int:
    """Cores this process may use (the affinity mask: a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# Errors of the disk rather than of the input: told as one line naming the path, never a traceback.
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG,
                         errno.EISDIR, errno.ENOTDIR})
STALE_AFTER = 24 * 3600  # seconds: a temporary of another machine (shared disk) or of old code this old is stale
SWAP_GRACE = 60  # seconds: a `.<name>.old` this old is a killed swap's, not one in progress


def _machine() -> str:
    """This host and pid namespace (containers may share a host name, not their process ids)."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname().split(".")[0]) or "host"
    try:
        return f"{host}_{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux
        return host


_MACHINE = _machine()
_RANDOM = "[a-z0-9_]{8}"  # tempfile's random part


def disk_error(e: OSError, path: str | os.PathLike | None = None) -> KitError:
    """`path: cannot write (No space left on device)` for the output being written (not our temporary
    beside it); without one, `file: Permission denied` for the file the OS named."""
    if path is not None:
        return KitError(f"{path}: cannot write ({e.strerror or e})")
    return KitError(f"{e.filename}: {e.strerror or e}" if e.filename else f"{e.strerror or e}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer of `path` left beside it (`.<name>.<machine>-<pid>-*.tmp`:
    this machine's dead processes at once; another machine's, or an older kit's `.<name>.*.tmp`, after
    a day), and put back the directory `path` from `.<name>.old` if a kill fell between the two renames
    of its swap. Returns what it removed."""
    path = Path(path)
    removed: list[Path] = []
    old = path.with_name(f".{path.name}.old")
    try:  # the user's previous output, moved aside and never replaced (not a live writer's, mid-swap)
        if old.is_dir() and not path.exists() and time.time() - old.lstat().st_ctime > SWAP_GRACE:
            os.replace(old, path)
    except FileNotFoundError:
        pass
    ours = re.compile(rf"\.{re.escape(path.name)}\.(?:([^-]+)-(\d+)-)?{_RANDOM}\.tmp")
    try:
        candidates = [(p, ours.fullmatch(p.name)) for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp")]
    except OSError:
        return removed
    now = time.time()
    for tmp, match in candidates:
        if match is None:
            continue  # another file's temporary (`.a.b.*.tmp` beside `a`)
        try:
            if match.group(1) == _MACHINE:
                stale = not _pid_alive(int(match.group(2)))
            else:
                stale = now - tmp.lstat().st_mtime > STALE_AFTER
            if stale:
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _prefix(path: Path) -> str:
    return f".{path.name}.{_MACHINE}-{os.getpid()}-"


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise KitError(f"{path}: is a directory; give a file name")


@contextlib.contextmanager
def disk_errors_named(path: str | os.PathLike) -> Iterator[None]:
    """A disk error inside the block becomes a KitError naming `path`, the output it writes."""
    try:
        yield
    except OSError as e:
        if e.errno in DISK_ERRORS:
            raise disk_error(e, path) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, out: Outputs | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds (with
    `out`: when the caller commits its run's outputs). A full disk or a refused write is a KitError
    naming the path; a killed writer's temporary is removed by the next writer of the same path."""
    with within(out) as run:
        tmp = run.path(path)
        with disk_errors_named(path):
            yield tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, out: Outputs | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds
    (with `out`: when the caller commits)."""
    with within(out) as run:
        tmp = run.directory(path)
        with disk_errors_named(path):
            yield tmp


JOURNAL = ".whale-kit-commit.json"  # a commit in progress, or one a kill cut short (see Outputs.commit)


@contextlib.contextmanager
def locked(paths: Sequence[Path]) -> Iterator[None]:
    """Exclusive locks for the block (POSIX flock; elsewhere none): on a directory itself (no lock file
    left behind), or on a lock file, made if absent. Taken in sorted order, so that two holders of
    overlapping sets never wait on each other."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one process at a time is the user's business
        yield
        return
    fds = []
    try:
        for path in sorted(set(map(Path, paths))):
            fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in reversed(fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _write_journal(directory: Path, moves: list[tuple[Path | None, Path]]) -> Path:
    """The moves, as paths relative to `directory`, written there atomically (a project that moves
    keeps them meaningful)."""
    rel = lambda p: None if p is None else os.path.relpath(p, directory)  # noqa: E731
    record = json.dumps({"moves": [[rel(tmp), rel(target)] for tmp, target in moves]})
    fd, tmp = tempfile.mkstemp(prefix=_prefix(directory / JOURNAL), suffix=".tmp", dir=directory)
    with disk_errors_named(directory / JOURNAL):
        try:
            with os.fdopen(fd, "w") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / JOURNAL)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return directory / JOURNAL


def _apply(moves: list[tuple[Path | None, Path]]) -> None:
    """The renames of a commit, each done once: a move whose temporary is gone happened already (a
    commit finished by `settle` after a kill). Renames only: nothing can run out of space now."""
    for tmp, target in moves:
        with disk_errors_named(target):
            if tmp is None:
                target.unlink(missing_ok=True)
            elif not os.path.lexists(tmp):
                continue
            elif tmp.is_dir() and target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except OSError:
                    os.replace(old, target)  # the previous directory back in place at once
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
                if target.is_dir():  # a swap a kill cut between its two renames: its `.old` goes
                    shutil.rmtree(target.with_name(f".{target.name}.old"), ignore_errors=True)


def _settle_locked(directory: Path) -> None:
    journal = directory / JOURNAL
    try:
        record = json.loads(journal.read_text())
    except (OSError, ValueError):
        return  # none (a journal is written whole or not at all)
    moves = [(None if tmp is None else directory / tmp, directory / target) for tmp, target in record["moves"]]
    _apply(moves)
    for parent in {target.parent for _, target in moves}:
        (parent / JOURNAL).unlink(missing_ok=True)


def settle(directory: str | os.PathLike) -> None:
    """Finish a commit a kill cut short in `directory` (its journal's moves), so that what is read
    there is one run's outputs whole. Call before reading a run's outputs; cheap when there is none."""
    directory = Path(directory)
    if not (directory / JOURNAL).is_file():
        return
    with locked([directory]):
        _settle_locked(directory)


class Outputs:
    """The files (and directories) one run writes, staged as temporaries beside their targets and
    moved into place together by `commit` once the whole run has succeeded, in the order they were
    staged (a run's freshness marker last): a failure anywhere (a bad image in the report, a full
    disk) leaves neither a partial set nor a temporary. Use through `outputs()`."""

    def __init__(self) -> None:
        # (temporary, target, what to print once moved); temporary None: the target is removed on commit
        self._staged: list[tuple[Path | None, Path, str]] = []

    def _stage(self, target: str | os.PathLike, note: str, make: Callable[[Path], Path]) -> Path:
        target = Path(target)
        self._staged = [e for e in self._staged if not (e[0] is None and e[1] == target)]  # written after all
        if any(t == target for _, t, _ in self._staged):
            raise ValueError(f"{target} is staged twice")
        with disk_errors_named(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            settle(target.parent)  # a killed run's commit is finished before its temporaries look stale
            clean_stale(target)
            tmp = make(target)
        self._staged.append((tmp, target, note))
        return tmp

    def path(self, target: str | os.PathLike, note: str = "") -> Path:
        """A temporary file to write `target`'s content to; `note` is printed once it is in place."""
        _refuse_directory(Path(target))

        def make(target: Path) -> Path:
            fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_umask())
            return Path(tmp)

        return self._stage(target, note, make)

    def directory(self, target: str | os.PathLike, note: str = "") -> Path:
        """A temporary directory to fill; it replaces the directory `target` on commit."""
        def make(target: Path) -> Path:
            tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
            os.chmod(tmp, 0o777 & ~_umask())
            return tmp

        return self._stage(target, note, make)

    def remove(self, target: str | os.PathLike, note: str = "") -> None:
        """Remove the file `target` on commit, if it is there: a previous run's output this run does not
        replace (it would be read as this run's). Nothing happens if the run fails."""
        target = Path(target)
        if target.is_file() and not any(t == target for _, t, _ in self._staged):
            self._staged.append((None, target, note))

    def staged(self, target: str | os.PathLike) -> Path:
        """The temporary standing for `target` until commit (to read back what the run wrote)."""
        return next(tmp for tmp, t, _ in self._staged if t == Path(target) and tmp is not None)

    def commit(self, echo: Callable[[str], None] | None = print) -> list[Path]:
        """Move everything staged into place, all or nothing for a reader: the moves are written to a
        journal (JOURNAL, in every directory they touch) before the first rename and the journal is
        removed after the last, all under a lock on those directories. A kill between two renames
        leaves the journal, and the next reader or writer there (`settle`) finishes the moves: it
        sees the new set whole, never a mix. A directory replacing one is swapped through `.<name>.old`."""
        moves = [(tmp, target) for tmp, target, _ in self._staged]
        if moves:
            dirs = sorted({target.parent for _, target in moves})
            with locked(dirs):
                for d in dirs:  # another run's commit, killed there, first (and a journal it was writing)
                    _settle_locked(d)
                    clean_stale(d / JOURNAL)
                journals = []
                try:
                    for d in dirs:
                        journals.append(_write_journal(d, moves))
                except BaseException:
                    for j in journals:
                        j.unlink(missing_ok=True)
                    raise
                _apply(moves)
                for j in journals:
                    j.unlink(missing_ok=True)
        done, self._staged = self._staged, []
        for _, _, note in done:
            if note and echo is not None:
                echo(note)
        return [target for _, target, _ in done]

    def discard(self) -> None:
        for tmp, _, _ in self._staged:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        self._staged = []


@contextlib.contextmanager
def outputs(echo: Callable[[str], None] | None = print) -> Iterator[Outputs]:
    """`with outputs() as out:` stage every file of a run through `out`; all or none are written."""
    out = Outputs()
    try:
        yield out
        out.commit(echo)
    finally:
        out.discard()


def within(out: Outputs | None) -> contextlib.AbstractContextManager[Outputs]:
    """The caller's output set, or (None) a set of its own, committed when the block ends."""
    return contextlib.nullcontext(out) if out is not None else outputs(echo=None)


def write_text(path: str | os.PathLike, text: str, out: Outputs | None = None, note: str = "") -> Path:
    """`text` to `path`, atomically; staged to `out` when given (`note` printed once it is in place)."""
    with within(out) as run:
        tmp = run.path(path, note)
        with disk_errors_named(path):
            tmp.write_text(text)
    return Path(path)


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, out: Outputs | None = None, note: str = "") -> Path:
    """`frame` to `path` as CSV (no index), atomically; staged to `out` when given."""
    with within(out) as run:
        tmp = run.path(path, note)
        with disk_errors_named(path):
            frame.to_csv(tmp, index=False)
    return Path(path)


def read_csv(path: str | os.PathLike, columns: Sequence[str] = (), what: str = "") -> pd.DataFrame:
    """Read a CSV as strings, checking it exists, is not empty and has `columns`."""
    path = Path(path)
    label = f"{path}" + (f" ({what})" if what else "")
    if not path.is_file():
        raise KitError(f"{label}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise KitError(f"{label}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise KitError(f"{label}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KitError(
            f"{label}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
        )
    if len(frame) == 0:
        raise KitError(f"{label}: the file has a header but no rows")
    return frame
