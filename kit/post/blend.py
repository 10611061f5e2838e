"""Blend: every member's scores made comparable (calibrated), then a weighted mean, then top-k.

Kernels (numba, parallel over images, float32) add one calibrated member into the blended
matrix in place: `out += w * f(x)`:
- `add_softmax`: f = softmax(x / T) along the row (`row_max` precomputed once: it does not
  depend on T);
- `add_sigmoid`: f = 1 / (1 + exp(-x / T));
- `add_affine`: f = 1 / (1 + exp(-(a x + b))) (Platt scaling of cosines);
- `add_scaled`: f = x (scores used as they are, or the precomputed `reciprocal_rank`);
- `add_ranked`: a top-5 member: label codes per image, the label at rank r gets 1 / (1 + r).
`top_k` returns each row's k best columns, ties to the lower column (a stable descending sort).

Each kernel is compiled twice, serial and parallel; the parallel one runs only on matrices of at
least `PARALLEL_MIN_ELEMENTS` (a test-set blend), because at validation scale (742 x 5,004) a
tuner calls them thousands of times and OpenMP's thread wake-ups and spinning cost more than they
save, badly so when the cores are shared.

`exp32` is a float32 exp (Cody-Waite reduction, degree-6 polynomial, exponent by bit cast,
relative error < 2e-7) that LLVM vectorises; libm's expf does not vectorise and was 10x slower.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

RANK_WEIGHTS = np.array([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5], dtype=np.float32)  # MAP@5's credit per rank
PARALLEL_MIN_ELEMENTS = 8_000_000  # below this (rows x columns) the serial kernels run
_BLOCK = 64  # top_k scans a row in blocks of this many columns
_opts = dict(cache=True, fastmath=True, nogil=True)


def _two_ways(fn, fastmath=True):
    """(serial, parallel) compilations of a kernel whose outer loop is a prange."""
    opts = dict(_opts, fastmath=fastmath)
    return njit(**opts)(fn), njit(parallel=True, **opts)(fn)


def _pick(pair, matrix):
    return pair[1] if matrix.size >= PARALLEL_MIN_ELEMENTS else pair[0]


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


@njit(**_opts)
def exp32_array(x):
    """exp32 over an array (for the tests: it is compared with np.exp)."""
    out = np.empty_like(x)
    flat, res = x.ravel(), out.ravel()
    for i in range(flat.size):
        res[i] = exp32(flat[i])
    return out


def _add_softmax(out, x, row_max, inv_t, w):
    n, c = x.shape
    for i in prange(n):
        buf = np.empty(c, np.float32)
        m = row_max[i]
        s = np.float32(0.0)
        for j in range(c):
            e = exp32((x[i, j] - m) * inv_t)
            buf[j] = e
            s += e
        f = w / s
        for j in range(c):
            out[i, j] += buf[j] * f


def _add_sigmoid(out, x, inv_t, w):
    n, c = x.shape
    for i in prange(n):
        for j in range(c):
            out[i, j] += w / (np.float32(1.0) + exp32(-x[i, j] * inv_t))


def _add_affine(out, x, a, b, w):
    n, c = x.shape
    for i in prange(n):
        for j in range(c):
            out[i, j] += w / (np.float32(1.0) + exp32(-(x[i, j] * a + b)))


def _add_scaled(out, x, w):
    n, c = x.shape
    for i in prange(n):
        for j in range(c):
            out[i, j] += x[i, j] * w


@njit(**_opts)
def add_ranked(out, codes, weights, w):
    """codes (N, R): column of the label at each rank, -1 for none (unknown label, padding)."""
    n, r = codes.shape
    for i in range(n):
        for k in range(r):
            c = codes[i, k]
            if c >= 0:
                out[i, c] += weights[k] * w


def reciprocal_rank(x: np.ndarray) -> np.ndarray:
    """1 / (1 + rank) within each row, rank 0 the highest score (ties: the lower column first)."""
    order = np.argsort(-x, axis=1, kind="stable")
    rank = np.empty(x.shape, dtype=np.int64)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(x.shape[1]), x.shape), axis=1)
    return (1.0 / (1.0 + rank)).astype(np.float32)


def _top_k(scores, k):
    n, c = scores.shape
    k = min(k, c)
    codes = np.empty((n, k), np.int64)
    values = np.empty((n, k), np.float32)
    for i in prange(n):
        tv = np.empty(k, np.float32)
        ti = np.empty(k, np.int64)
        filled = 0
        for j0 in range(0, c, _BLOCK):
            j1 = min(j0 + _BLOCK, c)
            if filled == k:
                # most blocks hold nothing above the current k-th value: a vectorised count skips them
                kth = tv[k - 1]
                above = 0
                for j in range(j0, j1):
                    above += scores[i, j] > kth
                if above == 0:
                    continue
            for j in range(j0, j1):
                v = scores[i, j]
                if filled == k and not v > tv[k - 1]:
                    continue
                # insert after every kept value >= v: equal values keep column order
                p = filled if filled < k else k - 1
                while p > 0 and tv[p - 1] < v:
                    tv[p] = tv[p - 1]
                    ti[p] = ti[p - 1]
                    p -= 1
                tv[p] = v
                ti[p] = j
                if filled < k:
                    filled += 1
        codes[i] = ti
        values[i] = tv
    return codes, values


_SOFTMAX = _two_ways(_add_softmax)
_SIGMOID = _two_ways(_add_sigmoid)
_AFFINE = _two_ways(_add_affine)
_SCALED = _two_ways(_add_scaled)
_TOP_K = _two_ways(_top_k)


def add_softmax(out, x, row_max, inv_t, w):
    """out += w * softmax(x / T) per row; `row_max` = x.max(axis=1), `inv_t` = 1 / T."""
    _pick(_SOFTMAX, x)(out, x, row_max, np.float32(inv_t), np.float32(w))


def add_sigmoid(out, x, inv_t, w):
    """out += w * sigmoid(x / T)."""
    _pick(_SIGMOID, x)(out, x, np.float32(inv_t), np.float32(w))


def add_affine(out, x, a, b, w):
    """out += w * sigmoid(a * x + b)."""
    _pick(_AFFINE, x)(out, x, np.float32(a), np.float32(b), np.float32(w))


def add_scaled(out, x, w):
    """out += w * x."""
    _pick(_SCALED, x)(out, x, np.float32(w))


def top_k(scores, k: int):
    """Each row's k highest scores and their columns, descending; a tie goes to the lower column.
    Returns (codes int64 (N, k), values float32 (N, k)), k capped at the number of columns."""
    return _pick(_TOP_K, scores)(scores, int(k))
