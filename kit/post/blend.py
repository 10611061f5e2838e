"""Blend: every member's scores made comparable (calibrated), a weighted mean, then each row's top-k.

One fused kernel (`blend_top_k`) does it row by row: for each image it accumulates the calibrated
members into a row buffer that stays in cache, then keeps the row's k best columns. The N x C
blended matrix is never written unless asked for (`keep=True`), which makes a test-set blend
(7,960 x 5,004 x 3 members) cost about one read of the members' scores.

Calibrations (per scored member, f applied to its scores x, then weighted by w):
- `softmax`: f = softmax(x / T) along the row; the row maxima (they do not depend on T) are found
  by the first call and kept by the caller (p1 = 1 / T);
- `sigmoid`: f = 1 / (1 + exp(-x / T)) (p1 = 1 / T);
- `affine`:  f = 1 / (1 + exp(-(a x + b))), Platt scaling of cosines (p1 = a, p2 = b);
- `none`:    f = x (probabilities as they are, or a precomputed `reciprocal_rank`).
A ranked member (a top-5 CSV, the 2nd place's vote) gives the label at rank r its rank weight
(1, 1/2, ..., 1/5 by default: `RANK_WEIGHTS`, MAP@5's credit for that rank) times the member's
weight. Its vote for the unknown label counts the same way, into a per-image `vote` beside the C
columns: on the blend's scale a CSV's first label weighs what a probability of 1 does, so scored
and ranked members add up on one scale (weights normalised to sum 1).
The top-k is a stable descending sort's first k: a tie goes to the lower column.

The kernel is compiled twice, serial and parallel over images; the parallel one runs only from
`PARALLEL_MIN_ELEMENTS` (rows x columns) up, i.e. on a test-set blend: at validation scale a tuner
calls it thousands of times and OpenMP's thread wake-ups and spinning cost more than they save,
badly so when the cores are shared.

`exp32` is a float32 exp (Cody-Waite reduction, degree-6 polynomial, exponent by bit cast,
relative error < 2e-7) that LLVM vectorises; libm's expf does not vectorise and was 10x slower.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

RANK_WEIGHTS = np.array([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5], dtype=np.float32)  # MAP@5's credit per rank
METHOD_CODES = {"none": 0, "softmax": 1, "sigmoid": 2, "affine": 3}
PARALLEL_MIN_ELEMENTS = 8_000_000  # below this (rows x columns) the serial kernel runs
_BLOCK = 64  # the top-k scan skips blocks of this many columns with nothing above its k-th value
_opts = dict(cache=True, fastmath=True, nogil=True)


@intrinsic
def _int32_as_float32(typingctx, value):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(inline="always", **_opts)
def exp32(v):
    v = min(max(v, np.float32(-87.0)), np.float32(88.0))
    k = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
    r = v - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * r * r + r + np.float32(1.0)
    return y * _int32_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(inline="always", **_opts)
def _row_max(row):
    """max(row) in 16 lanes: a fixed-width select that LLVM vectorises (a plain max loop it does not)."""
    c = row.shape[0]
    lane = np.full(16, -np.inf, np.float32)
    for b in range(c // 16):
        base = b * 16
        for t in range(16):
            v = row[base + t]
            lane[t] = v if v > lane[t] else lane[t]
    m = lane.max()
    for j in range((c // 16) * 16, c):
        m = max(m, row[j])
    return m


@njit(inline="always", **_opts)
def _insert(v, j, k, filled, tv, ti):
    """Put (v, j) into the sorted top-k after every kept value >= v; returns the new fill."""
    if filled == k and not v > tv[k - 1]:
        return filled
    p = filled if filled < k else k - 1
    while p > 0 and tv[p - 1] < v:
        tv[p] = tv[p - 1]
        ti[p] = ti[p - 1]
        p -= 1
    tv[p] = v
    ti[p] = j
    return filled + 1 if filled < k else filled


@njit(inline="always", **_opts)
def _row_top_k(acc, k, tv, ti):
    """The k best of one row into tv/ti (descending; ties: lower column first)."""
    c = acc.shape[0]
    filled = 0
    for b in range(c // _BLOCK):
        base = b * _BLOCK
        if filled == k:
            # most blocks hold nothing above the current k-th value: a vectorised count (a fixed
            # trip count, so LLVM vectorises it) skips them
            kth = tv[k - 1]
            above = 0
            for j in range(_BLOCK):
                if acc[base + j] > kth:
                    above += 1
            if above == 0:
                continue
        for j in range(base, base + _BLOCK):
            filled = _insert(acc[j], j, k, filled, tv, ti)
    for j in range((c // _BLOCK) * _BLOCK, c):
        filled = _insert(acc[j], j, k, filled, tv, ti)


def _blend_top_k(xs, methods, p1, p2, weights, row_max, find_max, rcodes, rweights, k, out):
    n = rcodes.shape[1]
    c = out.shape[1] if out.shape[0] else xs[0].shape[1]
    keep = out.shape[0] > 0
    codes = np.empty((n, k), np.int64)
    values = np.empty((n, k), np.float32)
    vote = np.zeros(n, np.float32)
    for i in prange(n):
        acc = np.zeros(c, np.float32)
        buf = np.empty(c, np.float32)
        for m in range(len(xs)):
            x = xs[m]
            w = weights[m]
            if w == 0:
                continue
            method = methods[m]
            if method == 1:
                rmx = row_max[m]
                if find_max[m]:  # the first blend finds the maxima, where the row is in cache; kept
                    rmx[i] = _row_max(x[i])
                rm = rmx[i]
                inv_t = p1[m]
                s = np.float32(0.0)
                for j in range(c):
                    e = exp32((x[i, j] - rm) * inv_t)
                    buf[j] = e
                    s += e
                f = w / s
                for j in range(c):
                    acc[j] += buf[j] * f
            elif method == 2:
                inv_t = p1[m]
                for j in range(c):
                    acc[j] += w / (np.float32(1.0) + exp32(-x[i, j] * inv_t))
            elif method == 3:
                a, b = p1[m], p2[m]
                for j in range(c):
                    acc[j] += w / (np.float32(1.0) + exp32(-(x[i, j] * a + b)))
            else:
                for j in range(c):
                    acc[j] += x[i, j] * w
        for s_ in range(rcodes.shape[0]):
            for r in range(rcodes.shape[2]):
                col = rcodes[s_, i, r]
                if col == c:  # the unknown label
                    vote[i] += rweights[s_, r]
                elif col >= 0:
                    acc[col] += rweights[s_, r]
        if keep:
            out[i, :] = acc
        tv = np.empty(k, np.float32)
        ti = np.empty(k, np.int64)
        _row_top_k(acc, k, tv, ti)
        codes[i] = ti
        values[i] = tv
    return codes, values, vote


_KERNEL = (njit(**_opts)(_blend_top_k), njit(parallel=True, **_opts)(_blend_top_k))


def blend_top_k(parts: Sequence[tuple], ranked: Sequence[tuple], n: int, c: int, k: int, keep: bool = False):
    """The weighted blend of calibrated members and each row's k best columns.

    parts: (x (N, C) float32, method, p1, p2, weight, row_max) per scored member, with `method` a
    METHOD_CODES key; row_max: for softmax a `RowMax` the first call fills and later calls reuse
    (or None: found again each call), else None; ranked: (codes (N, R) int64 column codes by rank, -1 = none,
    C = the unknown label, weight, rank weights (R,) or None for RANK_WEIGHTS) per top-5 member. Weights
    are used as given (normalise them first).
    Returns (codes int64 (N, k'), values float32 (N, k'), blended (N, C) or None, vote float32 (N,): the
    ranked members' weighted votes for the unknown label), k' = min(k, C).
    """
    k = min(int(k), c)
    m_count = max(len(parts), 1)
    methods = np.zeros(m_count, np.int64)
    p1 = np.zeros(m_count, np.float32)
    p2 = np.zeros(m_count, np.float32)
    weights = np.zeros(m_count, np.float32)
    find_max = np.zeros(m_count, np.bool_)
    xs, row_max = [], []
    no_max = np.zeros(0, np.float32)
    for m, (x, method, a, b, w, rmax) in enumerate(parts):
        xs.append(_readonly(x))
        methods[m], p1[m], p2[m], weights[m] = METHOD_CODES[method], a, b, w
        if method == "softmax":
            rmax = rmax if rmax is not None else RowMax(n)
            find_max[m] = not rmax.known
            row_max.append(rmax.values)
        else:
            row_max.append(no_max)
    if not parts:  # only ranked members: a zero-weight placeholder keeps the kernel's types
        xs.append(_readonly(np.zeros((n, c), np.float32)))
        row_max.append(no_max)
    width = len(RANK_WEIGHTS)
    rcodes = np.full((len(ranked), n, width), -1, np.int64)
    rweights = np.zeros((len(ranked), width), np.float32)
    for s, (codes, w, rank_weights) in enumerate(ranked):
        rcodes[s, :, :codes.shape[1]] = codes[:, :width]
        rweights[s] = w * (RANK_WEIGHTS if rank_weights is None else np.asarray(rank_weights, np.float32))
    if not ranked:
        rcodes = np.full((0, n, 1), -1, np.int64)
        rweights = np.zeros((0, 1), np.float32)
    out = np.empty((n, c) if keep else (0, 0), np.float32)
    kernel = _KERNEL[1] if n * c >= PARALLEL_MIN_ELEMENTS else _KERNEL[0]
    # a tuple, not a typed List: a tuple of arrays costs nothing to pass, a typed List compiles its
    # methods in every new process (~0.4 s); the kernel is compiled (and cached) per member count
    codes, values, vote = kernel(tuple(xs), methods, p1, p2, weights, tuple(row_max), find_max, rcodes, rweights, k, out)
    for part in parts:  # every row was visited: the maxima are known now
        if part[1] == "softmax" and part[5] is not None:
            part[5].known = True
    return codes, values, (out if keep else None), vote


class RowMax:
    """One member's row maxima for softmax (they do not depend on T): found by the first blend that
    needs them, inside its pass over the rows, then reused."""

    def __init__(self, n: int):
        self.values = np.zeros(n, np.float32)
        self.known = False


def _readonly(x: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous float32 view: mmapped and in-memory members get one array type."""
    view = np.ascontiguousarray(x, dtype=np.float32).view()
    view.flags.writeable = False
    return view


def reciprocal_rank(x: np.ndarray) -> np.ndarray:
    """1 / (1 + rank) within each row, rank 0 the highest score (ties: the lower column first)."""
    order = np.argsort(-x, axis=1, kind="stable")
    rank = np.empty(x.shape, dtype=np.int64)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(x.shape[1]), x.shape), axis=1)
    return (1.0 / (1.0 + rank)).astype(np.float32)


