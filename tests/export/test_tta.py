"""Flip TTA folds back to K identity columns (the 1st place's rule for flip twins)."""
import numpy as np

from kit.export.infer import embed
from kit.export.tta import fold_logits, hflip, merge_embeddings


def test_twin_fold_back_reads_the_flip_against_the_twin_block():
    # K = 2 identities; columns 2, 3 are their mirrored twins.
    orig = np.array([[1.0, 2.0, 10.0, 20.0]])
    flip = np.array([[3.0, 4.0, 30.0, 40.0]])
    out = fold_logits(orig, flip, flip_twins=True)
    np.testing.assert_allclose(out, [[(1 + 30) / 2, (2 + 40) / 2]])
    np.testing.assert_allclose(fold_logits(orig, None, flip_twins=True), [[1.0, 2.0]])


def test_plain_members_average_column_by_column():
    orig, flip = np.array([[1.0, 2.0]]), np.array([[3.0, 6.0]])
    np.testing.assert_allclose(fold_logits(orig, flip, flip_twins=False), [[2.0, 4.0]])


def test_hflip_mirrors_width_only():
    x = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    np.testing.assert_array_equal(hflip(x)[0, 0, 0], [3, 2, 1, 0])
    np.testing.assert_array_equal(hflip(hflip(x)), x)


def test_merged_embedding_is_the_unit_mean():
    e = merge_embeddings(np.array([[2.0, 0.0]]), np.array([[0.0, 5.0]]))
    np.testing.assert_allclose(e, [[2 ** -0.5, 2 ** -0.5]], rtol=1e-6)


def test_embed_runs_original_and_mirror_in_one_batch_and_folds():
    """A network that tells a mirrored image from the original: the fold-back must undo it."""
    images = {f"im{i}": np.full((3, 2, 4), float(i), np.float32) for i in range(5)}
    for i, a in enumerate(images.values()):
        a[..., 0] = 100.0 + i  # the left edge is marked; a mirrored image has it on the right

    seen = []

    def runner(x):
        seen.append(len(x))
        mirrored = x[:, 0, 0, -1] >= 100  # marker on the right: this input is a flip
        i = np.where(mirrored, x[:, 0, 0, -1], x[:, 0, 0, 0]) - 100
        k = 2
        logits = np.zeros((len(x), 2 * k), np.float32)
        own = np.stack([i, -i], 1)
        logits[~mirrored, :k] = own[~mirrored]  # an original scores in the own block...
        logits[mirrored, k:] = own[mirrored]  # ...its mirror in the twin block
        return logits, np.stack([i + 1.0, np.ones_like(i)], 1)

    out = embed(runner, list(images), images.__getitem__, flip_twins=True, logit_images=["im1", "im3"],
                batch=2, progress=False, workers=2)
    assert seen == [4, 4, 2]  # batches of 2 images, each with its mirror
    np.testing.assert_allclose(out.logits_of(["im1", "im3"]), [[1.0, -1.0], [3.0, -3.0]])
    assert out.embedding.shape == (5, 2) and out.embedding_flip.shape == (5, 2)
    np.testing.assert_allclose(np.linalg.norm(out.embedding, axis=1), 1.0, rtol=1e-6)
