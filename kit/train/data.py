"""Images in, tensors out: the one preprocessing function, the training tables and epoch plans.

`load_image(path, box, info)` is the member's preprocessing, shared by training and inference:
crop to the bounding box (grown by `box_margin`) when the member uses boxes, greyscale or RGB
(always 3 channels out), resize to `input_size` (H, W), normalise with mean/std. Training splits
it in two (`load_pixels`, then augmentation, then `normalise`) so that it can cache the decoded
pixels and augment in pixel units; without augmentation the two paths give identical arrays.

An epoch is a *plan*: which rows, flipped or not, with which augmentation seed, in which order,
drawn from (seed, epoch) alone. Ranks of a DDP run take their shard of every global batch of the
same plan, and a resumed run redraws the plan it was interrupted in.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from kit.errors import KitError
from kit.train.augment import augment
from kit.train.recipe import Recipe, StageCfg

Box = Sequence[int] | None


class BadImage(KitError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


# ---- the one preprocessing function ------------------------------------------------------------

def load_pixels(path: str | os.PathLike, box: Box, input_size: tuple[int, int], channels: int,
                use_boxes: bool, box_margin: float) -> np.ndarray:
    """Decode, crop, colour-convert and resize: (H, W, 3) uint8. Raises BadImage."""
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"{path}: cannot read image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if use_boxes and box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        dx, dy = box_margin * (x1 - x0), box_margin * (y1 - y0)
        left, top = max(0, int(round(x0 - dx))), max(0, int(round(y0 - dy)))
        right, bottom = min(image.width, int(round(x1 + dx))), min(image.height, int(round(y1 + dy)))
        if right > left and bottom > top:  # a box outside the photo: keep the whole photo
            image = image.crop((left, top, right, bottom))
    h, w = input_size
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def normalise(pixels: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) uint8 pixels, or a (3, H, W) float tensor in 0..1 -> (3, H, W) float32, normalised."""
    if isinstance(pixels, torch.Tensor):
        x = pixels.numpy().astype(np.float32, copy=True)
    else:
        x = pixels.transpose(2, 0, 1).astype(np.float32) / 255.0
    x -= np.asarray(mean, np.float32)[:, None, None]
    x /= np.asarray(std, np.float32)[:, None, None]
    return x


def load_image(path: str | os.PathLike, box: Box, info) -> np.ndarray:
    """The member's preprocessing: (3, H, W) float32, normalised. `info` is a MemberInfo."""
    pixels = load_pixels(path, box, tuple(info.input_size), info.channels, info.use_boxes, info.box_margin)
    return normalise(pixels, info.mean, info.std)


# ---- tables: which images train, which validate ------------------------------------------------

@dataclass
class ImageTable:
    """Images with their box and target: a class index, or -1 for the unknown label."""

    paths: list[Path]
    boxes: list[Box]
    targets: np.ndarray  # (N,) int64
    names: list[str] = field(default_factory=list)  # the label file's image names (for messages)
    labels: list[str] = field(default_factory=list)  # the label strings

    def __len__(self) -> int:
        return len(self.paths)


def _table(frame: pd.DataFrame, directory: Path, boxes: dict, classes: dict[str, int]) -> ImageTable:
    images, labels = frame["image"].tolist(), frame["label"].tolist()
    return ImageTable(
        paths=[directory / n for n in images], boxes=[boxes.get(n) for n in images],
        targets=np.array([classes.get(l, -1) for l in labels], dtype=np.int64), names=images, labels=labels,
    )


