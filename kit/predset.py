"""The prediction set: what every model hands the blender (design.md, "Prediction set").

A directory with `scores.npy` (float32, N x C, C-contiguous), `images.txt`, `classes.txt`
(the unknown label excluded) and `meta.json` (`kind`, `model`, `split`). No pickle; the
scores are memory-mapped on load. Members are aligned by names, never by position.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kit.errors import KitError
from kit.io import Outputs, atomic_dir

KINDS = ("prob", "logit", "cosine", "inliers")  # inliers: a local matcher's verified inlier counts (kit/local)
SPLITS = ("val", "test", "oof")


@dataclass
class PredictionSet:
    scores: np.ndarray  # float32 (N, C)
    images: list[str]
    classes: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def name(self) -> str:
        return str(self.meta.get("model", "?"))

    def validate(self, where: str = "prediction set") -> "PredictionSet":
        s = self.scores
        if s.ndim != 2 or s.shape != (len(self.images), len(self.classes)):
            raise KitError(
                f"{where}: scores.npy has shape {s.shape}, expected "
                f"({len(self.images)} images, {len(self.classes)} classes)"
            )
        if s.dtype != np.float32:
            raise KitError(f"{where}: scores.npy is {s.dtype}, expected float32")
        if self.meta.get("kind") not in KINDS:
            raise KitError(f"{where}: meta.json kind is {self.meta.get('kind')!r}, expected one of {KINDS}")
        if self.meta.get("split") not in SPLITS:
            raise KitError(f"{where}: meta.json split is {self.meta.get('split')!r}, expected one of {SPLITS}")
        for what, names in (("images.txt", self.images), ("classes.txt", self.classes)):
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise KitError(f"{where}: {what} lists {dup!r} more than once")
        if not np.isfinite(s).all():
            bad = int((~np.isfinite(s)).any(axis=1).sum())
            raise KitError(f"{where}: scores.npy has NaN or infinite values in {bad} row(s)")
        return self

    def save(self, directory: str | Path, out: Outputs | None = None) -> Path:
        """Write the set atomically: the directory appears complete or not at all. With `out`,
        staged there: in place with the run's other outputs, when the caller commits them."""
        self.validate(str(directory))
        directory = Path(directory)
        with atomic_dir(directory, out) as tmp:
            self._write(tmp)
        return directory

    def _write(self, tmp: Path) -> None:
        np.save(tmp / "scores.npy", np.ascontiguousarray(self.scores, dtype=np.float32))
        (tmp / "images.txt").write_text("".join(f"{n}\n" for n in self.images))
        (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in self.classes))
        (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")


def load(directory: str | Path, mmap: bool = True) -> PredictionSet:
    """Read and check a prediction set; scores are memory-mapped unless `mmap=False`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KitError(f"{directory}: prediction set not found")
    for f in ("scores.npy", "images.txt", "classes.txt", "meta.json"):
        if not (directory / f).is_file():
            raise KitError(f"{directory}: prediction set lacks {f}")
    try:
        scores = np.load(directory / "scores.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as e:  # EOFError: an empty or cut file (a full disk, a copy stopped)
        raise KitError(f"{directory / 'scores.npy'}: not a plain .npy array ({e or 'empty or cut short'})") from None
    try:
        meta = json.loads(_text(directory / "meta.json"))
    except json.JSONDecodeError as e:
        raise KitError(f"{directory / 'meta.json'}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise KitError(f"{directory / 'meta.json'}: must be a JSON object of keys, got {type(meta).__name__}")
    images = _text(directory / "images.txt").splitlines()
    classes = _text(directory / "classes.txt").splitlines()
    return PredictionSet(scores, images, classes, meta).validate(str(directory))


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KitError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def check_aligned(members: Sequence[PredictionSet], names: Sequence[str] | None = None) -> None:
    """Members must hold the same images and classes (in any order): else name both. `names`: how
    to call each in the message (default `member <meta model>`; a blend gives recipe positions and
    directories, as two members may share a model name)."""
    names = list(names) if names is not None else [f"member {m.name}" for m in members]
    first = members[0]
    for other, other_name in zip(members[1:], names[1:]):
        for what, a, b in (("images", first.images, other.images), ("classes", first.classes, other.classes)):
            sa, sb = set(a), set(b)
            if sa != sb:
                only_a, only_b = sorted(sa - sb), sorted(sb - sa)
                detail = []
                if only_a:
                    detail.append(f"{len(only_a)} only in the first (e.g. {only_a[0]!r})")
                if only_b:
                    detail.append(f"{len(only_b)} only in the second (e.g. {only_b[0]!r})")
                raise KitError(
                    f"{names[0]} ({first.meta.get('split')}) and {other_name} "
                    f"({other.meta.get('split')}) disagree on {what}: " + "; ".join(detail)
                )


def reindex(ps: PredictionSet, images: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """The scores of `ps` with rows and columns put in the order of `images` and `classes`."""
    row = {n: i for i, n in enumerate(ps.images)}
    col = {n: j for j, n in enumerate(ps.classes)}
    ri = np.fromiter((row[n] for n in images), dtype=np.int64, count=len(images))
    ci = np.fromiter((col[n] for n in classes), dtype=np.int64, count=len(classes))
    if np.array_equal(ri, np.arange(len(ri))) and np.array_equal(ci, np.arange(len(ci))):
        return np.asarray(ps.scores)
    return np.asarray(ps.scores)[ri][:, ci]
