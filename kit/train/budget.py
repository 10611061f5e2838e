"""Training by time: a stage given `minutes` instead of `epochs` (`stages: [{minutes: 4, lr: ...}]`).

The loop measures its own steady speed on the real data path and sets the stage's length from it:

1. Warm-up: the stage's first WARMUP_STEPS optimizer steps are not timed (memory is allocated,
   oneDNN or cuDNN pick their kernels, the caches fill: on 2 CPU cores they ran 2-10x slower).
2. Probe: the next PROBE_STEPS steps are timed one by one and their median is the steady step
   time (a load spike on a shared machine moves a median little, a mean much). The plan: as many
   epochs as fit the time left, an epoch being its steps plus validation (a forward pass costs
   about a third of a training step per image, until one is measured); at least 1, at most the
   stage's `epochs` when it gives both. A first epoch shorter than warm-up and probe is planned
   from the median of its steps past warm-up, with its validation as measured.
3. From the second epoch on, the plan is held against the epochs' measured wall time (training,
   validation, checkpoint; the first is left out: its steps carry the warm-up, its validation
   one-time costs such as compiling the scoring kernels in a fresh checkout, 40% of an epoch on
   2 cores): when the projected end is off by more than REPLAN_SHARE of the budget,
   the count is set again and the cosine schedule stretches or shortens from there. When time is
   up, the stage ends at that epoch.

The clock starts at the stage's first step: imports, the competition and the crop cache come
before it. The loop saves the planned count in each checkpoint; `--resume` finishes that plan
instead of starting a new clock. A run planned by time is only as repeatable as the machine's
speed: `epochs: N` with the N it chose trains the same again.
"""
from __future__ import annotations

import math
import statistics
import time

clock = time.perf_counter  # what the budget reads; the tests put a fake clock here

WARMUP_STEPS = 3
PROBE_STEPS = 20
REPLAN_SHARE = 0.1
FORWARD_SHARE = 1 / 3  # inference per image, as a share of a training step's time per image


class TimeBudget:
    """One stage's time budget. The loop calls `epoch_start()` before each epoch's steps,
    `step()` after each optimizer step and `epoch_end(done)` once an epoch is validated and saved;
    `epochs` is the plan (None until the probe has set it)."""

    def __init__(self, seconds: float, steps_per_epoch: int, batch_size: int, val_images: int,
                 max_epochs: int | None = None):
        self.seconds = float(seconds)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.batch_size, self.val_images, self.max_epochs = batch_size, val_images, max_epochs
        self.epochs: int | None = None
        self.step_seconds: float | None = None  # the probe's steady step time
        self.start: float | None = None
        self._last = self._epoch_start = 0.0
        self._times: list[float] = []  # the stage's step times, in order
        self._epoch_times: list[float] = []  # whole epochs: steps, validation, checkpoint
        self._steps_this_epoch = 0

    @property
    def elapsed(self) -> float:
        return 0.0 if self.start is None else clock() - self.start

    def epoch_start(self) -> None:
        now = clock()
        if self.start is None:
            self.start = now
        self._epoch_start = self._last = now
        self._steps_this_epoch = 0

    def step(self) -> str | None:
        """Record one step (every step: an epoch's steps and the rest of it are told apart); returns
        the plan's log line when this step completes the probe."""
        now = clock()
        self._times.append(now - self._last)
        self._last = now
        self._steps_this_epoch += 1
        if self.epochs is None and len(self._times) == WARMUP_STEPS + PROBE_STEPS:
            self.step_seconds = statistics.median(self._times[WARMUP_STEPS:])
            val = self.val_images * self.step_seconds / self.batch_size * FORWARD_SHARE
            done = self._steps_this_epoch / self.steps_per_epoch + len(self._epoch_times)
            self.epochs = self._fit(done, self.steps_per_epoch * self.step_seconds + val)
            return (f"{self.seconds / 60:g} minutes: {self.batch_size / self.step_seconds:.0f} images/s steady "
                    f"(median of steps {WARMUP_STEPS + 1}-{WARMUP_STEPS + PROBE_STEPS}, the first {WARMUP_STEPS} "
                    f"not timed), an epoch ~{self.steps_per_epoch * self.step_seconds + val:.0f} s with validation: "
                    f"{self._says()}")
        return None

    def epoch_end(self, done: int) -> str | None:
        """Record a finished epoch (`done` epochs of the stage so far); returns a log line when the
        plan is set or changed. The stage ends when `done >= epochs`."""
        self._epoch_times.append(clock() - self._epoch_start)
        if self.epochs is None:  # an epoch shorter than warm-up + probe: the steps it had, past warm-up
            timed = self._times[WARMUP_STEPS:] or self._times
            self.step_seconds = statistics.median(timed)
            besides = self._epoch_times[-1] - sum(self._times[-self._steps_this_epoch:])  # validation, checkpoint
            per_epoch = self.steps_per_epoch * self.step_seconds + max(besides, 0.0)
            self.epochs = max(done, self._fit(done, per_epoch))
            return (f"{self.seconds / 60:g} minutes: {self.batch_size / self.step_seconds:.0f} images/s steady (median "
                    f"of the first epoch's {len(timed)} step(s) past warm-up, too few for the {PROBE_STEPS}-step probe), "
                    f"an epoch ~{per_epoch:.1f} s with validation: {self._says()}")
        if len(self._epoch_times) == 1:  # its steps carry the warm-up and its validation one-time costs
            return None
        per_epoch = statistics.fmean(self._epoch_times[1:])
        projected = self.elapsed + (self.epochs - done) * per_epoch
        if abs(projected - self.seconds) <= REPLAN_SHARE * self.seconds:
            return None
        before, self.epochs = self.epochs, max(done, self._fit(done, per_epoch))
        if self.epochs == before:
            return None
        if self.epochs == done:
            return (f"time is up: {self.elapsed:.0f} s of {self.seconds:.0f} after {done} epoch(s) of {per_epoch:.1f} s "
                    f"(planned {before})")
        return (f"{per_epoch:.1f} s an epoch measured: {self.epochs} epochs fit the {self.seconds / 60:g} minutes, "
                f"not {before} (the schedule {'shortened' if self.epochs < before else 'stretched'})")

    def _fit(self, done: float, per_epoch: float) -> int:
        """The stage's epoch count that ends nearest the budget, `done` of them behind us."""
        left = self.seconds - self.elapsed
        epochs = max(1, math.floor(done + max(left, 0.0) / max(per_epoch, 1e-9) + 0.5))
        return min(epochs, self.max_epochs) if self.max_epochs else epochs

    def _says(self) -> str:
        capped = self.max_epochs is not None and self.epochs == self.max_epochs
        return f"{self.epochs} epoch(s) fit" + (f" (capped by epochs: {self.max_epochs})" if capped else "")
