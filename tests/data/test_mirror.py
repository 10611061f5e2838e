"""Does a mirror keep an animal's identity (kit/data/mirror.py): a symmetric subject says `same`, an
asymmetric one `twin`, photos without identity in their thumbnails `none`; from arrays and from a
competition's image files alike."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data.competition import load_competition
from kit.data.mirror import measure, measure_flip, thumb_size, thumbnail

H, W = 16, 32


def subjects(symmetric: bool, n_ids: int = 80, per_id: int = 2, noise: float = 0.6, seed: int = 0):
    """Photos (n, H, W) of `n_ids` animals: each a smooth random pattern (its left half the mirror of
    its right when symmetric), shifted by a pixel or two, brighter or darker, with noise."""
    rng = np.random.default_rng(seed)
    photos, ids = [], []
    for k in range(n_ids):
        coarse = rng.normal(size=(H // 4, W // 4))
        pattern = np.kron(coarse, np.ones((4, 4)))
        if symmetric:
            pattern = (pattern + pattern[:, ::-1]) / 2
        for _ in range(per_id):
            dy, dx = rng.integers(-1, 2, 2)
            photo = np.roll(pattern, (dy, dx), axis=(0, 1)) * rng.uniform(0.7, 1.3) + rng.uniform(-1, 1)
            photos.append(photo + rng.normal(0, noise, pattern.shape))
            ids.append(k)
    return np.array(photos, np.float32), np.array(ids)


def as_thumbnails(photos: np.ndarray) -> np.ndarray:
    x = photos - photos.mean(axis=(1, 2), keepdims=True)
    return x / np.linalg.norm(x.reshape(len(x), -1), axis=1)[:, None, None]


def pairs_of(ids: np.ndarray):
    firsts = np.array([np.flatnonzero(ids == k)[:2] for k in np.unique(ids)])
    return firsts, np.roll(firsts[:, 1], 1)


@pytest.mark.parametrize("symmetric, expected", [(True, "same"), (False, "twin")])
def test_a_symmetric_subject_keeps_its_identity_in_a_mirror_and_an_asymmetric_one_does_not(symmetric, expected):
    photos, ids = subjects(symmetric)
    pairs, strangers = pairs_of(ids)
    m = measure(as_thumbnails(photos), pairs, strangers)
    assert m.choice == expected, m
    assert (m.retained > 0.8) if symmetric else (m.retained < 0.2)
    assert m.low <= m.retained <= m.high and m.pairs == 80
    assert (f"keeps {m.retained:.0%}" in m.why()) and ("symmetric" in m.why())


def test_photos_without_identity_tell_nothing():
    photos, ids = subjects(False, noise=50.0)  # the pattern drowned: strangers look as alike as twins
    pairs, strangers = pairs_of(ids)
    m = measure(as_thumbnails(photos), pairs, strangers)
    assert m.choice == "none" and "cannot tell" in m.why()


@pytest.mark.parametrize("symmetric, expected", [(True, "same"), (False, "twin")])
def test_measured_on_a_competition_s_photos(tmp_path, symmetric, expected):
    photos, ids = subjects(symmetric, n_ids=60, noise=0.3, seed=1)
    root = tmp_path / "comp"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    names = []
    for i, photo in enumerate(photos):  # 4x the thumbnail, 8-bit, as photos are
        pixels = np.clip(128 + 40 * np.kron(photo, np.ones((4, 4))), 0, 255).astype(np.uint8)
        names.append(f"p{i:04d}.png")
        Image.fromarray(pixels).save(root / "train" / names[-1])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "test" / "t.png")
    pd.DataFrame({"Image": names, "Id": [f"w_{k:03d}" for k in ids]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": ["t.png"], "Id": ["new_whale"]}).to_csv(root / "sample_submission.csv", index=False)
    m = measure_flip(load_competition(root), aspect=W / H, use_boxes=False)
    assert m.choice == expected, m


def test_thumbnails_take_out_brightness_and_contrast():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 200, (40, 80)).astype(np.uint8)
    a = thumbnail(Image.fromarray(pixels), thumb_size(2.0))
    b = thumbnail(Image.fromarray((pixels // 2 + 50).astype(np.uint8)), thumb_size(2.0))
    assert a.shape == (16, 32) and abs(float(a.mean())) < 1e-6 and np.isclose(np.linalg.norm(a), 1.0)
    assert float((a * b).sum()) > 0.99
