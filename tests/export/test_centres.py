"""Identity centres and cosine scores on embeddings small enough to check by hand."""
import numpy as np

from kit.export.centres import cosine_scores, identity_centres, nearest_image_scores, scores_for
from kit.export.infer import Embedded, SplitPlan, prediction_sets


def unit(*xy):
    v = np.array(xy, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_centre_is_the_normalised_mean_of_unit_embeddings():
    # Lengths must not matter: (10, 0) and (0, 1) weigh the same.
    emb = np.array([[10.0, 0.0], [0.0, 1.0], [0.0, -3.0]])
    classes, centres = identity_centres(emb, ["b", "b", "a"])
    assert classes == ["a", "b"]
    np.testing.assert_allclose(centres, [[0, -1], unit(1, 1)], atol=1e-6)
    np.testing.assert_allclose(cosine_scores(np.array([[1.0, 0.0]]), centres), [[0.0, 2 ** -0.5]], atol=1e-6)


def test_outliers_are_trimmed_for_identities_with_many_images():
    good = [unit(1, 0.1 * s) for s in (-1, -0.5, 0, 0.5, 1)]
    outlier = unit(0, 1)  # a mislabelled photo
    many = np.array(good + [outlier])
    _, trimmed = identity_centres(many, ["w"] * 6, trim=0.2, trim_min=5)
    _, kept = identity_centres(many, ["w"] * 6, trim=0.0)
    np.testing.assert_allclose(trimmed[0], [1, 0], atol=1e-6)  # floor(0.2 * 6) = 1 image dropped
    assert kept[0, 1] > 0.1  # untrimmed: pulled towards the outlier
    # An identity with fewer than trim_min images keeps all of them.
    few = np.array(good[:2] + [outlier])
    _, c = identity_centres(few, ["v"] * 3, trim=0.2, trim_min=5)
    np.testing.assert_allclose(c[0], unit(*(np.array(good[:2]).sum(0) + outlier)), atol=1e-6)


def test_trimming_is_per_identity_whatever_the_gallery_order():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 8))
    labels = [f"w{i % 4}" for i in range(40)]
    perm = rng.permutation(40)
    a = identity_centres(emb, labels)
    b = identity_centres(emb[perm], [labels[i] for i in perm])
    assert a[0] == b[0]
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_nearest_image_takes_the_best_image_of_each_identity():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    classes, s = nearest_image_scores(np.array([[0.0, 1.0], [1.0, 0.0]]), gallery, ["x", "x", "y"])
    assert classes == ["x", "y"]
    np.testing.assert_allclose(s, [[1.0, 0.0], [1.0, -1.0]], atol=1e-6)


def test_scores_for_orders_columns_and_marks_missing():
    s = np.array([[0.1, 0.2]], np.float32)
    np.testing.assert_allclose(scores_for(["b", "z", "a"], ["a", "b"], s), [[0.2, -1.0, 0.1]])


def _member_info(classes, flip_twins=False):
    class Info:
        name, activation, fold = "m", "softmax", 0
    info = Info()
    info.classes, info.flip_twins = tuple(classes), flip_twins
    return info


def test_a_gallery_identity_absent_from_training_gets_a_centre():
    """'new' joined the database after training: findable by cosine, never by logits."""
    gallery = {"g1": (1, 0, 0), "g2": (0.9, 0.1, 0), "g3": (0, 1, 0), "g4": (0, 0, 1)}
    labels = ["old1", "old1", "old2", "new"]
    queries = {"q1": (0, 0.1, 1), "q2": (1, 0, 0.1)}
    names = list(gallery) + list(queries)
    emb = np.array([*gallery.values(), *queries.values()], np.float32)
    e = Embedded(names, emb / np.linalg.norm(emb, axis=1, keepdims=True), None,
                 np.zeros((2, 2), np.float32), list(queries), provider="cpu")
    plan = SplitPlan("test", list(queries), list(gallery), labels, "all train")
    info = _member_info(["old1", "old2"])

    default = prediction_sets(e, info, [plan], tta=False)
    assert default["cosine", "test"].classes == default["logit", "test"].classes == ["old1", "old2"]

    extended = prediction_sets(e, info, [plan], tta=False, new_identities=True)["cosine", "test"]
    assert extended.classes == ["old1", "old2", "new"] and extended.meta["new_identities"] == 1
    top = [extended.classes[i] for i in np.asarray(extended.scores).argmax(1)]
    assert top == ["new", "old1"]


