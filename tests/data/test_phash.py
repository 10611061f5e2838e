"""phash equals imagehash's bit for bit: real photos in every mode, flat and symmetric images."""
import subprocess
import sys
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from kit.errors import KitError
from kit.data.phash import (hash_pixels, phash_file, phash_files, phash_image, read_hashes,
                            write_directory_hashes, write_hashes)

skdata = pytest.importorskip("skimage.data")
SAMPLES = Path(skdata.data_dir)
# photos shipped inside scikit-image's wheel (no download): colour, greyscale, RGBA, palette, JPEG
PHOTOS = [n for n in ("astronaut.png", "camera.png", "coffee.png", "chelsea.png", "logo.png", "rocket.jpg",
                      "retina.jpg", "no_time_for_that_tiny.gif", "chessboard_GRAY.png", "text.png")
          if (SAMPLES / n).is_file()]
MODES = ("L", "RGB", "RGBA", "P", "CMYK")


def reference(path) -> str:
    return str(imagehash.phash(Image.open(path)))


def test_samples_are_there():
    assert len(PHOTOS) >= 6, f"scikit-image sample images missing from {SAMPLES}"


@pytest.mark.parametrize("name", PHOTOS)
def test_sample_photos_as_shipped(name):
    assert phash_file(SAMPLES / name) == reference(SAMPLES / name)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode(tmp_path, mode):
    for name in PHOTOS[:6]:
        with Image.open(SAMPLES / name) as im:
            converted = im.convert(mode)
        path = tmp_path / f"{Path(name).stem}.{'jpg' if mode == 'CMYK' else 'png'}"
        converted.save(path)
        with Image.open(path) as check:
            assert check.mode == mode
        assert phash_file(path) == reference(path), (name, mode)
        assert phash_image(converted) == str(imagehash.phash(converted)), (name, mode)


@pytest.mark.parametrize("mode", MODES + ("1", "I", "F"))
@pytest.mark.parametrize("value", [0, 1, 128, 255])
def test_flat_images(mode, value):
    # every AC coefficient is exactly 0: the bits are decided by how the DCT rounds
    im = Image.new("L", (37, 23), value).convert(mode)
    assert phash_image(im) == str(imagehash.phash(im))


def test_random_symmetric_and_stepped_images():
    rng = np.random.default_rng(0)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        if i % 3 == 1:  # mirror-symmetric: the odd coefficients vanish
            a = np.concatenate([a, a[:, ::-1]], axis=1)
        if i % 3 == 2:  # few grey levels: many ties at the median
            a = (rng.integers(0, 3, (h, w)) * 100).astype(np.uint8)
        im = Image.fromarray(a)
        assert phash_image(im) == str(imagehash.phash(im)), i


def test_hash_pixels_packs_bits_row_major_msb_first():
    # top-left DC only: exactly the first bit set
    px = np.full((32, 32), 9, dtype=np.uint8)
    assert hash_pixels(px) == 1 << 63


def test_many_files_in_parallel_equal_serial(tmp_path):
    paths = []
    for i, name in enumerate(PHOTOS[:4] * 5):
        with Image.open(SAMPLES / name) as im:
            small = im.convert("RGB").resize((64 + i, 48))
        small.save(tmp_path / f"{i:03d}.png")
        paths.append(tmp_path / f"{i:03d}.png")
    serial = phash_files(paths, workers=1)
    assert phash_files(paths, workers=2) == serial
    assert serial == [reference(p) for p in paths]


def test_fast_mode_is_close_and_labelled(tmp_path):
    jpegs = [SAMPLES / n for n in PHOTOS if n.endswith(".jpg")]
    for path in jpegs:
        fast, exact = phash_file(path, fast=True), phash_file(path)
        assert len(fast) == 16
        assert bin(int(fast, 16) ^ int(exact, 16)).count("1") <= 16
    # non-JPEG files have no draft mode: fast equals exact
    assert phash_file(SAMPLES / "camera.png", fast=True) == phash_file(SAMPLES / "camera.png")


def test_unreadable_image_is_a_kit_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(KitError, match="bad.jpg"):
        phash_file(bad)
    with pytest.raises(KitError, match="not found"):
        phash_file(tmp_path / "absent.jpg")


def test_write_and_read_hashes(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, name in enumerate(PHOTOS[:3]):
        with Image.open(SAMPLES / name) as im:
            im.convert("RGB").save(images / f"{i}.jpg")
    (images / "notes.txt").write_text("ignored")
    out = write_directory_hashes(images, tmp_path / "h.csv", workers=1)
    table = read_hashes(out)
    assert sorted(table) == ["0.jpg", "1.jpg", "2.jpg"]
    assert f"{table['1.jpg']:016x}" == reference(images / "1.jpg")

    (tmp_path / "bad.csv").write_text("Image,phash\na.jpg,12345\n")
    with pytest.raises(KitError, match="bad.csv.*row 2.*16 hex digits"):
        read_hashes(tmp_path / "bad.csv")


def test_write_hashes_for_a_competition(tmp_path):
    root = tmp_path / "comp"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    with Image.open(SAMPLES / PHOTOS[0]) as im:
        im.convert("RGB").resize((80, 60)).save(root / "train" / "a.jpg")
        im.convert("L").resize((60, 80)).save(root / "test" / "b.jpg")
    (root / "train.csv").write_text("Image,Id\na.jpg,w_1\n")
    (root / "sample_submission.csv").write_text("Image,Id\nb.jpg,new_whale\n")
    out = write_hashes(root)
    assert out == root / "hashes.csv"
    table = read_hashes(out)
    assert set(table) == {"a.jpg", "b.jpg"}
    assert f"{table['b.jpg']:016x}" == reference(root / "test" / "b.jpg")


def test_script(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    with Image.open(SAMPLES / PHOTOS[0]) as im:
        im.convert("RGB").resize((50, 40)).save(images / "x.png")
    ok = subprocess.run([sys.executable, "scripts/phash.py", str(images), "--out", str(tmp_path / "h.csv")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "h.csv").read_text().splitlines()[1] == f"x.png,{reference(images / 'x.png')}"
    bad = subprocess.run([sys.executable, "scripts/phash.py", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.csv")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nowhere" in bad.stderr
    assert not (tmp_path / "o.csv").exists()
