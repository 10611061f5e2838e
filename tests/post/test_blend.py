"""Blend kernels against plain float64 numpy, serial and parallel; top-k against a stable sort."""
import numpy as np
import pytest
from numba import njit

from kit.post import blend


@pytest.fixture(params=["serial", "parallel"])
def variant(request, monkeypatch):
    """Run each kernel test twice: the serial compilation, then the parallel one."""
    monkeypatch.setattr(blend, "PARALLEL_MIN_ELEMENTS", 10**12 if request.param == "serial" else 0)
    return request.param


def top_k(scores: np.ndarray, k: int):
    """Each row's k highest scores and their columns, descending, through the fused kernel alone."""
    n, c = scores.shape
    codes, values, _, _ = blend.blend_top_k([(np.ascontiguousarray(scores, dtype=np.float32), "none", 0, 0, 1.0, None)],
                                            [], n, c, k)
    return codes, values


def logits(rng, n=37, c=53, scale=4.0):
    return (rng.standard_normal((n, c)) * scale).astype(np.float32)


@njit
def exp32_array(x):
    """The kernels' exp32 over an array, to compare with np.exp."""
    out = np.empty_like(x)
    flat, res = x.ravel(), out.ravel()
    for i in range(flat.size):
        res[i] = blend.exp32(flat[i])
    return out


def test_exp32_against_numpy():
    x = np.concatenate([np.linspace(-100, 100, 20001), [0.0, -87.0, 88.0, 1e-8, -1e-8]]).astype(np.float32)
    got = exp32_array(x).astype(np.float64)
    ref = np.exp(np.clip(x.astype(np.float64), -87, 88))
    assert np.all(np.abs(got - ref) <= 3e-7 * ref)
    assert np.isfinite(got).all() and (got > 0).all()


def slow_softmax(x, t):
    z = x.astype(np.float64) / t
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def blended(parts, ranked=(), n=None, c=None, k=3):
    x0 = parts[0][0] if parts else None
    n = n if n is not None else x0.shape[0]
    c = c if c is not None else x0.shape[1]
    return blend.blend_top_k(parts, list(ranked), n, c, k, keep=True)[:3]


def test_softmax(variant):
    rng = np.random.default_rng(0)
    x = logits(rng)
    cache = blend.RowMax(len(x))
    for t in (0.3, 1.0, 7.0):
        for row_max in (None, cache):
            _, _, out = blended([(x, "softmax", 1 / t, 0, 0.6, row_max)])
            np.testing.assert_allclose(out, 0.6 * slow_softmax(x, t), rtol=2e-6, atol=1e-7)
    assert cache.known and np.array_equal(cache.values, x.max(axis=1))  # found once, then reused


def test_sigmoid_and_affine(variant):
    rng = np.random.default_rng(1)
    x = logits(rng, scale=30.0)  # saturating both ways: no overflow, no NaN
    _, _, out = blended([(x, "sigmoid", 1 / 2.0, 0, 0.5, None)])
    np.testing.assert_allclose(out, 0.5 * sigmoid(x.astype(np.float64) / 2.0), rtol=2e-6, atol=1e-7)
    c = np.tanh(x / 30).astype(np.float32)  # cosines
    _, _, out = blended([(c, "affine", 10.0, -5.0, 2.0, None)])
    np.testing.assert_allclose(out, 2.0 * sigmoid(10.0 * c.astype(np.float64) - 5.0), rtol=2e-6, atol=1e-7)


def test_weighted_sum_of_members_and_ranked(variant):
    rng = np.random.default_rng(2)
    x, y = logits(rng), logits(rng)
    codes = np.full((x.shape[0], 5), -1)
    codes[0] = [3, 1, -1, 0, 2]
    parts = [(x, "none", 0, 0, 0.5, None), (y, "softmax", 1.0, 0, 0.25, None), (y, "sigmoid", 1.0, 0, 0.0, None)]
    _, _, out = blended(parts, [(codes, 2.0, None)])
    expected = 0.5 * x.astype(np.float64) + 0.25 * slow_softmax(y, 1.0)
    expected[0, [3, 1, 0, 2]] += 2.0 * np.array([1, 1 / 2, 1 / 4, 1 / 5])
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-6)
    # ranked members only
    _, _, only, vote = blend.blend_top_k([], [(codes, 1.0, None)], x.shape[0], x.shape[1], 2, keep=True)
    assert only[0, [3, 1, 0, 2]].tolist() == pytest.approx([1, 1 / 2, 1 / 4, 1 / 5]) and only[1:].sum() == 0
    assert not vote.any()


