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


def test_the_gate_s_precision_is_a_hand_count():
    from kit.post.pseudo import gate, wilson

    # ten eligible validation images by confidence; the first 8 right, then two wrong; one not eligible
    confidence = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.90, 0.995])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], bool)
    eligible = np.r_[np.ones(10, bool), False]
    g = gate(confidence, eligible, correct, target=0.6)
    low8, _ = wilson(np.array([8]), np.array([8]))
    low10, _ = wilson(np.array([8]), np.array([10]))
    assert low8[0] >= 0.6 > low10[0]  # keeping all ten does not reach it; the first eight do (by hand: 8 of 8)
    lows = [wilson(np.array([min(k, 8)]), np.array([k]))[0][0] for k in range(1, 11)]
    k = max(i + 1 for i, low in enumerate(lows) if low >= 0.6)
    assert (g.kept, g.right) == (k, min(k, 8)) and 0.91 < g.threshold < confidence[k - 1]
    assert g.low == lows[k - 1] and "right" in g.line()
    none = gate(confidence, eligible, correct, target=0.99)  # 8 of 8 is not enough evidence for 0.99
    assert none.threshold is None and none.best[1] > 0 and "none written" in none.line()
    ties = gate(np.array([0.9, 0.9, 0.8]), np.ones(3, bool), np.array([1, 0, 1], bool), target=0.01)
    assert ties.kept in (2, 3)  # a cut keeps a whole tie group, never one of two equal confidences


def test_the_wilson_interval():
    from kit.post.pseudo import wilson

    low, high = wilson(np.array([0, 10, 5]), np.array([10, 10, 10]))
    np.testing.assert_allclose(low, [0.0, 0.7224, 0.2366], atol=1e-4)
    np.testing.assert_allclose(high, [0.2776, 1.0, 0.7634], atol=1e-4)


def test_a_cut_or_a_precision(tmp_path):
    """pseudo.threshold and pseudo.precision: one or the other; setting one drops the other."""
    from kit.post.recipe import load_recipe
    from kit.testing import make_label_competition, write_blend_recipe, write_predictions

    comp = make_label_competition(tmp_path / "data")
    member = write_predictions(tmp_path / "models" / "a", comp, "logit", signal=2.0, seed=1)
    path = write_blend_recipe(tmp_path / "blends" / "r.yaml", comp.root, [{"model": str(member), "view": "logit"}],
                              pseudo={"precision": 0.9})
    r = load_recipe(path)
    assert r.pseudo.precision == 0.9 and r.to_dict()["pseudo"] == {"precision": 0.9}
    assert r.with_params({"pseudo.threshold": 0.5}).pseudo.precision is None
    assert r.with_params({"pseudo.threshold": 0.5}).with_params({"pseudo.precision": 0.8}).to_dict()["pseudo"] == {"precision": 0.8}
