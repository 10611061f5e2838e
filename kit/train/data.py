"""Images in, tensors out: the one preprocessing function, the training tables, epoch plans and
the feeder that turns a plan into augmented batches on the model's device.

`load_image(path, box, info)` is the member's preprocessing for one image: `kit.data.crops.crop`
(the box grown by `box_margin`, or the photo, resized to `input_size` with room around it), its
centre, normalised: (3, H, W) float32. Training, validation and export read the same pixels from
the competition's decoded-crop cache instead of decoding again.

An epoch is a *plan*: which rows, flipped or not, with which augmentation seed, in which order,
drawn from (seed, epoch) alone. Ranks of a DDP run take their shard of every global batch of the
same plan, and a resumed run redraws the plan it was interrupted in.
"""
from __future__ import annotations

import os
import queue
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from kit.data.crops import BadImage, CropCache, CropSpec, centre, crop
from kit.data.folds import read_folds, split
from kit.errors import KitError
from kit.io import read_csv
from kit.train.augment import Params, augment_batch, draw, norm_tensors, params, plain_batch
from kit.train.recipe import Recipe, StageCfg

__all__ = ["BadImage", "load_image", "normalise", "Feeder"]

Box = Sequence[int] | None


# ---- the one preprocessing function ------------------------------------------------------------

def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Network views (..., H, W, C) uint8, C = 1 or 3 -> (..., 3, H, W) float32, normalised."""
    x = np.moveaxis(pixels, -1, -3).astype(np.float32) / 255.0
    if x.shape[-3] == 1:
        x = np.repeat(x, 3, axis=-3)
    x -= np.asarray(mean, np.float32)[:, None, None]
    x /= np.asarray(std, np.float32)[:, None, None]
    return x


def load_image(path: str | os.PathLike, box: Box, info) -> np.ndarray:
    """The member's preprocessing: (3, H, W) float32, normalised. `info` is a MemberInfo."""
    spec = CropSpec.of(info)
    return normalise(centre(crop(path, box, spec), spec), info.mean, info.std)


# ---- tables: which images train, which validate ------------------------------------------------

@dataclass
class ImageTable:
    """Images with their box and target: a class index, or -1 for the unknown label."""

    paths: list[Path]
    keys: list[str]  # rows of the crop cache: each image's file relative to the competition (comp.relative_path)
    boxes: list[Box]
    targets: np.ndarray  # (N,) int64
    names: list[str] = field(default_factory=list)  # the label file's image names (for messages)
    labels: list[str] = field(default_factory=list)  # the label strings
    species: np.ndarray | None = None  # (N,) int64 into species_names, -1 unknown; None: no species column
    species_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def _table(frame: pd.DataFrame, comp, split: str, boxes: dict, classes: dict[str, int],
           species: list[str] | None = None) -> ImageTable:
    """The rows of `frame` (image, label): `split` "train" or "test" says where their files are."""
    images, labels = frame["image"].tolist(), frame["label"].tolist()
    table = ImageTable(
        paths=[comp.image_path(n, split) for n in images], keys=[comp.relative_path(n, split) for n in images],
        boxes=[boxes.get(n) for n in images],
        targets=np.array([classes.get(l, -1) for l in labels], dtype=np.int64), names=images, labels=labels,
    )
    if species is not None:
        index = {name: i for i, name in enumerate(species)}
        table.species = np.array([index.get(v, -1) for v in frame["species"]], dtype=np.int64)
        table.species_names = species
    return table


def _with_species(frame: pd.DataFrame, comp) -> pd.DataFrame:
    """Pseudo-label rows (test images) take their identity's species from train.csv; unknown: none."""
    known = comp.train[(comp.train["label"] != comp.unknown) & comp.train["species"].notna()]
    of_id = known.groupby("label")["species"].agg(lambda v: v.mode().iloc[0])
    return frame.assign(species=frame["label"].map(of_id))