def test_flip_twin_cosine_scores_the_mirror_against_mirrored_centres():
    # Mirrored photos embed elsewhere (the member learnt them as other identities).
    names = ["g1", "g2", "q"]
    orig = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    flip = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]], np.float32)
    e = Embedded(names, orig, flip, np.zeros((1, 2), np.float32), ["q"])
    plan = SplitPlan("val", ["q"], ["g1", "g2"], ["a", "b"], "")
    ps = prediction_sets(e, _member_info(["a", "b"], flip_twins=True), [plan], tta=True)["cosine", "val"]
    np.testing.assert_allclose(ps.scores, [[1.0, 0.0]], atol=1e-6)  # (1 + 1) / 2 and (0 + 0) / 2


def _brute_knn(pairs, labels, k):
    """Every (query, gallery image) cosine of every pair, the k best per query, each identity's best among them."""
    classes = sorted(set(labels))
    out = np.full((len(pairs[0][0]), len(classes)), -1.0)
    for i in range(len(pairs[0][0])):
        sims = []
        for q, g in pairs:
            qi = q[i] / np.linalg.norm(q[i])
            sims += [(float(qi @ (gj / np.linalg.norm(gj))), lab) for gj, lab in zip(g, labels)]
        for s, lab in sorted(sims, key=lambda t: -t[0])[:k]:
            out[i, classes.index(lab)] = max(out[i, classes.index(lab)], s)
    return classes, out


def test_knn_against_brute_force_mirrored_gallery_included():
    from kit.export.centres import knn_scores

    rng = np.random.default_rng(0)
    q, qf = rng.normal(size=(7, 6)), rng.normal(size=(7, 6))
    g, gf = rng.normal(size=(15, 6)), rng.normal(size=(15, 6))
    labels = list("aabbbcdddeeefgh")
    for k in (1, 4, 30, 100):
        for pairs in ([(q, g)], [(q, g), (qf, gf)]):
            classes, got = knn_scores(pairs, labels, k)
            want_classes, want = _brute_knn(pairs, labels, k)
            assert classes == want_classes
            np.testing.assert_allclose(got, want, atol=1e-6)
    assert (knn_scores([(q, g)], labels, 1)[1] > -1).sum(axis=1).tolist() == [1] * 7  # one neighbour: one identity


def test_the_knn_view_in_the_prediction_sets():
    names = ["g1", "g2", "g3", "q"]
    orig = np.array([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [1, 0.2, 0]], np.float32)
    flip = np.array([[0, 0, 1], [0, 1, 0], [0, 0.5, 1], [0, 0.2, 1]], np.float32)
    e = Embedded(names, orig, flip, np.zeros((1, 2), np.float32), ["q"])
    plan = SplitPlan("test", ["q"], ["g1", "g2", "g3"], ["a", "b", "a"], "")
    sets = prediction_sets(e, _member_info(["a", "b"], flip_twins=True), [plan], tta=True, knn=2)
    ps = sets["knn", "test"]
    assert ps.meta["kind"] == "cosine" and ps.meta["knn"] == 2 and ps.classes == ["a", "b"]
    _, want = _brute_knn([(orig[3:], orig[:3]), (flip[3:], flip[:3])], ["a", "b", "a"], 2)
    np.testing.assert_allclose(ps.scores, want, atol=1e-6)
    assert ("knn", "test") not in prediction_sets(e, _member_info(["a", "b"], flip_twins=True), [plan], tta=True)
