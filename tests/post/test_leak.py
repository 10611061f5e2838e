"""Leak matching against numpy's bit counting and a plain Python version of the rule."""
import numpy as np
import pytest

from kit.post.leak import hamming_counts, label_conflicts, leak_labels, match_hashes
from slow import hamming, leak_labels as slow_leak_labels


def hashes_with_near_duplicates(rng, n_query, n_ref):
    """Random 64-bit hashes; some queries copy a reference hash with 0-3 bits flipped."""
    ref = rng.integers(0, 2**63, n_ref, dtype=np.int64).view(np.uint64) * np.uint64(2) + rng.integers(0, 2, n_ref).astype(np.uint64)
    query = rng.integers(0, 2**63, n_query, dtype=np.int64).view(np.uint64)
    for i in rng.choice(n_query, n_query // 2, replace=False):
        h = int(ref[rng.integers(n_ref)])
        for b in rng.choice(64, int(rng.integers(0, 4)), replace=False):
            h ^= 1 << int(b)
        query[i] = np.uint64(h)
    ref[: n_ref // 10] = ref[n_ref // 10: 2 * (n_ref // 10)]  # exact duplicates inside the reference too
    return query, ref


def slow_pairs(query, ref, max_distance, upper=False):
    """Every pair by Python's own bit counting, (query, ref, distance) sorted by (query, distance, ref)."""
    out = []
    for i, q in enumerate(query.tolist()):
        for j, r in enumerate(ref.tolist()):
            if upper and j <= i:
                continue
            d = hamming(q, r)
            if d <= max_distance:
                out.append((i, d, j))
    return sorted(out)


def bit_count(x):
    """Set bits per uint64: np.bitwise_count (NumPy 2), or counted byte by byte (NumPy 1.26)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return np.unpackbits(x[..., None].view(np.uint8), axis=-1).sum(axis=-1)


def test_hamming_counts_against_numpy_bitwise_count():
    rng = np.random.default_rng(0)
    query, ref = hashes_with_near_duplicates(rng, 300, 700)
    dist = bit_count(query[:, None] ^ ref[None, :])
    for d in (0, 1, 3, 20, 32, 64):
        assert np.array_equal(hamming_counts(query, ref, d), (dist <= d).sum(axis=1))


@pytest.mark.parametrize("max_distance", [0, 2, 5])
def test_match_hashes_against_brute_force(max_distance):
    rng = np.random.default_rng(max_distance)
    query, ref = hashes_with_near_duplicates(rng, 80, 150)
    m = match_hashes(query, ref, max_distance)
    got = sorted((int(i), int(d), int(j)) for i, j, d in zip(m.query, m.index, m.distance))
    assert got == slow_pairs(query, ref, max_distance)
    for i in range(len(query)):  # each query's pairs: nearest first, then reference order
        idx, dist = m.of(i)
        assert list(zip(dist.tolist(), idx.tolist())) == sorted(zip(dist.tolist(), idx.tolist()))


def test_match_hashes_within_one_set_counts_each_pair_once():
    rng = np.random.default_rng(1)
    _, ref = hashes_with_near_duplicates(rng, 10, 120)
    m = match_hashes(ref, None, 3)
    got = sorted((int(i), int(d), int(j)) for i, j, d in zip(m.query, m.index, m.distance))
    assert got == slow_pairs(ref, ref, 3, upper=True)
    assert len(got) >= 12


def test_leak_labels_against_the_plain_rule():
    rng = np.random.default_rng(2)
    n_query, n_ref = 60, 400
    ref = rng.integers(0, 2**62, 40, dtype=np.int64).view(np.uint64)[rng.integers(0, 40, n_ref)]  # many duplicates
    query = np.concatenate([ref[rng.integers(0, n_ref, 50)], rng.integers(0, 2**62, 10, dtype=np.int64).view(np.uint64)])
    query ^= (rng.random(n_query) < 0.3).astype(np.uint64)  # some one bit away
    ref_labels = rng.integers(0, 12, n_ref)  # few labels: ties in distance and in count
    m = match_hashes(query, ref, 4)
    for d in (0, 1, 4):
        got = leak_labels(m, ref_labels, d)
        assert got.shape == (n_query, 5)
        for i in range(n_query):
            idx, dist = m.of(i)
            expected = slow_leak_labels([(int(ref_labels[j]), int(x)) for j, x in zip(idx, dist)], d)
            assert got[i][got[i] >= 0].tolist() == expected, (i, d)
    with pytest.raises(ValueError):
        leak_labels(m, ref_labels, 5)


def test_leak_labels_hand_made():
    ref = np.array([0b0, 0b0, 0b1, 0b11, 0b0111], dtype=np.uint64)
    labels = np.array([7, 7, 3, 5, 9])
    m = match_hashes(np.array([0], dtype=np.uint64), ref, 3)
    # distances: 0, 0, 1, 2, 3 -> label 7 (twice at 0), then 3, 5, 9
    assert leak_labels(m, labels, 3)[0].tolist() == [7, 3, 5, 9, -1]
    assert leak_labels(m, labels, 0)[0].tolist() == [7, -1, -1, -1, -1]
    # same distance: the label with more duplicates first, then the lower code
    ref2 = np.array([1, 2, 4, 8], dtype=np.uint64)
    m2 = match_hashes(np.array([0], dtype=np.uint64), ref2, 1)
    assert leak_labels(m2, np.array([6, 2, 6, 4]), 1)[0].tolist() == [6, 2, 4, -1, -1]


def test_label_conflicts():
    hashes = np.array([5, 5, 5, 100, 101, 7000], dtype=np.uint64)
    labels = np.array([1, 1, 2, 3, 4, 5])
    c = label_conflicts(hashes, labels, 1)
    assert c.tolist() == [[0, 2, 0], [1, 2, 0], [3, 4, 1]]
    assert label_conflicts(hashes, labels, 0).tolist() == [[0, 2, 0], [1, 2, 0]]
    assert label_conflicts(hashes[:2], labels[:2], 0).shape == (0, 3)
