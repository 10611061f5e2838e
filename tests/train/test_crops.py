"""The decoded-crop cache: built once, reused, brought up to date on change, bad images counted."""
import os
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data.competition import load_competition
from kit.data.crops import ROOM, BadImage, CropSpec, centre, crop, open_crops

SPEC = CropSpec((32, 64), 3, True, 0.05)


@pytest.fixture
def comp(new_competition):
    return load_competition(new_competition(n_ids=3, per_id=2, n_unknown=1, n_test=2))


def built(comp, spec=SPEC, **kw):
    lines = []
    cache = open_crops(comp, spec, echo=lines.append, **kw)
    return cache, lines


def test_built_once_then_reused(comp):
    cache, lines = built(comp)
    assert len(lines) == 1 and "9 images" in lines[0]
    assert cache.pixels.shape == (9, 32 + 2 * round(32 * ROOM), 64 + 2 * round(64 * ROOM), 3)
    assert cache.keys[0] == "train/tr0000.jpg" and cache.keys[-1] == "test/te0001.jpg"
    again, lines = built(comp)
    assert lines == [] and np.array_equal(again.pixels, cache.pixels)
    one_thread, _ = built(comp, cache_root=comp.root / "elsewhere", workers=1)
    assert np.array_equal(one_thread.pixels, cache.pixels)  # the thread pool writes the same bytes


def test_rows_are_the_crops_and_the_centre_is_the_network_view(comp):
    cache, _ = built(comp)
    for i in (0, 5, 8):
        path = comp.root / cache.keys[i]
        assert np.array_equal(cache.pixels[i], crop(path, (4, 4, 92, 44), SPEC))
    assert centre(cache.pixels[:2], SPEC).shape == (2, 32, 64, 3)


def test_a_changed_image_or_box_is_decoded_again_alone(comp):
    cache, _ = built(comp)
    before = np.array(cache.pixels)
    path = comp.root / "train" / "tr0001.jpg"
    Image.fromarray(np.full((48, 96, 3), 200, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    updated, lines = built(comp)
    assert lines and "1 changed image" in lines[0]
    assert np.all(centre(updated.pixels[1], SPEC) == 200)
    assert np.array_equal(np.delete(np.array(updated.pixels), 1, 0), np.delete(before, 1, 0))
    boxes = pd.read_csv(comp.root / "bounding_boxes.csv")
    boxes.loc[boxes.Image == "tr0002.jpg", ["x0", "x1"]] = [10, 60]
    boxes.to_csv(comp.root / "bounding_boxes.csv", index=False)
    _, lines = built(load_competition(comp.root))
    assert lines and "1 changed image" in lines[0]


def test_another_size_colour_or_image_list_is_another_cache(comp):
    cache, _ = built(comp)
    grey, lines = built(comp, CropSpec((16, 32), 1, True, 0.05))
    assert lines and grey.directory != cache.directory and grey.pixels.shape[-1] == 1
    (comp.root / "test" / "te0009.jpg").write_bytes((comp.root / "test" / "te0000.jpg").read_bytes())
    sub = pd.read_csv(comp.root / "sample_submission.csv")
    pd.concat([sub, pd.DataFrame({"Image": ["te0009.jpg"], "Id": ["new_whale"]})]).to_csv(
        comp.root / "sample_submission.csv", index=False)
    bigger, lines = built(load_competition(comp.root))
    assert lines and "10 images" in lines[0] and bigger.directory == cache.directory


def test_bad_images_are_zeros_counted_with_their_reason(comp):
    (comp.root / "train" / "tr0003.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    cache, lines = built(comp)
    assert "1 bad" in lines[0]
    assert cache.bad.tolist() == [False] * 3 + [True] + [False] * 5
    assert "tr0003.jpg: cannot read image" in cache.reasons["train/tr0003.jpg"]
    assert not cache.pixels[3].any()
    with pytest.raises(BadImage, match="tr0003.jpg"):
        crop(comp.root / "train" / "tr0003.jpg", None, SPEC)
    again, lines = built(comp)
    assert lines == [] and again.bad[3]  # remembered, not decoded again


def test_two_processes_wanting_the_cache_build_it_once(comp):
    """Folds trained side by side ask at the same moment: the lock lets one build, the other reuse."""
    heard: list[str] = []
    threads = [threading.Thread(target=lambda: heard.extend(built(comp)[1])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(heard) == 1


def test_room_reaches_past_the_photo_with_its_mean_colour(tmp_path):
    Image.fromarray(np.full((40, 80, 3), 90, np.uint8)).save(tmp_path / "flat.png")
    pixels = crop(tmp_path / "flat.png", None, SPEC)  # the whole photo: its room is all outside
    assert np.all(pixels == 90)
    assert np.all(centre(pixels, SPEC) == 90)


def test_export_reads_what_it_would_decode(comp, tiny_recipe):
    """Export's images from the cache are exactly load_image's; a bad one is named, and is the
    blank row training skipped (a test image still needs its row of scores)."""
    from kit.export.images import ImageSource
    from kit.train.model import member_info

    info = member_info(tiny_recipe(comp.root), ["w_0000"], (0.5,) * 3, (0.25,) * 3, True)
    cached = ImageSource(comp, info, open_crops(comp, CropSpec.of(info)))
    decoded = ImageSource(comp, info)
    for name in ("tr0000.jpg", "te0001.jpg"):
        assert np.array_equal(cached(name), decoded(name))
    (comp.root / "test" / "te0000.jpg").write_bytes(b"broken")
    with pytest.raises(BadImage, match="te0000.jpg: cannot read image"):
        decoded("te0000.jpg")
    source = ImageSource(comp, info, open_crops(comp, CropSpec.of(info)))
    assert list(source.unreadable()) == ["te0000.jpg"] and "cannot read image" in source.unreadable()["te0000.jpg"]
    blank = centre(np.zeros(CropSpec.of(info).shape, np.uint8), CropSpec.of(info))
    assert np.allclose(source("te0000.jpg"), (blank.transpose(2, 0, 1) / 255.0 - 0.5) / 0.25)
