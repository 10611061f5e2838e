"""The one place the kit decodes an image file (training crops, hashes, the report's thumbnails, the
starter's survey): every failure of Pillow, a decompression bomb included, becomes one BadImage
naming the file.

A decompression bomb is a small file that decodes to an enormous image (a 20000 x 20000 PNG of
one colour is a few hundred KB and 1.2 GB decoded). An image above `max_pixels()` is refused
before its pixels are decoded: 100 million pixels by default (10000 x 10000; the 2019 and 2022
competitions' photos are at most a few tens of megapixels), or the number in the environment
variable WHALE_KIT_MAX_PIXELS for a competition with larger genuine photos.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator

from PIL import Image, UnidentifiedImageError

from kit.errors import KitError

MAX_PIXELS_ENV = "WHALE_KIT_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


class BadImage(KitError):
    """An image file that cannot be decoded (missing, corrupt, truncated, not an image, too large)."""


def max_pixels() -> int:
    """The largest image (width x height) the kit decodes: $WHALE_KIT_MAX_PIXELS, else 100 million."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise KitError(f"${MAX_PIXELS_ENV} is {os.environ[MAX_PIXELS_ENV]!r}; expected a whole number of pixels, e.g. 200000000")
    return int(raw)


def _too_large(path, size: str, limit: int) -> str:
    return (f"{path}: refused to decode: {size} pixels, over the limit of {limit:,} (a decompression bomb?); "
            f"if the image is genuine, raise ${MAX_PIXELS_ENV}")


def _reason(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """`with open_image(path) as im:` Pillow's lazily decoded image, its size checked against
    max_pixels(); any error of opening or decoding it inside the block is a BadImage naming `path`."""
    limit = max_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own check (an error past twice this) agrees with ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours is the error below
            with Image.open(path) as im:
                width, height = im.size
                if width * height > limit:
                    raise BadImage(_too_large(path, f"{width} x {height} = {width * height:,}", limit))
                yield im
    except Image.DecompressionBombError:  # Pillow's own check, past twice the limit: before the size is known
        raise BadImage(_too_large(path, f"more than {2 * limit:,}", limit)) from None
    except FileNotFoundError:
        raise BadImage(f"{path}: image not found") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        # SyntaxError: some of Pillow's plug-ins report a malformed header so
        raise BadImage(f"{path}: cannot read image ({_reason(e)})") from None


def decode(path: str | os.PathLike, mode: str) -> Image.Image:
    """The whole image, decoded and converted to `mode` ("L", "RGB"). Raises BadImage."""
    with open_image(path) as im:
        im.load()
        return im.convert(mode)