def test_a_ranked_vote_for_the_unknown_label_and_rank_weights(variant):
    """Code C (one past the columns) is the unknown label: its rank weight goes to the vote."""
    n, c = 4, 6
    a = np.array([[c, 2, 1, -1, -1], [2, c, 3, 4, 5], [1, 2, 3, 4, 5], [c, -1, -1, -1, -1]])
    b = np.array([[2, c, 0, 1, 3], [c, 2, 0, 1, 3], [c, 1, 2, 3, 4], [2, 3, -1, -1, -1]])
    ranks = np.array([1.0, 0.4, 0.3, 0.2, 0.1])
    codes, values, out, vote = blend.blend_top_k([], [(a, 0.75, None), (b, 0.25, ranks)], n, c, 3, keep=True)
    rw = blend.RANK_WEIGHTS
    slow_vote, slow = np.zeros(n), np.zeros((n, c))
    for member, w, weights in ((a, 0.75, rw), (b, 0.25, ranks)):
        for i in range(n):
            for r, code in enumerate(member[i]):
                if code == c:
                    slow_vote[i] += w * weights[r]
                elif code >= 0:
                    slow[i, code] += w * weights[r]
    np.testing.assert_allclose(vote, slow_vote, rtol=1e-6)
    np.testing.assert_allclose(out, slow, rtol=1e-6)


def test_the_top_k_is_that_of_the_blend(variant):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, (60, 90)).astype(np.float32)  # ties
    y = rng.integers(0, 4, (60, 90)).astype(np.float32)
    codes, values, out = blended([(x, "none", 0, 0, 0.5, None), (y, "none", 0, 0, 0.5, None)], k=7)
    order = [sorted(range(out.shape[1]), key=lambda j: (-out[i, j], j))[:7] for i in range(len(out))]
    assert codes.tolist() == order and np.array_equal(values, np.take_along_axis(out, codes, axis=1))
    assert blend.blend_top_k([(x, "none", 0, 0, 1.0, None)], [], 60, 90, 7)[2] is None  # keep=False: no matrix


def test_reciprocal_rank_with_ties():
    x = np.array([[0.1, 0.9, 0.5, 0.9], [1, 1, 1, 1]], dtype=np.float32)
    # ranks: 0.9 (col 1) first, 0.9 (col 3) second, 0.5 third, 0.1 last; all-equal: column order
    np.testing.assert_allclose(blend.reciprocal_rank(x), [[1 / 4, 1, 1 / 3, 1 / 2], [1, 1 / 2, 1 / 3, 1 / 4]], rtol=1e-6)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, (20, 30)).astype(np.float32)
    slow = np.empty_like(y)
    for i, row in enumerate(y):
        for rank, j in enumerate(sorted(range(len(row)), key=lambda j: (-row[j], j))):
            slow[i, j] = 1 / (1 + rank)
    np.testing.assert_allclose(blend.reciprocal_rank(y), slow)


@pytest.mark.parametrize("k", [1, 5, 10, 80])
def test_top_k_against_a_stable_sort(variant, k):
    rng = np.random.default_rng(k)
    cases = [
        logits(rng, 40, 300),
        rng.integers(0, 3, (40, 300)).astype(np.float32),  # ties everywhere
        np.zeros((3, 7), np.float32),  # all tied: columns in order
        logits(rng, 5, 3),  # fewer columns than k
    ]
    for x in cases:
        codes, values = top_k(x, k)
        order = [sorted(range(x.shape[1]), key=lambda j: (-x[i, j], j))[:k] for i in range(len(x))]
        assert codes.tolist() == order
        assert np.array_equal(values, np.take_along_axis(x, codes, axis=1))


@pytest.mark.parametrize("width", [1, 4, 64])
def test_candidates_give_the_full_blend_exactly(width):
    """Candidates.top_k equals blend_top_k on the full rows, codes and values, for any weights: softmax
    probabilities (peaked and flat rows), reciprocal ranks with ties, a weight of 0."""
    rng = np.random.default_rng(width)
    n, c = 300, 500
    peaked = slow_softmax(logits(rng, n, c, scale=8.0), 1.0).astype(np.float32)
    flat = slow_softmax(logits(rng, n, c, scale=0.3), 1.0).astype(np.float32)
    ranks = blend.reciprocal_rank(rng.integers(0, 5, (n, c)).astype(np.float32))
    xs = [peaked, flat, ranks]
    cands = blend.Candidates(xs, width=width)
    for weights in ([1 / 3] * 3, [0.7, 0.0, 0.3], [0.05, 0.9, 0.05], [0.0, 0.0, 1.0]):
        codes, values = cands.top_k(weights, 10)
        parts = [(x, "none", 0, 0, w, None) for x, w in zip(xs, weights)]
        want_codes, want_values, _, _ = blend.blend_top_k(parts, [], n, c, 10)
        assert np.array_equal(codes, want_codes) and np.array_equal(values, want_values)
    if width == 64:
        assert cands.full_rows < n // 2  # most rows decided from their candidates
