"""Matching two photos' local features, with geometric verification: the inlier count.

For one query against many gallery images at once:
1. descriptor similarity as one matrix product (RootSIFT: Hellinger similarity of unit vectors;
   ORB: 256 - 2 x Hamming distance, from +-1 bit vectors), query keypoints x every gallery keypoint;
2. per (gallery image, query keypoint) the best and second-best gallery keypoint in one numba pass
   over the product (`_best_two`), then Lowe's ratio test (best distance < ratio x second's) and a
   mutual check (the gallery keypoint's best query keypoint is this one);
3. per gallery image with `min_matches` such pairs, a robust geometric model fitted by OpenCV
   (USAC MAGSAC homography, or a 4-degree-of-freedom similarity with RANSAC): the inliers it keeps.
The inlier count is the pair's score: what two photos of one animal share and two animals do not.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

from kit.errors import KitError

CHUNK = 20_000  # gallery keypoints per matrix product (Kq x CHUNK float32: 40 MB at 500 query keypoints)


@dataclass(frozen=True)
class MatchCfg:
    ratio: float = 0.8  # Lowe's ratio test on descriptor distances
    mutual: bool = True  # keep a pair only when each keypoint is the other's best
    model: str = "homography"  # homography (USAC MAGSAC) | similarity (RANSAC, 4 DOF)
    threshold: float = 6.0  # reprojection error, pixels of the crop
    min_matches: int = 6  # fewer tentative pairs than this: 0 inliers, no fit tried

    def __post_init__(self):
        if self.model not in ("homography", "similarity"):
            raise KitError(f"local matching: model {self.model!r}; expected homography or similarity")
        if not 0 < self.ratio <= 1 or self.threshold <= 0 or self.min_matches < 4:
            raise KitError("local matching: ratio in (0, 1], threshold > 0, min_matches >= 4")


@contextmanager
def one_thread_each():
    """OpenCV and the BLAS behind numpy's matrix products on one thread each while a pool of threads,
    one a core, matches a query each: their own pools would oversubscribe the cores (measured on 2
    cores: 4,500 verified pairs/s on 2 matching threads with OpenBLAS's default pool, 7,400 with one
    BLAS thread each; scripts/bench.py match)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(threads)


def matching_vectors(desc: np.ndarray, extractor: str) -> np.ndarray:
    """(n, D') float32 vectors whose dot product is the descriptors' similarity: RootSIFT (unit
    vectors, so 2 - 2 x dot is the squared Hellinger-like distance) or +-1 bits for ORB."""
    if extractor == "sift":
        x = desc.astype(np.float32)
        x /= np.maximum(x.sum(axis=1, keepdims=True), 1e-7)
        return np.sqrt(x)
    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    return 2.0 * bits - 1.0


def distances(similarity: np.ndarray, extractor: str) -> np.ndarray:
    """Descriptor distance from the dot products of `matching_vectors`."""
    if extractor == "sift":
        return np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))
    return (256.0 - similarity) / 2.0  # Hamming


@njit(cache=True, nogil=True)
def _best_two(sim, offsets):
    """Per (gallery image g, query keypoint q): the best and second-best similarity among g's
    keypoints (columns offsets[g]:offsets[g+1] of sim) and the best's column; per column, its best
    query keypoint (the mutual check)."""
    nq = sim.shape[0]
    ng = len(offsets) - 1
    best = np.full((ng, nq), -np.inf, np.float32)
    second = np.full((ng, nq), -np.inf, np.float32)
    arg = np.full((ng, nq), -1, np.int64)
    col_best = np.full(sim.shape[1], -1, np.int64)
    col_val = np.full(sim.shape[1], -np.inf, np.float32)
    for g in range(ng):
        for q in range(nq):
            b, s, a = -np.inf, -np.inf, -1
            for c in range(offsets[g], offsets[g + 1]):
                v = sim[q, c]
                if v > b:
                    s = b
                    b = v
                    a = c
                elif v > s:
                    s = v
                if v > col_val[c]:
                    col_val[c] = v
                    col_best[c] = q
            best[g, q], second[g, q], arg[g, q] = b, s, a
    return best, second, arg, col_best


def inliers(q_xy: np.ndarray, q_vec: np.ndarray, gallery: list[tuple[np.ndarray, np.ndarray]], extractor: str,
            cfg: MatchCfg = MatchCfg()) -> np.ndarray:
    """(G,) int32: the verified inliers between one query (its keypoints' xy and matching vectors)
    and each gallery image (xy, vectors), in order."""
    out = np.zeros(len(gallery), np.int32)
    if len(q_vec) < cfg.min_matches:
        return out
    start = 0
    while start < len(gallery):  # gallery images in chunks of about CHUNK keypoints
        stop, width = start, 0
        while stop < len(gallery) and (stop == start or width + len(gallery[stop][1]) <= CHUNK):
            width += len(gallery[stop][1])
            stop += 1
        part = gallery[start:stop]
        offsets = np.zeros(len(part) + 1, np.int64)
        offsets[1:] = np.cumsum([len(v) for _, v in part])
        if offsets[-1] == 0:
            start = stop
            continue
        vecs = np.concatenate([v for _, v in part])
        sim = np.ascontiguousarray(q_vec @ vecs.T, np.float32)
        best, second, arg, col_best = _best_two(sim, offsets)
        d1, d2 = distances(best, extractor), distances(second, extractor)
        keep = (arg >= 0) & (d1 < cfg.ratio * d2)
        if cfg.mutual:
            keep &= col_best[np.maximum(arg, 0)] == np.arange(len(q_vec))[None, :]
        for g, (g_xy, _) in enumerate(part):
            qi = np.flatnonzero(keep[g])
            if len(qi) < cfg.min_matches:
                continue
            src = np.ascontiguousarray(q_xy[qi], np.float32)
            dst = np.ascontiguousarray(g_xy[arg[g, qi] - offsets[g]], np.float32)
            out[start + g] = verify(src, dst, cfg)
        start = stop
    return out


def verify(src: np.ndarray, dst: np.ndarray, cfg: MatchCfg) -> int:
    """Inliers of the robust geometric model between tentative pairs (src -> dst)."""
    try:
        if cfg.model == "homography":
            _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, cfg.threshold, maxIters=2000, confidence=0.999)
        else:
            _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=cfg.threshold,
                                                  maxIters=2000, confidence=0.999)
    except cv2.error:  # degenerate points (all collinear, ...): no model
        return 0
    return 0 if mask is None else int(mask.sum())
