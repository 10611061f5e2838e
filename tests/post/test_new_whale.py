"""new_whale: insertion by threshold (a constant column) and by proportion."""
import numpy as np
import pytest

from kit.post.new_whale import insert_positions, threshold_for_proportion, threshold_of
from kit.post.recipe import NewWhaleStep


def test_insert_positions_is_a_constant_column():
    scores = np.array([[0.9, 0.6, 0.5, 0.1], [0.4, 0.3, 0.2, 0.1], [0.95, 0.94, 0.93, 0.92]], dtype=np.float32)
    assert insert_positions(scores, 0.5).tolist() == [3, 0, 4]  # a score equal to t stays ahead
    rng = np.random.default_rng(0)
    s = -np.sort(-rng.integers(0, 5, (50, 10)) / 4, axis=1).astype(np.float32)  # ties included
    for t in (0.0, 0.25, 0.5, 1.0, 1.1):
        slow = [sum(v >= t for v in row) for row in s.tolist()]
        assert insert_positions(s, t).tolist() == slow


@pytest.mark.parametrize("p", [0.0, 0.1, 0.276, 0.5, 0.999, 1.0])
def test_threshold_for_proportion(p):
    rng = np.random.default_rng(1)
    top1 = rng.random(1000).astype(np.float32)
    t = threshold_for_proportion(top1, p)
    assert (top1 < t).sum() == round(p * 1000)


def test_proportion_with_ties_never_overshoots():
    top1 = np.array([0.1, 0.5, 0.5, 0.5, 0.9], dtype=np.float32)
    t = threshold_for_proportion(top1, 0.4)  # 2 of 5 wanted; the 0.5s tie
    assert (top1 < t).sum() == 1
    assert threshold_for_proportion(np.zeros(0, np.float32), 0.3) == 0.0


def test_threshold_of_a_step():
    top1 = np.linspace(0, 1, 11, dtype=np.float32)
    assert threshold_of(NewWhaleStep(threshold=0.42, proportion=None), top1) == pytest.approx(0.42)
    assert threshold_of(NewWhaleStep(threshold=None, proportion=0.3), top1) == pytest.approx(0.3)
