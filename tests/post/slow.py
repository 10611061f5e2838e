"""Plain Python versions of the post-processing rules: obviously correct, slow, test-only.

The kernels in kit/post are checked against these on random inputs (ties included).
"""
from __future__ import annotations


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def leak_labels(candidates, max_distance):
    """candidates: [(label, distance)] of one image. Nearest first, then most matches, then label; 5 at most."""
    best = {}
    for label, d in candidates:
        if d <= max_distance:
            nearest, count = best.get(label, (99, 0))
            best[label] = (min(nearest, d), count + 1)
    return sorted(best, key=lambda lab: (best[lab][0], -best[lab][1], lab))[:5]


def swaps(top, scores, pinned, margin, min_count):
    """balance.py's rule, one image at a time."""
    first = [p if p >= 0 else t[0] for t, p in zip(top, pinned)]
    counts = {}
    for c in first:
        counts[c] = counts.get(c, 0) + 1
    candidates = [i for i in range(len(top)) if pinned[i] < 0 and float(scores[i][0]) - float(scores[i][1]) < margin]
    candidates.sort(key=lambda i: (float(scores[i][0]) - float(scores[i][1]), i))
    out = [False] * len(top)
    for i in candidates:
        c1, c2 = top[i][0], top[i][1]
        if counts.get(c1, 0) >= min_count and counts.get(c2, 0) == 0:
            out[i] = True
            counts[c1] -= 1
            counts[c2] = counts.get(c2, 0) + 1
    return out


def assemble(ranking, pinned, new_whale_at, swap, unknown):
    """One image's top-5: leak labels, then the ranking (top-1/2 swapped) with new_whale inserted."""
    ranking = list(ranking)
    if swap:
        ranking[0], ranking[1] = ranking[1], ranking[0]
    if new_whale_at >= 0:
        ranking.insert(new_whale_at, unknown)
    out = [c for c in pinned if c >= 0]
    for c in ranking:
        if c not in out:
            out.append(c)
    return out[:5]
