"""Providers are reported as they really are; images arrive in order, in bounded batches."""
import threading
import time

import numpy as np
import pytest

from kit.errors import KitError
from kit.export.images import prefetch_batches
from kit.export.runtime import OnnxRunner, gpu_present, open_session


def test_the_provider_used_is_the_one_reported(twin_member):
    runner = OnnxRunner(twin_member / "model.onnx", "auto")
    assert runner.provider == ("cuda" if gpu_present() else "cpu")
    ort_name = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[runner.provider]
    assert runner.session.get_providers()[0] == ort_name


@pytest.mark.skipif(gpu_present(), reason="a GPU is here: CUDA does start")
def test_asking_for_cuda_without_a_gpu_is_an_error_not_a_silent_fallback(twin_member):
    with pytest.raises(KitError, match="CUDA provider was asked for"):
        open_session(twin_member / "model.onnx", "cuda")


def test_bad_provider_and_missing_file(tmp_path):
    with pytest.raises(KitError, match="provider must be one of"):
        open_session(tmp_path / "m.onnx", "tpu")
    with pytest.raises(KitError, match="not found"):
        open_session(tmp_path / "m.onnx", "cpu")


def test_prefetch_keeps_order_and_bounds_the_work_in_flight():
    started, lock = [], threading.Lock()

    def load(i):
        with lock:
            started.append(i)
        return np.full((1, 2), i, np.float32)

    batches = prefetch_batches(range(23), load, 5, workers=3, depth=1)
    first = next(batches)
    np.testing.assert_array_equal(first[:, 0, 0], range(5))
    time.sleep(0.05)
    assert len(started) <= 5 + 5 * 2  # the batch handed out, and at most depth + 1 batches ahead of it
    rest = list(batches)
    assert [len(b) for b in rest] == [5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([first, *rest])[:, 0, 0], range(23))


def test_a_failing_image_raises_at_its_batch():
    def load(i):
        if i == 7:
            raise KitError("im7.jpg: cannot read image")
        return np.zeros((1,), np.float32)

    batches = prefetch_batches(range(10), load, 4, workers=2)
    next(batches)
    with pytest.raises(KitError, match="im7"):
        next(batches)


def test_the_library_speaks_its_own_words_and_the_script_its_flags(tmp_path):
    """export_member said "--batch must be >= 1" to a library caller; scripts/export.py names its flag."""
    import subprocess
    import sys
    from pathlib import Path

    from kit.export.member import export_member

    with pytest.raises(KitError, match=r"^export_member: batch = 0 is out of range; expected an integer >= 1$"):
        export_member(tmp_path, batch=0)
    with pytest.raises(KitError, match=r"^export_member: knn = -1 is out of range"):
        export_member(tmp_path, knn=-1)
    with pytest.raises(KitError, match=r"^export_member: tta = 'flips' is not allowed; expected auto or flip or none; "
                                       r"did you mean 'flip'\?$"):
        export_member(tmp_path, tta="flips")
    with pytest.raises(KitError, match=r"^export_member: unknown key 'bacth' \(did you mean 'batch'\?\)"):
        export_member(tmp_path, bacth=8)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "scripts/export.py", str(tmp_path), "--batch", "0"], capture_output=True,
                         text=True, cwd=root)
    assert out.returncode == 2 and out.stderr.strip() == "error: --batch must be >= 1, got 0"
