"""A matcher's inlier counts as probabilities: sigmoid(scale * log1p(inliers) + shift), fitted on validation.

Inlier counts run from 0 to hundreds and mean nothing to a blend of probabilities until calibrated
(WildFusion's point: calibrate each similarity, then fuse). Left unset, `scale` and `shift` are fitted
on the validation images by logistic regression of "this column is the image's animal" on
log1p(inliers) over every (image, column) pair, like the automatic weights: once per evaluation,
then used on test
(kit.post.fits.fit_calibrations). The fit is monotone (scale >= 0): more inliers never mean less
likely. Given numbers are used as they are, and a tuner may search them (`tune.free`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.config import Tuning, param
from kit.errors import KitError
from kit.post.plugins import CALIBRATIONS, Calibration

L2 = 1e-3  # a whisper of ridge: a separable validation set still gets finite numbers


@CALIBRATIONS.register
class Inliers(Calibration):
    name = "inliers"
    help = "sigmoid(scale * log1p(x) + shift) of inlier counts, both fitted on validation unless given"
    nonnegative = True

    @dataclass(frozen=True)
    class Params:
        scale: float | None = param(None, tune=Tuning(0.1, 10.0, log=True), help="the slope on log1p(inliers); null: fitted")
        shift: float | None = param(None, tune=Tuning(-20.0, 5.0), help="the offset; null: fitted")

    @staticmethod
    def needs_fit(params) -> bool:
        return params.scale is None or params.shift is None

    @staticmethod
    def transform(scores: np.ndarray, params) -> np.ndarray:
        if Inliers.needs_fit(params):
            raise KitError("calibration inliers: scale and shift are fitted on validation before the blend runs "
                           "(kit.post.fits.fit_calibrations); give both to use them as they are")
        z = params.scale * np.log1p(np.maximum(scores, 0.0)) + params.shift
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    @staticmethod
    def fit(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """{scale, shift} from scores (N, C) and each row's true column (-1: not among them): a
        logistic fit of P(column is the animal | its inliers) over every (image, column) pair, the
        pairs pooled by inlier count (counts are whole numbers: the fit is exact and instant at any size)."""
        n, c = scores.shape
        if n == 0 or c == 0:
            raise KitError("calibration inliers: no validation images to fit on")
        counts = np.rint(np.maximum(scores, 0.0)).astype(np.int64)
        total = np.bincount(counts.ravel())
        has = np.flatnonzero(truth >= 0)
        right = np.bincount(counts[has, truth[has]], minlength=len(total))
        seen = np.flatnonzero(total)
        return _logistic(np.log1p(seen.astype(np.float64)), right[seen].astype(np.float64), total[seen].astype(np.float64))

    @staticmethod
    def yields_probability(kind: str) -> bool:
        return True


def _logistic(x: np.ndarray, k: np.ndarray, n: np.ndarray, steps: int = 100) -> dict[str, float]:
    """Maximum likelihood of P = sigmoid(a x + b) with `k` of `n` trials positive at each x, a >= 0
    and a small ridge on a: Newton steps, halved until the likelihood improves."""
    rate = float(np.clip(k.sum() / n.sum(), 1e-9, 1 - 1e-9))
    if k.sum() == 0 or k.sum() == n.sum():  # one class only: the base rate, flat
        return {"scale": 0.0, "shift": float(np.log(rate / (1 - rate)))}

    def loss(a: float, b: float) -> float:  # negative log-likelihood
        z = a * x + b
        return float(np.sum(n * np.logaddexp(0.0, z) - k * z) + 0.5 * L2 * a * a)

    a, b = 0.0, float(np.log(rate / (1 - rate)))
    current = loss(a, b)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = np.maximum(n * p * (1 - p), 1e-12)
        r = n * p - k
        g = np.array([np.dot(r, x) + L2 * a, r.sum()])
        h = np.array([[np.dot(w, x * x) + L2, np.dot(w, x)], [np.dot(w, x), w.sum()]])
        try:
            da, db = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        step = 1.0
        while step > 1e-6:
            na, nb = max(a - step * da, 0.0), b - step * db
            new = loss(na, nb)
            if new <= current:
                break
            step /= 2
        else:
            break
        moved = abs(na - a) + abs(nb - b)
        a, b, current = na, nb, new
        if moved < 1e-10:
            break
    return {"scale": float(a), "shift": float(b)}
