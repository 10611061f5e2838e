"""Prediction sets (kit/predset.py) as they come off a disk: cut short, empty."""
from __future__ import annotations

import numpy as np
import pytest

from kit.errors import KitError
from kit.predset import PredictionSet, load


def _saved(tmp_path):
    d = tmp_path / "m" / "preds" / "logit" / "test"
    PredictionSet(np.zeros((2, 3), np.float32), ["a.jpg", "b.jpg"], ["w1", "w2", "w3"],
                  {"kind": "logit", "model": "m", "split": "test", "fold": 0, "activation": "softmax"}).save(d)
    return d


@pytest.mark.parametrize("mmap", [True, False])
def test_an_empty_or_cut_scores_file_is_one_named_error(tmp_path, mmap):
    """A 0-byte scores.npy (a full disk, a copy stopped) was an EOFError traceback."""
    d = _saved(tmp_path)
    whole = (d / "scores.npy").read_bytes()
    for cut in (b"", whole[:-8]):
        (d / "scores.npy").write_bytes(cut)
        with pytest.raises(KitError, match=r"scores\.npy: not a plain \.npy array"):
            load(d, mmap=mmap)
