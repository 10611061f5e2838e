"""Comparisons that carry their noise: paired bootstrap intervals over images.

"A beats B" is a claim about the metric of A minus the metric of B over the same images (under
MAP@5: the mean over images of AP@5(A) - AP@5(B)). The images are resampled with replacement and the
*same* resample is applied to both (a paired bootstrap): what varies from one validation set to
another is which images it holds, and an image that is hard for A is usually hard for B too. The 95%
interval is the 2.5th and 97.5th percentiles of the resampled differences; an interval that holds 0
is "within the noise". An additive metric (kit/metrics) resamples the per-image differences of the
marks; a balanced one (AnimalCLEF's) recomputes the metric of A and of B on each resample.

Seeded: the same inputs give the same interval, and every comparison of one table is made on the
same resamples. Vectorised: resamples are drawn in chunks of (chunk, N) indices, so 10,000 resamples
of 8,000 images take a fraction of a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kit.metrics import Scorer

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0
_CHUNK_ELEMENTS = 2_000_000  # indices drawn at once: bounds the memory whatever N is


@dataclass(frozen=True)
class Gain:
    """mean(a - b) over n images, with its paired bootstrap interval [low, high]."""

    value: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"

    def verdict(self, what: str = "the gain") -> str:
        """One sentence a reader can act on."""
        pct = f"{self.level:.0%}"
        if self.low > 0:
            return f"{what} is {self.value:+.4f}, significant ({pct} interval {self.low:+.4f} to {self.high:+.4f}, {self.n} images)"
        if self.high < 0:
            return f"{what} is {self.value:+.4f}, a significant loss ({pct} interval {self.low:+.4f} to {self.high:+.4f}, {self.n} images)"
        return (f"{what} is {self.value:+.4f}, not significant: the {pct} interval {self.low:+.4f} to {self.high:+.4f} "
                f"holds 0 ({self.n} images)")

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "level": self.level}


def resampled_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, m) means of the m rows of `values` (m, n) over bootstrap resamples of the n columns
    (see `resamples_of`); every row uses the same indices."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    out = np.zeros((resamples, values.shape[0]))
    for rows, idx in resamples_of(values.shape[1], resamples, seed):
        for row in range(values.shape[0]):
            out[rows, row] = values[row][idx].mean(axis=1)
    return out


def resamples_of(n: int, resamples: int = RESAMPLES, seed: int = SEED):
    """(slice of resamples, their (r, n) image indices), chunk by chunk: resample r draws n indices
    uniformly with replacement from `np.random.default_rng(seed)`, row after row (drawing them in
    chunks gives the same stream). Nothing for n = 0."""
    if n == 0:
        return
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        yield slice(start, stop), rng.integers(0, n, size=(stop - start, n))


def paired_gains(pairs: Sequence[tuple[np.ndarray, np.ndarray]], scorer: Scorer | None = None,
                 resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> list[Gain]:
    """One Gain per (a, b) pair of per-image marks over the same images (the scorer's: its metric's;
    without one, additive: the mean of a - b), all on the same resamples."""
    if not pairs:
        return []
    n = len(pairs[0][0])
    for a, b in pairs:
        if len(a) != n or len(b) != n:
            raise ValueError("paired scores must cover the same images")
        if scorer is not None and len(scorer) != n:
            raise ValueError("the scorer must cover the paired images")
    if scorer is None or scorer.metric.additive:
        diffs = np.stack([np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in pairs])
        values = diffs.mean(axis=1) if n else np.zeros(len(pairs))
        resampled = resampled_means(diffs, resamples, seed)
    else:
        values = np.array([scorer.score(a) - scorer.score(b) for a, b in pairs])
        resampled = np.zeros((resamples, len(pairs)))
        for rows, idx in resamples_of(n, resamples, seed):
            for j, (a, b) in enumerate(pairs):
                resampled[rows, j] = scorer.resampled(a, idx) - scorer.resampled(b, idx)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0) if n else (np.zeros(len(pairs)),) * 2
    return [Gain(float(v), float(lo), float(hi), n, level) for v, lo, hi in zip(values, low, high)]


def paired_gain(a: np.ndarray, b: np.ndarray, scorer: Scorer | None = None, resamples: int = RESAMPLES,
                seed: int = SEED, level: float = LEVEL) -> Gain:
    """The metric of a minus that of b with its paired bootstrap interval (a, b: per-image marks on
    the same images; see paired_gains)."""
    return paired_gains([(a, b)], scorer, resamples, seed, level)[0]


# ----------------------------------------------------------------------------- the member table
def holdout_split(truth: np.ndarray, unknown_code: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (tune, holdout) of the validation images, stratified on unknown vs known: the held-out
    part is what no threshold or trial may see, the part every "tuned" claim is judged on."""
    rng = np.random.default_rng(seed)
    hold = np.zeros(len(truth), bool)
    if share > 0:
        for group in (truth == unknown_code, truth != unknown_code):
            idx = rng.permutation(np.flatnonzero(group))
            hold[idx[: int(round(share * len(idx)))]] = True
    return np.flatnonzero(~hold), np.flatnonzero(hold)


@dataclass
class Row:
    what: str
    marks: dict[str, np.ndarray]  # part -> each image's mark (parts: "held-out val", "test")
    scorers: dict[str, Scorer]  # part -> the metric on its images

    def score(self, part: str) -> float:
        a = self.marks.get(part)
        return self.scorers[part].score(a) if a is not None and len(a) else float("nan")


@dataclass
class Claim:
    """`better` beats `worse` on `part` by `gain` (a paired interval)."""

    better: str
    worse: str
    part: str
    gain: Gain


@dataclass
class MemberTable:
    """Each member alone, the blend untuned, with its threshold fitted, and tuned: on the held-out
    part of the validation images and on the test truth, with the comparisons that matter."""

    rows: list[Row]
    sizes: dict[str, int]  # part -> images
    claims: list[Claim]
    title: str = "MAP@5"  # the metric's

    def to_dict(self) -> dict:
        return {"metric": self.title, "sizes": self.sizes,
                "rows": [{"what": r.what, **{p: r.score(p) for p in self.sizes}} for r in self.rows],
                "claims": [{"better": c.better, "worse": c.worse, "part": c.part, **c.gain.to_dict()} for c in self.claims]}


def format_table(table: dict) -> str:
    """A MemberTable (as `to_dict` gives it): the metric of every row on each part."""
    parts = list(table["sizes"])
    width = max(52, max(len(r["what"]) for r in table["rows"]) + 2)
    heads = [f"{p} ({table['sizes'][p]})" for p in parts]
    lines = [f"{table.get('metric', 'MAP@5'):<{width}}" + "".join(f"{h:>20}" for h in heads)]
    for r in table["rows"]:
        lines.append(f"{r['what']:<{width}}" + "".join(f"{r[p]:>20.4f}" for p in parts))
    return "\n".join(lines)


def format_claims(table: dict) -> list[str]:
    """One line per claim of a MemberTable (as `to_dict` gives it): the gain, its interval, the verdict."""
    out = []
    for c in table["claims"]:
        verdict = ("significant" if c["low"] > 0 else "a significant loss" if c["high"] < 0
                   else "not significant: the interval holds 0")
        out.append(f"{c['better']} - {c['worse']}, {c['part']}: {c['value']:+.4f} "
                   f"[{c['low']:+.4f}, {c['high']:+.4f}], {verdict}")
    return out
