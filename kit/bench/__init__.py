"""What the benchmarks share (one module per stage here in kit/bench/, printed by `scripts/bench.py`): the
machine line, a median timer and the table every section prints."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from kit.io import cpu_count

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # real files, never copied in
REAL_LABELS = SHARED_DATA / "humpback2019" / "train.csv"  # the real 2019 label file: the Kaggle-scale benchmarks read it when there


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = cpu_count()
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("numba", "PIL", "pandas"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return f"machine: {cpu}, {cores} core(s){mem}{load}\n         {', '.join(versions)}"


def load_average() -> float:
    """The last minute's load average (0 where the system does not say)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Table:
    """Rows of (what, measured, unit, target, verdict); printed aligned."""

    def __init__(self, title: str):
        self.title, self.rows = title, []

    def add(self, what: str, value: float | str, unit: str = "", target: str = "", verdict: str = "") -> None:
        self.rows.append((what, value, unit, target, verdict))

    def note(self, text: str) -> None:
        self.rows.append((text, None, "", "", ""))

    def print(self) -> None:
        print(f"\n{self.title}")
        w = max([len(r[0]) for r in self.rows if r[1] is not None] + [10])
        print(f"  {'measure':<{w}}  {'value':>12} {'unit':<10} {'target':<22} ratio / verdict")
        for what, value, unit, target, verdict in self.rows:
            if value is None:
                print(f"  {what}")
                continue
            v = value if isinstance(value, str) else fmt(value)
            print(f"  {what:<{w}}  {v:>12} {unit:<10} {target:<22} {verdict}")


def fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e6:
        return f"{x:.3g}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def ok(good: bool) -> str:
    return "ok" if good else "MISSED"