# ------------------------------------------------------------------------ tuning: the candidates
@njit(**_opts)
def _candidate_top_k(cand, vals, bounds, weights, xs, k, codes, values):
    """Per row: the blend over the row's candidate columns, whose top-k is the full row's whenever
    its k-th value beats every other column's upper bound (sum of weight x the member's bound);
    otherwise the row is blended in full from `xs`. Accumulation order and ties as _blend_top_k."""
    n, u = cand.shape
    c = xs[0].shape[1]
    full = 0
    acc = np.empty(u, np.float32)
    tv = np.empty(k, np.float32)
    ti = np.empty(k, np.int64)
    for i in range(n):
        for j in range(u):
            acc[j] = 0.0
        limit = np.float32(0.0)
        for m in range(vals.shape[0]):
            w = weights[m]
            if w == 0:
                continue
            limit += w * bounds[m, i]
            for j in range(u):
                acc[j] += vals[m, i, j] * w
        filled = 0
        for j in range(u):
            if cand[i, j] < 0:
                break
            filled = _insert(acc[j], cand[i, j], k, filled, tv, ti)
        # a margin of float32 rounding: the bound must beat every excluded column's accumulated sum
        if filled == k and tv[k - 1] > limit * np.float32(1.00001) + np.float32(1e-30):
            codes[i] = ti
            values[i] = tv
            continue
        full += 1
        row = np.zeros(c, np.float32)
        for m in range(len(xs)):
            w = weights[m]
            if w == 0:
                continue
            x = xs[m]
            for j in range(c):
                row[j] += x[i, j] * w
        _row_top_k(row, k, tv, ti)
        codes[i] = ti
        values[i] = tv
    return full