def build_tables(recipe: Recipe, comp, data_dir: Path) -> tuple[ImageTable, ImageTable, list[str]]:
    """(train table, validation table, classes) for the recipe's fold and pseudo-labels."""
    from kit.data.folds import read_folds, split

    if recipe.fold == -1 and not (data_dir / "folds.csv").is_file():
        train_rows, val_rows = comp.train[["image", "label"]], comp.train[["image", "label"]].iloc[:0]
    else:
        folds_csv = data_dir / "folds.csv"
        if not folds_csv.is_file():
            raise KitError(f"{folds_csv}: not found; run `python scripts/prepare.py {data_dir}` first "
                           f"(or set fold: -1 to train on everything)")
        train_rows, val_rows = split(read_folds(folds_csv, comp.train), recipe.fold)
    classes = sorted(set(train_rows["label"]) - {comp.unknown})
    if not classes:
        raise KitError(f"{data_dir}: no known identity left to train on in fold {recipe.fold}")
    index = {c: i for i, c in enumerate(classes)}
    boxes = {} if comp.boxes is None else {n: tuple(int(v) for v in row) for n, row in
                                         zip(comp.boxes.index, comp.boxes[["x0", "y0", "x1", "y1"]].to_numpy())}
    train = _table(train_rows, comp.train_dir, boxes, index)
    if recipe.extra_train:
        extra = _read_extra(Path(recipe.extra_train), comp, set(classes))
        more = _table(extra, comp.test_dir, boxes, index)
        train = ImageTable(train.paths + more.paths, train.boxes + more.boxes,
                           np.concatenate([train.targets, more.targets]), train.names + more.names,
                           train.labels + more.labels)
    val = _table(val_rows, comp.train_dir, boxes, index)
    return train, val, classes


def _read_extra(path: Path, comp, classes: set[str]) -> pd.DataFrame:
    """extra_train: a pseudo-label CSV `Image,Id` of test images; ids must be trained classes."""
    from kit.io import read_csv

    frame = read_csv(path, ("Image", "Id"), "extra_train pseudo-labels")
    frame = pd.DataFrame({"image": frame["Image"], "label": frame["Id"].str.strip()})
    test = set(comp.test_images)
    stray = [n for n in frame["image"] if n not in test]
    if stray:
        raise KitError(f"{path}: image {stray[0]!r} is not a test image of {comp.root} ({len(stray)} such rows)")
    unknown = [l for l in frame["label"] if l not in classes and l != comp.unknown]
    if unknown:
        raise KitError(f"{path}: label {unknown[0]!r} is not an identity of the training rows ({len(unknown)} such rows)")
    if frame["image"].duplicated().any():
        raise KitError(f"{path}: image {frame['image'][frame['image'].duplicated()].iloc[0]!r} is listed twice")
    return frame


# ---- epoch plans ---------------------------------------------------------------------------------

@dataclass
class EpochPlan:
    rows: np.ndarray  # (n,) int: table rows, in training order
    flips: np.ndarray  # (n,) bool: mirror the image (a twin target with flip: twin)
    seeds: np.ndarray  # (n,) int64: each sample's augmentation seed

    def __len__(self) -> int:
        return len(self.rows)


