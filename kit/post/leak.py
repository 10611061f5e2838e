"""Leak matching: test images whose perceptual hash (nearly) equals a train image's.

`match_hashes` compares every query hash with every reference hash (64-bit XOR + popcount, one
`vpopcntq` lane per pair where the CPU has it; parallel over queries) and returns the pairs within
a maximum Hamming distance as a CSR table sorted by (distance, reference index). It is computed
once, up to the largest distance a tuner may ask for; `leak_labels` then answers any smaller
distance in microseconds.

The rule: an image with duplicates within `max_distance` gets their labels first, before the
model's ranking; several labels are ordered by distance (nearest first), then by how many
matched train images carry the label (more first), then by label code. At most 5 labels.
The unknown label is a label like any other: duplicating a `new_whale` train image puts
`new_whale` first. Train duplicates whose labels disagree are reported (`label_conflicts`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

WIDTH = 5  # labels a leak can pin, at most


@intrinsic
def popcount64(typingctx, value):
    """Number of set bits of a uint64 (LLVM's ctpop: popcnt / vpopcntq)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(parallel=True, cache=True, nogil=True)
def hamming_counts(query, ref, max_distance):
    """For each query hash, how many reference hashes lie within `max_distance` bits."""
    out = np.zeros(query.shape[0], np.int64)
    d = np.uint64(max_distance)
    for i in prange(query.shape[0]):
        q = query[i]
        c = 0
        for j in range(ref.shape[0]):
            c += popcount64(q ^ ref[j]) <= d
        out[i] = c
    return out


@njit(parallel=True, cache=True, nogil=True)
def _count(query, ref, max_distance, upper):
    out = np.zeros(query.shape[0], np.int64)
    d = np.uint64(max_distance)
    for i in prange(query.shape[0]):
        q = query[i]
        c = 0
        for j in range(i + 1 if upper else 0, ref.shape[0]):
            c += popcount64(q ^ ref[j]) <= d
        out[i] = c
    return out


@njit(parallel=True, cache=True, nogil=True)
def _fill(query, ref, max_distance, upper, indptr, index, distance):
    d = np.uint64(max_distance)
    for i in prange(query.shape[0]):
        if indptr[i + 1] == indptr[i]:  # most images have no duplicate: skip the second pass
            continue
        q = query[i]
        k = indptr[i]
        for j in range(i + 1 if upper else 0, ref.shape[0]):
            x = popcount64(q ^ ref[j])
            if x <= d:
                index[k] = j
                distance[k] = x
                k += 1
        a, b = indptr[i], indptr[i + 1]
        if b - a > 1:  # by distance; reference index already ascending (stable sort)
            order = np.argsort(distance[a:b], kind="mergesort")
            index[a:b] = index[a:b][order]
            distance[a:b] = distance[a:b][order]


@dataclass
class Matches:
    """Pairs within `max_distance`: for query i, rows indptr[i]:indptr[i+1] of index/distance."""

    indptr: np.ndarray  # int64 (n_query + 1,)
    index: np.ndarray  # int64: reference position
    distance: np.ndarray  # uint8
    max_distance: int

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.index[a:b], self.distance[a:b]

    @property
    def query(self) -> np.ndarray:
        """The query position of every pair."""
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def keep(self, mask: np.ndarray) -> "Matches":
        """The pairs where `mask` (one flag per pair) is true, order kept."""
        counts = np.bincount(self.query[mask], minlength=len(self.indptr) - 1)
        indptr = np.zeros_like(self.indptr)
        np.cumsum(counts, out=indptr[1:])
        return Matches(indptr, self.index[mask], self.distance[mask], self.max_distance)


def match_hashes(query: np.ndarray, ref: np.ndarray | None, max_distance: int) -> Matches:
    """All (query, reference) hash pairs within `max_distance` bits; `ref=None`: the query set
    against itself, each unordered pair once (j > i)."""
    upper = ref is None
    q = np.ascontiguousarray(query, dtype=np.uint64)
    r = q if upper else np.ascontiguousarray(ref, dtype=np.uint64)
    counts = _count(q, r, int(max_distance), upper)
    indptr = np.zeros(len(q) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    index = np.empty(indptr[-1], np.int64)
    distance = np.empty(indptr[-1], np.uint8)
    _fill(q, r, int(max_distance), upper, indptr, index, distance)
    return Matches(indptr, index, distance, int(max_distance))


@njit(cache=True, nogil=True)
def _leak_labels(indptr, cand_label, cand_distance, max_distance, width):
    n = indptr.shape[0] - 1
    out = np.full((n, width), -1, np.int64)
    for i in range(n):
        a = indptr[i]
        b = a
        while b < indptr[i + 1] and cand_distance[b] <= max_distance:
            b += 1
        if b == a:
            continue
        # group by label: key = label * 128 + distance (distance <= 64)
        keys = cand_label[a:b] * 128 + cand_distance[a:b].astype(np.int64)
        keys.sort()
        labels = np.empty(b - a, np.int64)
        rank_keys = np.empty(b - a, np.int64)
        u = 0
        g = 0
        while g < keys.shape[0]:
            label = keys[g] // 128
            h = g
            while h < keys.shape[0] and keys[h] // 128 == label:
                h += 1
            count = min(h - g, (1 << 21) - 1)
            # order: nearest first, then most matched train images, then label code
            rank_keys[u] = ((keys[g] % 128) << 42) | ((((1 << 21) - 1) - count) << 21) | label
            labels[u] = label
            u += 1
            g = h
        order = np.argsort(rank_keys[:u])
        for t in range(min(u, width)):
            out[i, t] = labels[order[t]]
    return out


def leak_labels(matches: Matches, ref_labels: np.ndarray, max_distance: int, width: int = WIDTH) -> np.ndarray:
    """(n_query, width) label codes pinned by the leak, -1 padded; `ref_labels` are the codes of
    the reference images. `max_distance` may not exceed the distance `matches` was built for."""
    if max_distance > matches.max_distance:
        raise ValueError(f"matches were computed up to distance {matches.max_distance}, asked {max_distance}")
    cand_label = np.asarray(ref_labels, dtype=np.int64)[matches.index]
    return leak_labels_of(matches.indptr, cand_label, matches.distance, max_distance, width)


def leak_labels_of(indptr, cand_label, cand_distance, max_distance: int, width: int = WIDTH) -> np.ndarray:
    """`leak_labels` on precomputed per-pair label codes (what the pipeline keeps)."""
    return _leak_labels(indptr, cand_label, cand_distance, np.uint8(max_distance), width)


def label_conflicts(hashes: np.ndarray, labels: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs of reference images within `max_distance` whose label codes differ: (n, 3) int64
    rows (i, j, distance), i < j, sorted by distance then i."""
    m = match_hashes(hashes, None, max_distance)
    i = m.query
    labels = np.asarray(labels)
    keep = labels[i] != labels[m.index]
    out = np.stack([i[keep], m.index[keep], m.distance[keep].astype(np.int64)], axis=1)
    return out[np.lexsort((out[:, 1], out[:, 0], out[:, 2]))] if len(out) else out.reshape(0, 3)