class Candidates:
    """For a tuner that blends the same calibrated members (probabilities in [0, 1]) with new weights
    trial after trial: each row's candidate columns (the union of every member's top `width`), the
    members' values there, and each member's bound (its largest value outside its own top `width`).
    `top_k(weights, k)` equals blend_top_k over the full rows, exactly, reading ~3 x width columns a
    row instead of C (5,004 in 2019): a column outside every member's top `width` scores at most the
    weighted sum of the bounds, so a row whose k-th candidate beats that sum is decided; the rare
    others are blended in full."""

    def __init__(self, xs: Sequence[np.ndarray], width: int = 64):
        self.xs = tuple(_readonly(x) for x in xs)
        n, c = self.xs[0].shape
        width = min(width, c)
        tops, bounds = [], np.zeros((len(xs), n), np.float32)
        for m, x in enumerate(self.xs):
            part = np.argpartition(-x, width - 1, axis=1)[:, :width] if width < c else np.tile(np.arange(c), (n, 1))
            tops.append(part)
            if width < c:
                rest = x.copy()
                np.put_along_axis(rest, part, -np.inf, axis=1)
                bounds[m] = rest.max(axis=1)
            else:
                bounds[m] = -np.inf
        union = [np.unique(np.concatenate([t[i] for t in tops])) for i in range(n)]
        u = max(len(r) for r in union)
        self.cand = np.full((n, u), -1, np.int64)
        for i, r in enumerate(union):
            self.cand[i, :len(r)] = r
        safe = np.maximum(self.cand, 0)
        self.vals = np.stack([np.where(self.cand >= 0, np.take_along_axis(x, safe, axis=1), 0).astype(np.float32)
                              for x in self.xs])
        self.bounds = np.nan_to_num(bounds, neginf=0.0).astype(np.float32)  # probabilities: nothing below 0
        self.full_rows = 0  # rows the last call blended in full

    def top_k(self, weights: Sequence[float], k: int):
        n, c = self.xs[0].shape
        k = min(int(k), c)
        codes = np.empty((n, k), np.int64)
        values = np.empty((n, k), np.float32)
        self.full_rows = _candidate_top_k(self.cand, self.vals, self.bounds, np.asarray(weights, np.float32),
                                          self.xs, k, codes, values)
        return codes, values
