"""Feeding the network: images read (or decoded) and normalised on a thread pool while the network runs.

PIL's decode and resize and numpy's arithmetic release the GIL, and so does onnxruntime's
`run`, so plain threads overlap the two: while batch i runs, batches i+1 .. i+depth are being
decoded. At most `batch * (depth + 1)` images are in memory at once.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from kit.data.crops import CropSpec, centre, image_keys
from kit.io import cpu_count


class ImageSource:
    """`source(name) -> float32 (3, H, W)`: a competition image as one member sees it.

    From the competition's crop cache when one is given (what training read: decoded once), else
    decoded here by the same function (`kit.train.data.load_image`: a few parity images need no
    cache). An image the cache could not decode is its blank row (training skipped it; a test image
    still needs a row of scores; `unreadable` names them); without a cache it raises BadImage.
    """

    def __init__(self, competition, info, cache=None):
        self.competition, self.info, self.cache = competition, info, cache
        self.spec = CropSpec.of(info)
        keys, paths, boxes = image_keys(competition)
        names = list(competition.train["image"]) + list(competition.test_images)
        self.where = {n: (k, p, b) for n, k, p, b in zip(names, keys, paths, boxes)}

    def unreadable(self) -> dict[str, str]:
        """name -> why, for the images the crop cache could not decode."""
        if self.cache is None:
            return {}
        return {n: self.cache.reasons[k] for n, (k, _, _) in self.where.items() if k in self.cache.reasons}

    def __call__(self, name: str) -> np.ndarray:
        from kit.train.data import load_image, normalise

        key, path, box = self.where[name]
        if self.cache is None:
            return load_image(path, box, self.info)
        row = int(self.cache.rows([key])[0])
        return normalise(centre(self.cache.pixels[row], self.spec), self.info.mean, self.info.std)


def prefetch_batches(items: Sequence, load: Callable[[object], np.ndarray], batch: int, *,
                     workers: int | None = None, depth: int = 2) -> Iterator[np.ndarray]:
    """Yield `load(item)` stacked into batches of `batch` (the last may be smaller), in order.

    Loading runs on `workers` threads (default: the cores) and stays `depth` batches ahead of
    the consumer. An exception in `load` is raised at the batch that needed it.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    workers = workers or cpu_count()
    ahead = batch * (depth + 1)
    it: Iterable = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()

        def fill() -> None:
            while len(pending) < ahead:
                try:
                    item = next(it)
                except StopIteration:
                    return
                pending.append(pool.submit(load, item))

        fill()
        try:
            while pending:
                n = min(batch, len(pending))
                out = np.stack([pending.popleft().result() for _ in range(n)])
                fill()
                yield np.ascontiguousarray(out, dtype=np.float32)
        finally:
            for f in pending:  # stop work nobody will collect (an error, or the consumer stopped)
                f.cancel()
