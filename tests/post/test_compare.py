"""Paired bootstrap intervals: equal to a slow one-resample-at-a-time reference, seeded, paired."""
import numpy as np
import pytest

from kit.post.compare import Gain, paired_gain, paired_gains, resampled_means


def slow_interval(a, b, resamples, seed, level=0.95):
    """One resample at a time: n indices with replacement, the mean difference, then percentiles."""
    rng = np.random.default_rng(seed)
    d = np.asarray(a, float) - np.asarray(b, float)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(resamples)]
    tail = (1 - level) / 2 * 100
    return d.mean(), np.percentile(means, tail), np.percentile(means, 100 - tail)


@pytest.mark.parametrize("n", [1, 7, 628, 5000])
def test_equals_the_slow_reference(n):
    rng = np.random.default_rng(n)
    ap = np.array([0, 1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    a, b = ap[rng.integers(0, 6, n)], ap[rng.integers(0, 6, n)]
    g = paired_gain(a, b, resamples=700, seed=3)
    value, low, high = slow_interval(a, b, 700, 3)
    assert (g.value, g.low, g.high, g.n) == pytest.approx((value, low, high, n), abs=1e-12)


def test_several_comparisons_share_the_resamples():
    rng = np.random.default_rng(0)
    x, y, z = rng.random((3, 300))
    first, second = paired_gains([(x, y), (x, z)], resamples=500, seed=1)
    assert first == paired_gain(x, y, resamples=500, seed=1) and second == paired_gain(x, z, resamples=500, seed=1)
    means = resampled_means(np.stack([x - y, x - z]), 500, 1)
    assert means.shape == (500, 2) and np.allclose(np.percentile(means[:, 1], 2.5), second.low)


def test_pairing_narrows_the_interval_and_reads_right():
    """B is A plus a small consistent gain on a few images: paired, the gain is significant even though
    the images' scores vary far more than the gain."""
    rng = np.random.default_rng(5)
    a = rng.choice([0, 1, 0.5, 0.2], 600)
    b = a.copy()
    b[:40] = np.minimum(b[:40] + 0.5, 1.0)
    g = paired_gain(b, a)
    assert g.significant and 0 < g.low < g.value < g.high
    assert "significant" in g.verdict() and "not significant" not in g.verdict()
    same = paired_gain(a, a)
    assert same == Gain(0.0, 0.0, 0.0, 600) and not same.significant and "holds 0" in same.verdict()
    assert str(g).startswith("+") and "[" in str(g)


def test_seeded_and_empty():
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 50))
    assert paired_gain(a, b, seed=7) == paired_gain(a, b, seed=7) != paired_gain(a, b, seed=8)
    empty = paired_gain(np.zeros(0), np.zeros(0))
    assert empty.n == 0 and not empty.significant
    with pytest.raises(ValueError):
        paired_gain(np.zeros(3), np.zeros(4))