def make_plan(table: ImageTable, recipe: Recipe, stage: StageCfg, epoch_seed: Sequence[int]) -> EpochPlan:
    """Rows of one epoch: the stage's identities, oversampled, shuffled (in same-id pairs for a triplet
    loss), cut to whole global batches; deterministic in `epoch_seed`."""
    rng = np.random.default_rng(list(epoch_seed))
    targets = table.targets
    known = np.flatnonzero(targets >= 0)
    counts = np.bincount(targets[known], minlength=int(targets.max()) + 1 if len(known) else 0)
    rows_by_id = pd.Series(known).groupby(targets[known]).apply(list).to_dict() if len(known) else {}
    chosen: list[int] = []
    for label in sorted(rows_by_id):
        rows = rows_by_id[label]
        if counts[label] < stage.min_images:
            continue
        chosen.extend(rows)
        short = recipe.sampling.min_per_id - len(rows)
        if short > 0:
            chosen.extend(rng.choice(rows, short, replace=True).tolist())
    unknown_rows = np.flatnonzero(targets < 0)
    if recipe.train_unknown:
        chosen.extend(unknown_rows.tolist())
    order = rng.permutation(np.array(chosen, dtype=np.int64))
    if recipe.use_pairs:
        anchors = order[: (len(order) + 1) // 2]
        partners = np.empty_like(anchors)
        for i, a in enumerate(anchors):
            t = targets[a]
            pool = rows_by_id[t] if t >= 0 else unknown_rows
            j = int(rng.integers(len(pool)))
            if pool[j] == a and len(pool) > 1:
                j = (j + 1) % len(pool)
            partners[i] = pool[j]  # a lone image pairs with its own (differently augmented) copy
        order = np.stack([anchors, partners], 1).reshape(-1)
        flips = np.repeat(rng.random(len(anchors)) < 0.5, 2)
    else:
        flips = rng.random(len(order)) < 0.5
    if recipe.augment.flip == "none":
        flips[:] = False
    seeds = rng.integers(0, 2**62, len(order))
    n = len(order) // recipe.sampling.batch_size * recipe.sampling.batch_size
    if n == 0:
        raise KitError(f"stage {stage.name or ''} has {len(order)} training images, fewer than one batch "
                       f"({recipe.sampling.batch_size}); lower sampling.batch_size or stage min_images")
    return EpochPlan(order[:n], flips[:n], seeds[:n])


def rank_batches(n: int, batch_size: int, rank: int, world: int, accumulate: int) -> list[list[int]]:
    """Micro-batches (plan positions) of one rank: its 1/world share of every global batch, cut in
    `accumulate` parts. The same positions go to a single process with accumulate x world parts."""
    shard, micro = batch_size // world, batch_size // world // accumulate
    out = []
    for start in range(0, n, batch_size):
        lo = start + rank * shard
        out.extend(list(range(lo + i * micro, lo + (i + 1) * micro)) for i in range(accumulate))
    return out


# ---- datasets ----------------------------------------------------------------------------------

class PixelSource:
    """Decoded, resized pixels of a table's rows, from disk or from an in-memory cache."""

    def __init__(self, table: ImageTable, info, cache: bool = False, progress: bool = False):
        self.table, self.info = table, info
        self.cache: np.ndarray | None = None
        self.bad: np.ndarray | None = None
        if cache and len(table):
            from tqdm import tqdm

            h, w = info.input_size
            self.cache = np.zeros((len(table), h, w, 3), np.uint8)
            self.bad = np.zeros(len(table), bool)
            for i in tqdm(range(len(table)), desc="caching images", unit="img", disable=not progress, leave=False):
                try:
                    self.cache[i] = self._read(i)
                except BadImage as e:
                    self.bad[i] = True
                    warnings.warn(f"skipping a bad image: {e}", stacklevel=2)

    def _read(self, i: int) -> np.ndarray:
        info = self.info
        return load_pixels(self.table.paths[i], self.table.boxes[i], tuple(info.input_size), info.channels,
                           info.use_boxes, info.box_margin)

    def __call__(self, i: int) -> np.ndarray:
        if self.cache is not None:
            if self.bad[i]:
                raise BadImage(f"{self.table.paths[i]}: cannot read image")
            return self.cache[i]
        return self._read(i)


class TrainSet(torch.utils.data.Dataset):
    """Plan position -> (image (3, H, W), target, ok, name); a bad image gives ok=False and zeros."""

    def __init__(self, source: PixelSource, plan: EpochPlan, recipe: Recipe, num_classes: int):
        self.source, self.plan, self.recipe, self.num_classes = source, plan, recipe, num_classes

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, pos: int):
        row = int(self.plan.rows[pos])
        info = self.source.info
        target = int(self.source.table.targets[row])
        flip = bool(self.plan.flips[pos])
        if flip and self.recipe.flip_twins and target >= 0:
            target += self.num_classes
        try:
            pixels = self.source(row)
        except BadImage:
            h, w = info.input_size
            return torch.zeros(3, h, w), target, False, str(self.source.table.paths[row])
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float() / 255.0
        if flip:
            image = image.flip(-1)
        image = augment(image, self.recipe.augment, np.random.default_rng(int(self.plan.seeds[pos])))
        return torch.from_numpy(normalise(image, info.mean, info.std)), target, True, str(self.source.table.paths[row])


class EvalSet(torch.utils.data.Dataset):
    """Row -> (image, target, ok, name): `load_image` exactly, no augmentation."""

    def __init__(self, source: PixelSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source.table)

    def __getitem__(self, row: int):
        info = self.source.info
        target = int(self.source.table.targets[row])
        try:
            x = normalise(self.source(row), info.mean, info.std)
        except BadImage:
            h, w = info.input_size
            return torch.zeros(3, h, w), target, False, str(self.source.table.paths[row])
        return torch.from_numpy(x), target, True, str(self.source.table.paths[row])
