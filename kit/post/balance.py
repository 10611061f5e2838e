"""Balance: the 1st place's top-1/top-2 swap, written down exactly.

An identity rarely appears many times in a test set, so a class that is the top-1 of several
images while a close runner-up is nobody's top-1 is probably stealing some of them. The rule:

1. `first[i]` is the label at the head of image i's list before balancing: its first leak label
   if the leak pinned one, else the model's top-1 identity c1. `count[c]` = number of images with
   `first == c`.
2. Candidates: images not pinned by the leak, with a second-ranked identity c2 and a score gap
   s1 - s2 < `margin` (blended, calibrated scores).
3. Candidates are visited in order of increasing gap (ties: lower image index first). An image
   swaps c1 and c2 when, at that moment, `count[c1] >= min_count` and `count[c2] == 0`; after a
   swap `count[c1] -= 1` and `count[c2] += 1`. Counts do update as swaps happen: a runner-up is
   promoted for at most one image, and with min_count >= 2 an overused class keeps at least one
   top-1.
4. Only the order of c1 and c2 changes; where new_whale goes (by score, see new_whale.py) does not.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _greedy(order, c1, c2, counts, min_count):
    swap = np.zeros(c1.shape[0], np.bool_)
    for t in range(order.shape[0]):
        i = order[t]
        a, b = c1[i], c2[i]
        if counts[a] >= min_count and counts[b] == 0:
            swap[i] = True
            counts[a] -= 1
            counts[b] += 1
    return swap


def swap_top2(top_codes: np.ndarray, top_scores: np.ndarray, pinned_first: np.ndarray,
              margin: float, min_count: int, n_labels: int) -> np.ndarray:
    """Which images swap their top-1 and top-2 (bool, N). `pinned_first`: the first leak label
    of each image, -1 where the leak pinned none; codes are < n_labels."""
    n = len(top_codes)
    if n == 0 or top_codes.shape[1] < 2:
        return np.zeros(n, dtype=bool)
    pinned = pinned_first >= 0
    first = np.where(pinned, pinned_first, top_codes[:, 0])
    counts = np.bincount(first, minlength=n_labels).astype(np.int64)
    gap = top_scores[:, 0].astype(np.float64) - top_scores[:, 1]
    candidates = np.flatnonzero(~pinned & (gap < margin))
    order = candidates[np.argsort(gap[candidates], kind="stable")]
    return _greedy(order, top_codes[:, 0], top_codes[:, 1], counts, int(min_count))
