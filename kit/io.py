"""Atomic writes and checked reads: nothing half-written, every bad file named."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd

from kit.errors import KitError

_UMASK = os.umask(0)
os.umask(_UMASK)


def cpu_count() -> int:
    """Cores this process may use (the affinity mask: a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


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


def read_yaml(path: str | os.PathLike, what: str) -> object:
    """Parse a YAML file (a recipe); a missing file or bad YAML is one KitError naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise KitError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the {what} as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KitError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or str(e).splitlines()[0]})") from None