def build_tables(recipe: Recipe, comp, data_dir: Path) -> tuple[ImageTable, ImageTable, list[str]]:
    """(train table, validation table, classes) for the recipe's fold and pseudo-labels."""
    if recipe.fold == -1 and not (data_dir / "folds.csv").is_file():
        train_rows, val_rows = comp.train[["image", "label"]], comp.train[["image", "label"]].iloc[:0]
    else:
        folds_csv = data_dir / "folds.csv"
        if not folds_csv.is_file():
            raise KitError(f"{folds_csv}: not found; run `python scripts/prepare.py {data_dir}` first "
                           f"(or set fold: -1 to train on everything)")
        train_rows, val_rows = split(read_folds(folds_csv, comp.train), recipe.fold, folds_csv)
    species = None
    if "species" in comp.train and recipe.head.species_weight > 0:  # every image's species, for the species head
        species = sorted(comp.train["species"].dropna().unique())
        of_image = dict(zip(comp.train["image"], comp.train["species"]))
        train_rows, val_rows = (rows.assign(species=rows["image"].map(of_image)) for rows in (train_rows, val_rows))
    classes = sorted(set(train_rows["label"]) - {comp.unknown})
    if not classes:
        raise KitError(f"{data_dir}: no known identity left to train on in fold {recipe.fold}")
    index = {c: i for i, c in enumerate(classes)}
    boxes = {} if comp.boxes is None else {n: tuple(int(v) for v in row) for n, row in
                                         zip(comp.boxes.index, comp.boxes[["x0", "y0", "x1", "y1"]].to_numpy())}
    train = _table(train_rows, comp, "train", boxes, index, species)
    if recipe.extra_train:
        extra = read_extra(Path(recipe.extra_train), comp, set(classes))
        more = _table(extra if species is None else _with_species(extra, comp), comp, "test", boxes, index, species)
        train = ImageTable(train.paths + more.paths, train.keys + more.keys, train.boxes + more.boxes,
                           np.concatenate([train.targets, more.targets]), train.names + more.names,
                           train.labels + more.labels,
                           None if species is None else np.concatenate([train.species, more.species]), train.species_names)
    val = _table(val_rows, comp, "train", boxes, index, species)
    return train, val, classes


def read_extra(path: Path, comp, classes: set[str]) -> pd.DataFrame:
    """extra_train: a pseudo-label CSV `Image,Id` of test images; ids must be trained classes."""
    frame = read_csv(path, ("Image", "Id"), "extra_train pseudo-labels")
    frame = pd.DataFrame({"image": frame["Image"], "label": frame["Id"].str.strip()})
    test = set(comp.test_images)
    stray = [n for n in frame["image"] if n not in test]
    if stray:
        raise KitError(f"{path}: image {stray[0]!r} is not a test image of {comp.root} ({len(stray)} such rows)")
    known = set(comp.train["label"])
    unknown = [l for l in frame["label"] if l not in known and l != comp.unknown]
    if unknown:
        raise KitError(f"{path}: label {unknown[0]!r} is not an identity of the training rows ({len(unknown)} such rows)")
    if frame["image"].duplicated().any():
        raise KitError(f"{path}: image {frame['image'][frame['image'].duplicated()].iloc[0]!r} is listed twice")
    # an identity this fold holds out: left out, or its validation images would meet it in training
    held = ~frame["label"].isin(classes) & (frame["label"] != comp.unknown)
    if held.any():
        warnings.warn(f"{path}: {int(held.sum())} pseudo-label(s) of identities the fold holds out left out", stacklevel=2)
    return frame[~held].reset_index(drop=True)


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


# ---- feeding the loop ----------------------------------------------------------------------------

