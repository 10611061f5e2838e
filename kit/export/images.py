"""Feeding the network: images decoded and resized on a thread pool while the network runs.

PIL's decode and resize and numpy's arithmetic release the GIL, and so does onnxruntime's
`run`, so plain threads overlap the two: while batch i runs, batches i+1 .. i+depth are being
decoded. At most `batch * (depth + 1)` images are in memory at once.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from kit.io import cpu_count


class ImageSource:
    """`source(name) -> float32 C x H x W`: a competition image preprocessed for one member.

    Wraps the member's one preprocessing function (`kit.train.data.load_image(path, box, info)`),
    finding the file in train/ or test/ and the fluke box when the competition has one.
    """

    def __init__(self, competition, info, load_image: Callable):
        self.competition = competition
        self.info = info
        self.load_image = load_image
        self.test = set(competition.test_images)
        boxes = competition.boxes
        self.boxes: dict[str, tuple[int, int, int, int]] = {}
        if boxes is not None:
            self.boxes = {n: (int(a), int(b), int(c), int(d)) for n, a, b, c, d in
                          zip(boxes.index, boxes["x0"], boxes["y0"], boxes["x1"], boxes["y1"])}

    def path(self, name: str):
        return self.competition.image_path(name, "test" if name in self.test else "train")

    def __call__(self, name: str) -> np.ndarray:
        return self.load_image(self.path(name), self.boxes.get(name), self.info)


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
