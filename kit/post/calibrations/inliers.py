"""A matcher's inlier counts as probabilities: sigmoid(scale * log1p(inliers) + shift), fitted on validation.

Inlier counts run from 0 to hundreds and mean nothing to a blend of probabilities until calibrated
(WildFusion's point: calibrate each similarity, then fuse). Left unset, `scale` and `shift` are fitted
on the validation images by logistic regression of "this column is the image's animal" on
log1p(inliers), over each image's true column and its MATCHED best-scoring others (the ones a blend
ranks), like the automatic weights: once per evaluation, then used on test
(kit.post.pipeline.fit_calibrations). The fit is monotone (scale >= 0): more inliers never mean less
likely. Given numbers are used as they are, and a tuner may search them (`tune.free`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.config import Tuning, param
from kit.errors import KitError
from kit.post.plugins import CALIBRATIONS, Calibration

MATCHED = 10  # wrong columns per image in the fit: the highest-scoring ones, which decide rankings
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
                           "(kit.post.pipeline.fit_calibrations); give both to use them as they are")
        z = params.scale * np.log1p(np.maximum(scores, 0.0)) + params.shift
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    @staticmethod
    def fit(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """{scale, shift} from scores (N, C) and each row's true column (-1: not among them)."""
        n, c = scores.shape
        if n == 0 or c == 0:
            raise KitError("calibration inliers: no validation images to fit on")
        k = min(MATCHED, c)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < c else np.tile(np.arange(c), (n, 1))
        rows = np.repeat(np.arange(n), k)
        cols = top.ravel()
        y = (cols == np.repeat(truth, k)).astype(np.float64)
        has = truth >= 0  # the true column, where the top ones missed it
        missed = has & ~(top == truth[:, None]).any(axis=1)
        rows = np.concatenate([rows, np.flatnonzero(missed)])
        cols = np.concatenate([cols, truth[missed]])
        y = np.concatenate([y, np.ones(int(missed.sum()))])
        x = np.log1p(np.maximum(scores[rows, cols].astype(np.float64), 0.0))
        return _logistic(x, y)

    @staticmethod
    def yields_probability(kind: str) -> bool:
        return True


def _logistic(x: np.ndarray, y: np.ndarray, steps: int = 50) -> dict[str, float]:
    """Newton's method for P(y) = sigmoid(a x + b), a >= 0, with a small ridge on a."""
    if y.min() == y.max():  # one class only: the base rate, flat
        rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        return {"scale": 0.0, "shift": float(np.log(rate / (1 - rate)))}
    a, b = 0.0, float(np.log(y.mean() / (1 - y.mean())))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = np.maximum(p * (1 - p), 1e-9)
        g = np.array([np.dot(p - y, x) + L2 * a, np.sum(p - y)])
        h = np.array([[np.dot(w, x * x) + L2, np.dot(w, x)], [np.dot(w, x), np.sum(w)]])
        try:
            da, db = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        a, b = max(a - da, 0.0), b - db
        if abs(da) + abs(db) < 1e-9:
            break
    return {"scale": float(a), "shift": float(b)}