def _ahead(items: Iterator, depth: int = 2) -> Iterator:
    """`items`, produced on a background thread up to `depth` ahead of the consumer."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False  # the consumer stopped

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # raised again in the consumer
            put(e)

    thread = threading.Thread(target=produce, daemon=True, name="feeder")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, H, W) float32 on the device, normalised (augmented when training)
    target: torch.Tensor  # (B,) int64 on the device: class, class + K for a flipped twin, -1 unknown
    weight: torch.Tensor  # (B,) float32 on the device: 0 for an image that could not be decoded
    ok: np.ndarray  # (B,) bool, on the host: the same, for messages
    names: list[str]  # the images' paths, for messages
    species: torch.Tensor | None = None  # (B,) int64 on the device: species index, -1 none (training)


class Feeder:
    """A table's images from the crop cache to the model's device, batch by batch.

    On a background thread, one batch ahead: the batch's cache rows gathered (memory-mapped uint8),
    its augmentation drawn and, on a GPU, the pixels pinned and copied on a side stream, so the copy
    overlaps the previous step. The augmentation itself runs on the device, as one batch.
    """

    def __init__(self, cache: CropCache, table: ImageTable, info, device: torch.device):
        self.cache, self.table, self.info, self.device = cache, table, info, device
        self.spec = cache.spec
        self.rows = cache.rows(table.keys)
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.mean, self.std = norm_tensors(info.mean, info.std, device)

    def _gather(self, cache_rows: np.ndarray, centred: bool = False) -> torch.Tensor:
        """The rows' pixels as a uint8 tensor: on a GPU straight into pinned memory (one host copy)."""
        source = self.cache.pixels
        if self._stream is None:
            pixels = source[cache_rows]
            return torch.from_numpy(np.ascontiguousarray(centre(pixels, self.spec) if centred else pixels))
        if centred:
            return torch.from_numpy(np.ascontiguousarray(centre(source[cache_rows], self.spec))).pin_memory()
        out = torch.empty((len(cache_rows), *source.shape[1:]), dtype=torch.uint8, pin_memory=True)
        np.take(source, cache_rows, axis=0, out=out.numpy(), mode="clip")  # clip: no hidden buffer
        return out

    def _thread_device(self) -> None:
        """In the feeder thread: CUDA's current device is per thread (DDP's local rank is set in the
        main thread only); without this every stream switch would touch GPU 0."""
        if self._stream is not None:
            torch.cuda.set_device(self.device)

    def _send(self, *items):
        """Tensors (and Params) on their way to the device, with the event that says they arrived;
        background thread."""
        if self._stream is None:
            return items, None
        with torch.cuda.stream(self._stream):
            moved = tuple(t.to(self.device, pin=True) if isinstance(t, Params)
                          else (t if t.is_pinned() else t.pin_memory()).to(self.device, non_blocking=True)
                          for t in items)
            arrived = torch.cuda.Event()
            arrived.record(self._stream)
        return moved, arrived

    def _arrived(self, sent) -> tuple:
        """The sent items, usable on the current stream; main thread."""
        items, arrived = sent
        if arrived is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(arrived)
            for t in items:  # their memory is not reused before this stream is done with them
                for tensor in (t.tensors() if isinstance(t, Params) else [t]):
                    tensor.record_stream(stream)
        return items

    def train(self, plan: EpochPlan, batches: list[list[int]], recipe: Recipe, num_classes: int) -> Iterator[Batch]:
        """Augmented micro-batches of plan positions, in order."""
        def gather():
            self._thread_device()
            for positions in batches:
                rows = plan.rows[positions]
                cache_rows = self.rows[rows]
                flips = plan.flips[positions]
                target = self.table.targets[rows].copy()
                if recipe.flip_twins:
                    target[flips & (target >= 0)] += num_classes
                ok = ~self.cache.bad[cache_rows]
                species = () if self.table.species is None else (torch.from_numpy(self.table.species[rows]),)
                sent = self._send(self._gather(cache_rows),
                                  params(draw(recipe.augment, plan.seeds[positions], flips, self.spec.size), self.spec),
                                  torch.from_numpy(target), torch.from_numpy(ok.astype(np.float32)), *species)
                yield sent, ok, rows

        for sent, ok, rows in _ahead(gather()):
            pixels, p, target, weight, *species = self._arrived(sent)
            x = augment_batch(pixels, p, self.spec, self.mean, self.std)
            yield Batch(x, target, weight, ok, [str(self.table.paths[r]) for r in rows], *species)

    def plain(self, batch_size: int) -> Iterator[Batch]:
        """The table in order, unaugmented (validation)."""
        def gather():
            self._thread_device()
            for start in range(0, len(self.rows), batch_size):
                cache_rows = self.rows[start:start + batch_size]
                ok = ~self.cache.bad[cache_rows]
                target = self.table.targets[start:start + batch_size]
                yield self._send(self._gather(cache_rows, centred=True), torch.from_numpy(target),
                                 torch.from_numpy(ok.astype(np.float32))), ok, start

        for sent, ok, start in _ahead(gather()):
            pixels, target, weight = self._arrived(sent)
            yield Batch(plain_batch(pixels, self.mean, self.std), target, weight, ok,
                        [str(p) for p in self.table.paths[start:start + len(ok)]])
