"""new_whale: insertion by threshold (a constant column), by proportion and by the CSV members' vote;
the exact and the cross-validated threshold against brute force."""
import numpy as np
import pytest

from kit.post.new_whale import combine, threshold_of, vote_positions
from kit.ranking import (POSITIONS, PositionTable, best_share, best_threshold, cross_validated, insert_positions,
                         threshold_for_proportion)
from kit.post.steps.new_whale import NewWhale

NewWhaleStep = NewWhale.Params


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


# ---------------------------------------------------------------------------------- the vote
def test_the_vote_goes_before_the_first_identity_it_reaches():
    scores = np.array([[0.9, 0.6, 0.5], [0.4, 0.3, 0.2], [0.7, 0.6, 0.1], [0.8, 0.5, 0.1]], dtype=np.float32)
    vote = np.array([0.55, 0.5, 0.6, 0.0], dtype=np.float32)
    # a tie goes to the unknown label (row 2: 0.6 = 0.6); no vote, no position (row 3)
    assert vote_positions(scores, vote).tolist() == [2, 0, 1, -1]
    step = insert_positions(scores, 0.45)
    assert step.tolist() == [3, 0, 2, 2]
    assert combine(vote_positions(scores, vote), step).tolist() == [2, 0, 1, 2]  # the earlier wins


def test_a_proportion_counts_the_images_the_vote_put_first():
    top1 = np.linspace(0.05, 0.95, 10).astype(np.float32)
    voted = np.zeros(10, bool)
    voted[[8, 9]] = True  # two images already have the unknown label first
    t = threshold_of(NewWhaleStep(threshold=None, proportion=0.4), top1, voted)
    assert ((top1 < t) & ~voted).sum() == 2  # 4 of 10 in all
    assert threshold_of(NewWhaleStep(threshold=None, proportion=0.1), top1, voted) <= top1.min()  # the vote did it


# --------------------------------------------------------------------------- choosing a threshold
def random_table(rng, n):
    scores = -np.sort(-rng.integers(0, 12, (n, 5)) / 11, axis=1).astype(np.float32)  # ties
    ap = np.array([0, 1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])[rng.integers(0, 6, (n, POSITIONS))]
    cap = rng.choice([0, 1, 2, 5, 5, 5, 5], n)
    return PositionTable(ap, scores, cap)


def brute_force(table, rows, grid):
    """MAP@5 of every grid threshold on `rows`, by definition (positions counted, capped by the vote)."""
    out = []
    for t in grid:
        at = np.minimum((table.scores[rows] >= np.float32(t)).sum(axis=1), table.cap[rows])
        out.append(np.rint(60 * table.marks[rows, np.minimum(at, 5)]).sum())
    return np.array(out)


def fine_grid(table):
    values = np.unique(table.scores)
    return np.concatenate([[values.max() + 1], values, (values[1:] + values[:-1]) / 2, [values.min() - 1]])


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_is_exact(seed):
    rng = np.random.default_rng(seed)
    table = random_table(rng, 40)
    t, value = best_threshold(table)
    grid = fine_grid(table)
    best = brute_force(table, np.arange(40), grid).max()
    assert value == pytest.approx(best / 60 / 40, abs=1e-12)
    assert table.marks_at(t).mean() == pytest.approx(value, abs=1e-12)  # the threshold it names scores it
    lo, hi = 0.3, 0.6
    t_in, v_in = best_threshold(table, (lo, hi))
    assert lo <= t_in <= hi and v_in == pytest.approx(table.marks_at(t_in).mean(), abs=1e-12)
    inside = grid[(grid >= lo) & (grid <= hi)]
    assert v_in * 60 * 40 == pytest.approx(brute_force(table, np.arange(40), inside).max(), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_cross_validated_is_exact(seed):
    rng = np.random.default_rng(10 + seed)
    n, k = 50, 4
    table = random_table(rng, n)
    part = rng.integers(0, k, n)
    value, ap = cross_validated(table, part, k)
    grid = np.sort(fine_grid(table))[::-1]  # highest first: ties go to the highest threshold
    total = 0
    for p in range(k):
        fit = brute_force(table, np.flatnonzero(part != p), grid)
        t = grid[int(np.argmax(fit))]
        total += brute_force(table, np.flatnonzero(part == p), [t])[0]
        assert ap[part == p].sum() == pytest.approx(table.marks_at(t)[part == p].sum())
    assert value == pytest.approx(total / 60 / n, abs=1e-12) == pytest.approx(ap.mean())
    assert value <= best_threshold(table)[1] + 1e-12  # never above the in-sample optimum


@pytest.mark.parametrize("seed", range(4))
def test_cross_validated_by_share_is_exact(seed):
    """by_share: the other parts' best threshold, as the share of them it puts the unknown label first
    in, applied to this part as the same share of its images."""
    rng = np.random.default_rng(20 + seed)
    n, k = 60, 3
    table = random_table(rng, n)
    part = rng.integers(0, k, n)
    value, ap = cross_validated(table, part, k, by_share=True)
    grid = np.sort(fine_grid(table))[::-1]
    for p in range(k):
        rest, here = np.flatnonzero(part != p), np.flatnonzero(part == p)
        t = grid[int(np.argmax(brute_force(table, rest, grid)))]
        first = (table.cap[rest] == 0) | (table.scores[rest, 0] < np.float32(t))
        share = first.mean()
        sub = table.rows(here)
        t_here = sub.threshold_for_share(share)
        assert ap[here].tolist() == pytest.approx(sub.marks_at(t_here).tolist())
        # the share, applied: the images of this part with the unknown label first (the vote's at least)
        assert sub.share_at(t_here) <= max(share + 1 / len(here), (sub.cap == 0).mean()) + 1e-9
    share, best = best_share(table)
    assert best == pytest.approx(best_threshold(table)[1]) and 0 <= share <= 1
    assert table.share_at(best_threshold(table)[0]) == pytest.approx(share)


def test_a_chosen_threshold_sits_between_scores():
    table = PositionTable(np.array([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]]),
                          np.array([[0.8, 0.3, 0.2, 0.1, 0.0], [0.6, 0.5, 0.2, 0.1, 0.0]], dtype=np.float32),
                          np.array([5, 5]))
    t, value = best_threshold(table)  # image 0 wants the unknown first (t > 0.8), image 1 second (0.5 < t <= 0.6)
    assert value == pytest.approx(0.5) and t == pytest.approx(1.3)  # above 0.8: midway to one above it
    t2, _ = best_threshold(table, (0.0, 0.7))
    assert t2 == pytest.approx(0.55)  # midway between 0.6 and 0.5
