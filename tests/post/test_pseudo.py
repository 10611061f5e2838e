"""Pseudo-labels: confident, uncontested top-1 identities only."""
import numpy as np

from kit.post.pseudo import frame, is_probability, select


def test_select_needs_agreement_and_confidence():
    top1 = np.array([0, 1, 2, 3])
    first = np.array([0, 9, 2, 3])  # image 1: the leak or new_whale put something else first
    confidence = np.array([0.97, 0.99, 0.96, 0.5])
    assert select(top1, first, confidence, 0.96).tolist() == [0]  # 0.96 is not above 0.96


def test_frame_columns_and_labels():
    rows = frame(["a.jpg", "b.jpg"], ["w_1", "w_2", "new_whale"], np.array([1, 0]), np.array([1, 2]),
                 np.array([0.99, 0.99]), 0.9)
    assert list(rows.columns) == ["Image", "Id"]
    assert rows.values.tolist() == [["a.jpg", "w_2"]]


def test_which_calibrations_are_probabilities():
    assert is_probability("softmax", "logit") and is_probability("affine", "cosine")
    assert is_probability("none", "prob") and not is_probability("none", "cosine")
    assert not is_probability("rank", "logit") and not is_probability("ranked", "submission")


def test_the_share_the_test_truth_confirms():
    import pandas as pd

    from kit.post.pseudo import right_share

    rows = pd.DataFrame({"Image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "Id": ["w_1", "w_2", "w_3", "w_4"]})
    truth = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "label": ["w_1", "w_9", "w_3", "new_whale"]})
    assert right_share(rows, truth) == 0.5
    assert right_share(rows, None) is None and right_share(rows.iloc[:0], truth) is None
