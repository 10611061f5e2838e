"""Progress for long jobs: a live bar on a terminal, a plain line every few seconds in a log.

`progress(total, desc, unit)` is tqdm when the output is a terminal. Anywhere else (a file, a
pipe, a CI log) it is a `LineProgress`: no carriage-return frames, one line `desc: n/total unit
(rate unit/s)` at most every `every` seconds and one at the end, so a training log redirected to
a file grows by a line per few seconds, not a frame per step.
"""
from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm


class LineProgress:
    """The part of tqdm's interface the kit uses (update, set_postfix, close, n), printed as lines."""

    def __init__(self, total: int | None, desc: str, unit: str, file: IO[str], every: float):
        self.total, self.desc, self.unit, self.file, self.every = total, desc, unit, file, every
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        count = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        rate = f" ({self.n / elapsed:,.1f} {self.unit}/s)"
        self.file.write(f"{self.desc}: {count} {self.unit}{rate}{', ' + self.postfix if self.postfix else ''}\n")
        self.file.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n:
                self._line()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Off:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Off":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, file: IO[str] | None = None,
             every: float = 10.0, leave: bool = False):
    """A progress display for `total` steps: tqdm on a terminal, lines elsewhere, nothing if not `enabled`."""
    file = file or sys.stderr
    if not enabled:
        return _Off()
    if getattr(file, "isatty", lambda: False)():

        return tqdm(total=total, desc=desc, unit=unit, file=file, leave=leave, dynamic_ncols=True)
    return LineProgress(total, desc, unit, file, every)


def interactive(file: IO[str] | None = None) -> bool:
    """Output goes to a terminal (where a live bar is welcome)."""
    file = file or sys.stderr
    return bool(getattr(file, "isatty", lambda: False)())
