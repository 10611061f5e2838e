"""The top-1/top-2 swap: hand-made cases, then random inputs against a plain Python version."""
import numpy as np

from kit.post.balance import swap_top2
from slow import swaps as slow_swaps


def swaps(top, scores, pinned=None, margin=0.3, min_count=2, n_labels=20):
    top = np.array(top, dtype=np.int64)
    scores = np.array(scores, dtype=np.float32)
    pinned = np.full(len(top), -1, np.int64) if pinned is None else np.array(pinned, dtype=np.int64)
    return swap_top2(top, scores, pinned, margin, min_count, n_labels).tolist()


def test_overused_top1_gives_way_to_an_unused_runner_up():
    # class 1 is the top-1 of three images; image 0's runner-up (5) is nobody's top-1 and close
    top = [[1, 5], [1, 6], [1, 7], [2, 1]]
    scores = [[0.50, 0.45], [0.9, 0.1], [0.9, 0.1], [0.8, 0.7]]
    assert swaps(top, scores) == [True, False, False, False]


def test_no_swap_when_the_gap_is_not_below_the_margin():
    assert swaps([[1, 5], [1, 6]], [[0.8, 0.5], [0.9, 0.1]], margin=0.3) == [False, False]  # gap 0.3: not < 0.3
    assert swaps([[1, 5], [1, 6]], [[0.8, 0.51], [0.9, 0.1]], margin=0.3) == [True, False]


def test_no_swap_when_the_runner_up_is_someones_top1():
    assert swaps([[1, 2], [1, 6], [2, 1]], [[0.5, 0.45], [0.9, 0.1], [0.9, 0.1]]) == [False, False, False]


def test_no_swap_when_top1_is_not_used_enough():
    assert swaps([[1, 5], [3, 6]], [[0.5, 0.45], [0.9, 0.1]], min_count=2) == [False, False]
    assert swaps([[1, 5], [3, 6]], [[0.5, 0.45], [0.9, 0.1]], min_count=1) == [True, False]


def test_counts_update_as_swaps_happen():
    # class 1 tops two images, both with runner-up 5: the closer one swaps, then 5 is used and
    # 1 has a single top-1 left, so the second image keeps its order
    top = [[1, 5], [1, 5]]
    assert swaps(top, [[0.50, 0.40], [0.50, 0.45]]) == [False, True]
    # three images on class 1 with distinct runners-up and min_count 2: two swap (closest first), one keeps 1
    top = [[1, 5], [1, 6], [1, 7]]
    assert swaps(top, [[0.5, 0.3], [0.5, 0.45], [0.5, 0.4]]) == [False, True, True]


def test_leak_pinned_images_count_but_do_not_swap():
    # image 0 is pinned to class 1 by the leak: it counts as a top-1 of 1 but never swaps
    top = [[1, 5], [1, 6]]
    assert swaps(top, [[0.5, 0.45], [0.5, 0.45]], pinned=[1, -1]) == [False, True]
    # a pinned label other than the model's top-1 counts for that label
    assert swaps(top, [[0.5, 0.45], [0.5, 0.45]], pinned=[9, -1]) == [False, False]


def test_random_inputs_against_plain_python():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n, c = 80, 12
        top = np.stack([rng.choice(c, 2, replace=False) for _ in range(n)])
        s1 = rng.integers(2, 10, n) / 10  # coarse: gaps tie often
        scores = np.stack([s1, s1 - rng.integers(0, 5, n) / 10], axis=1).astype(np.float32)
        pinned = np.where(rng.random(n) < 0.2, rng.integers(0, c, n), -1)
        margin, min_count = float(rng.choice([0.1, 0.3, 0.5])), int(rng.integers(1, 4))
        got = swap_top2(top, scores, pinned, margin, min_count, c)
        assert got.tolist() == slow_swaps(top.tolist(), scores.tolist(), pinned.tolist(), margin, min_count), trial
