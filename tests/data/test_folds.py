"""Local validation folds follow the winners' scheme, scaled to the data, deterministic."""
import numpy as np
import pandas as pd
import pytest

from kit.data.folds import fold_truth, make_folds, read_folds, split, write_folds
from kit.errors import KitError


def label_frame(seed=0, n_ids=800):
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 1, 1, 2, 2, 3, 5, 12], n_ids)
    labels = [f"w_{i}" for i, s in enumerate(sizes) for _ in range(s)] + ["new_whale"] * 1200
    return pd.DataFrame({"image": [f"{i}.jpg" for i in range(len(labels))], "label": labels})


def test_scheme():
    train = label_frame()
    folds = make_folds(train, "new_whale", n_folds=3, seed=1)
    counts = train["label"].value_counts()
    assert list(folds.columns) == ["image", "label", "fold"] and len(folds) == len(train)
    for f in range(3):
        held = folds[folds.fold == f]
        ids = held[held.label != "new_whale"].label
        assert ids.is_unique  # one image per held-out identity
        assert (counts[ids] >= 2).all()  # so the identity is still in train
        share = (held.label == "new_whale").mean()
        assert 0.25 < share < 0.36  # 230 / (512 + 230) on the real data
    singles = set(counts[counts == 1].index)
    assert (folds[folds.label.isin(singles)].fold == -1).all()  # singletons always train
    held_ids = [set(folds[(folds.fold == f) & (folds.label != "new_whale")].label) for f in range(3)]
    assert not (held_ids[0] & held_ids[1]) and not (held_ids[1] & held_ids[2])  # disjoint folds


def test_real_scale_matches_the_winners():
    # 2,931 identities with >= 2 images (as in 2019): 512 held out per fold, 230 new_whale.
    sizes = [2] * 2931 + [1] * 2073
    labels = [f"w_{i}" for i, s in enumerate(sizes) for _ in range(s)] + ["new_whale"] * 9664
    train = pd.DataFrame({"image": [f"{i}.jpg" for i in range(len(labels))], "label": labels})
    held = make_folds(train, "new_whale", n_folds=5).query("fold == 0")
    assert (held.label != "new_whale").sum() == 512 and (held.label == "new_whale").sum() == 230


def test_the_unknown_share_of_a_fold_can_be_set():
    """Happywhale's test holds another share of new individuals than 2019's: each fold can match it."""
    train = label_frame()
    for share in (0.1, 0.5):
        folds = make_folds(train, "new_whale", n_folds=3, seed=1, unknown_share=share)
        for f in range(3):
            assert abs((folds[folds.fold == f].label == "new_whale").mean() - share) < 0.01
    assert (make_folds(train, "new_whale", unknown_share=0.0).query("fold >= 0").label != "new_whale").all()
    with pytest.raises(KitError, match=r"--unknown-share must be in \[0, 1\), got 1"):
        make_folds(train, "new_whale", unknown_share=1.0)


def test_without_unknown_rows_identities_seen_once_are_new_to_their_fold():
    """Happywhale's train.csv has no unknown rows: a fold's unknown images are the only images of
    identities seen once, which fold_truth answers as the unknown label; every other held-out image
    keeps its identity, found in the fold's training rows."""
    train = label_frame()
    train = train[train.label != "new_whale"].reset_index(drop=True)
    folds = make_folds(train, "new_whale", n_folds=3, seed=1)
    counts = train["label"].value_counts()
    for f in range(3):
        held = folds[folds.fold == f]
        truth = fold_truth(folds, held, "new_whale")
        new = [label for label, t in zip(held.label, truth) if t == "new_whale"]
        assert 0.28 < len(new) / len(held) < 0.34  # the 2019 share, 230 / 742
        assert (counts[new] == 1).all()  # seen once: held out, they are new to the fold
        kept = [label for label, t in zip(held.label, truth) if t != "new_whale"]
        assert (counts[kept] >= 2).all() and set(kept) <= set(folds[folds.fold != f].label)
    assert folds.equals(make_folds(train, "new_whale", n_folds=3, seed=1))  # deterministic
    # with unknown rows enough (2019), nothing changes: those rows are the fold's unknown images
    with_unknown = make_folds(label_frame(), "new_whale", n_folds=3, seed=1)
    held = with_unknown[with_unknown.fold == 0]
    assert fold_truth(with_unknown, held, "new_whale") == held.label.tolist()


def test_fold_truth_by_hand():
    folds = pd.DataFrame({"image": list("abcdefg"), "label": ["w1", "w1", "w2", "w3", "w3", "new_whale", "w4"],
                          "fold": [0, -1, 0, 0, 1, 1, 1]})
    # w1: another image always trains; w2: only in fold 0; w3: in folds 0 and 1 (out-of-fold: each is
    # known to the member that trained on the other fold); w4: only in fold 1
    assert fold_truth(folds, folds[folds.fold >= 0], "new_whale") == ["w1", "new_whale", "w3", "w3", "new_whale", "new_whale"]


def test_deterministic_and_seeded():
    train = label_frame()
    assert make_folds(train, "new_whale", seed=3).equals(make_folds(train, "new_whale", seed=3))
    assert not make_folds(train, "new_whale", seed=3).equals(make_folds(train, "new_whale", seed=4))


def test_roundtrip_and_split(tmp_path):
    train = label_frame()
    write_folds(tmp_path / "folds.csv", make_folds(train, "new_whale", n_folds=2))
    folds = read_folds(tmp_path / "folds.csv", train)
    tr, va = split(folds, 1)
    assert len(tr) + len(va) == len(train) and set(va.fold) == {1} and 1 not in set(tr.fold)
    with pytest.raises(KitError, match="fold 7 does not exist"):
        split(folds, 7)
    with pytest.raises(KitError, match="does not cover"):
        read_folds(tmp_path / "folds.csv", train.iloc[:-1])


def test_too_few_identities():
    train = pd.DataFrame({"image": ["a", "b"], "label": ["w_1", "new_whale"]})
    with pytest.raises(KitError, match="too few identities"):
        make_folds(train, "new_whale")
