"""Identity scores from embeddings, as the 3rd place did: cosine to each identity's centre.

An identity's centre is the L2-normalised mean of its gallery images' (unit) embeddings. Photos
of one whale differ more than two whales do, and a mislabelled photo drags the mean, so for an
identity with at least `trim_min` images the `trim` share of images farthest from the first
centre is dropped and the centre recomputed. The nearest-image alternative scores an identity by
its most similar gallery image instead (max over that identity's images).

Every identity in the gallery gets a centre, whether or not the network was trained on it: a
whale added to the database after training is findable without retraining.

Everything is one vectorised pass over the gallery sorted by identity (`np.add.reduceat`,
`np.maximum.reduceat`); no loop per identity.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from kit.export.tta import l2_normalise

TRIM = 0.2  # share of an identity's images dropped as outliers
TRIM_MIN = 5  # identities with fewer images keep them all (a pair has no outlier to speak of)
QUERY_BLOCK = 1024  # queries per block in nearest_image_scores (bounds N x M memory)


def _group(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(classes sorted, order that sorts the gallery by class, codes in that order, group starts)."""
    classes, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return classes, order, codes, starts


def identity_centres(embeddings: np.ndarray, labels: Sequence[str], *, trim: float = TRIM,
                     trim_min: int = TRIM_MIN) -> tuple[list[str], np.ndarray]:
    """(identities sorted, unit centres float32 C x D) from gallery `embeddings` (M x D) and `labels` (M)."""
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    if len(labels) == 0:
        return [], np.zeros((0, embeddings.shape[1]), dtype=np.float32)
    if not 0 <= trim < 1:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    classes, order, codes, starts = _group(labels)
    e = l2_normalise(embeddings)[order].astype(np.float64)
    counts = np.diff(np.r_[starts, len(codes)])
    first = l2_normalise(np.add.reduceat(e, starts, axis=0))
    if trim > 0 and (counts >= trim_min).any():
        cos = np.einsum("md,md->m", e, first[codes])
        by_cos = np.lexsort((cos, codes))  # grouped by identity, least similar first
        rank = np.empty(len(codes), dtype=np.int64)
        rank[by_cos] = np.arange(len(codes)) - starts[codes[by_cos]]
        n_drop = np.where(counts >= trim_min, np.floor(trim * counts).astype(np.int64), 0)
        keep = rank >= n_drop[codes]
        centres = l2_normalise(np.add.reduceat(e * keep[:, None], starts, axis=0))
    else:
        centres = first
    return classes.tolist(), np.ascontiguousarray(centres, dtype=np.float32)


def cosine_scores(queries: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, C) cosine between each (unit-normalised) query and each centre."""
    return np.ascontiguousarray(l2_normalise(queries) @ l2_normalise(centres).T, dtype=np.float32)


def nearest_image_scores(queries: np.ndarray, gallery: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(identities sorted, N x C): each identity scored by its gallery image nearest the query."""
    classes, order, _, starts = _group(labels)
    g = l2_normalise(gallery)[order]
    q = l2_normalise(queries)
    out = np.empty((len(q), len(classes)), dtype=np.float32)
    for i in range(0, len(q), QUERY_BLOCK):  # blocks of queries, not a loop per image
        out[i:i + QUERY_BLOCK] = np.maximum.reduceat(q[i:i + QUERY_BLOCK] @ g.T, starts, axis=1)
    return classes.tolist(), out


def knn_scores(pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[str], k: int,
               missing: float = -1.0) -> tuple[list[str], np.ndarray]:
    """(identities sorted, N x C): each identity scored by its best cosine among the query's k nearest
    gallery images (Happywhale 2022's 1st place); identities with none among them get `missing`.
    `pairs`: (queries, gallery) embeddings compared like with like, e.g. the originals and the
    mirrored images (a mirrored gallery image is another neighbour of its identity)."""
    classes, inverse = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    ids = np.tile(inverse, len(pairs))
    n = len(pairs[0][0])
    out = np.full((n, len(classes)), missing, dtype=np.float32)
    galleries = [l2_normalise(g) for _, g in pairs]
    width = sum(len(g) for g in galleries)
    k = min(k, width)
    if k == 0:
        return classes.tolist(), out
    for i in range(0, n, QUERY_BLOCK):  # blocks of queries: a block x gallery matrix at a time
        sims = np.concatenate([l2_normalise(q[i:i + QUERY_BLOCK]) @ g.T for (q, _), g in zip(pairs, galleries)], axis=1)
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < width else np.tile(np.arange(width), (len(sims), 1))
        rows = np.repeat(np.arange(len(sims)), k)
        block = out[i:i + QUERY_BLOCK]
        np.maximum.at(block, (rows, ids[near.ravel()]), sims[rows, near.ravel()])
    return classes.tolist(), out


def scores_for(classes: Sequence[str], have: Sequence[str], scores: np.ndarray, missing: float = -1.0) -> np.ndarray:
    """`scores` (N x len(have)) with columns put in the order of `classes`; absent ones get `missing`."""
    col = {c: j for j, c in enumerate(have)}
    idx = np.array([col.get(c, -1) for c in classes], dtype=np.int64)
    out = np.full((scores.shape[0], len(classes)), missing, dtype=np.float32)
    found = idx >= 0
    out[:, found] = scores[:, idx[found]]
    return out
