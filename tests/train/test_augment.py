"""Batched augmentation: shapes and ranges, one image's pixels from its seed alone, and the same
effect sizes as the per-image torchvision pipeline it replaced (kept below as the reference)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from kit.data.crops import CropSpec, centre
from kit.train.augment import augment_batch, draw, norm_tensors, params, plain_batch
from kit.train.recipe import AugmentCfg

SPEC = CropSpec((48, 96), 3, False, 0.0)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def smooth_crops(n: int, seed: int = 0) -> np.ndarray:
    """(n, Hc, Wc, 3) uint8: blurred noise with edges and texture, like a photo at this size."""
    rng = np.random.default_rng(seed)
    hc, wc, _ = SPEC.shape
    x = torch.from_numpy(rng.random((n, 3, hc // 4, wc // 4)).astype(np.float32))
    x = F.interpolate(x, size=(hc, wc), mode="bicubic", align_corners=False)
    x = x + 0.15 * torch.from_numpy(rng.standard_normal((n, 3, hc, wc)).astype(np.float32))
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()


def reference(image: torch.Tensor, cfg: AugmentCfg, rng: np.random.Generator) -> torch.Tensor:
    """The per-image augmentation of earlier releases, on a (3, H, W) float image in 0..1."""
    h, w = image.shape[1:]
    if rng.random() < cfg.probability:
        scale = float(rng.uniform(*cfg.scale))
        angle = float(rng.uniform(-cfg.rotate, cfg.rotate))
        shear = float(rng.uniform(-cfg.shear, cfg.shear))
        tx = int(round(rng.uniform(-cfg.translate, cfg.translate) * w))
        ty = int(round(rng.uniform(-cfg.translate, cfg.translate) * h))
        fill = [float(v) for v in image.mean(dim=(1, 2))]
        image = TF.affine(image, angle=angle, translate=[tx, ty], scale=scale, shear=[shear, 0.0],
                          interpolation=InterpolationMode.BILINEAR, fill=fill)
    if rng.random() < cfg.blur:
        sigma = float(rng.uniform(0.3, 1.2))
        k = 2 * math.ceil(2 * sigma) + 1
        image = TF.gaussian_blur(image, [k, k], [sigma, sigma])
    if rng.random() < cfg.motion_blur:
        length = int(rng.integers(3, max(4, min(h, w) // 12) + 1))
        kernel = np.zeros((length, length), np.float32)
        c = (length - 1) / 2
        t = np.linspace(-c, c, 4 * length)
        a = float(rng.uniform(0, 180))
        xs = np.clip(np.round(c + t * math.cos(math.radians(a))).astype(int), 0, length - 1)
        ys = np.clip(np.round(c + t * math.sin(math.radians(a))).astype(int), 0, length - 1)
        kernel[ys, xs] = 1.0
        kernel = torch.from_numpy(kernel / kernel.sum())[None, None]
        image = F.conv2d(F.pad(image[:, None], (length // 2,) * 4, mode="replicate"), kernel)[:, 0, :h, :w]
    if cfg.greyscale and rng.random() < cfg.greyscale:
        image = (image * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True).expand(3, h, w)
    gain = float(rng.uniform(*cfg.multiply))
    bias = float(rng.uniform(-cfg.add, cfg.add))
    return (image * gain + bias).clamp(0.0, 1.0)


def batched(pixels: np.ndarray, cfg: AugmentCfg, seeds, flips=None) -> torch.Tensor:
    flips = np.zeros(len(seeds), bool) if flips is None else flips
    p = params(draw(cfg, np.asarray(seeds), flips, SPEC.size), SPEC)
    x = augment_batch(torch.from_numpy(pixels), p, SPEC, *norm_tensors(MEAN, STD, torch.device("cpu")))
    return x * 0.25 + 0.5  # back to 0..1


def test_shapes_ranges_and_no_augmentation_is_the_centre():
    pixels = smooth_crops(6)
    out = batched(pixels, AugmentCfg(), range(6))
    assert out.shape == (6, 3, 48, 96) and out.dtype == torch.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    off = AugmentCfg(probability=0, blur=0, motion_blur=0, greyscale=0, add=0, multiply=(1, 1))
    plain = plain_batch(torch.from_numpy(np.ascontiguousarray(centre(pixels, SPEC))),
                        *norm_tensors(MEAN, STD, torch.device("cpu"))) * 0.25 + 0.5
    assert torch.allclose(batched(pixels, off, range(6)), plain, atol=1e-5)
    mirrored = batched(pixels, off, range(6), flips=np.ones(6, bool))
    assert torch.allclose(mirrored, plain.flip(-1), atol=1e-5)


def test_an_image_depends_on_its_seed_alone():
    pixels = smooth_crops(8)
    cfg = AugmentCfg(blur=0.5, motion_blur=0.5)
    seeds = np.arange(100, 108)
    whole = batched(pixels, cfg, seeds)
    again = batched(pixels, cfg, seeds)
    assert torch.equal(whole, again)
    order = [5, 2, 7]  # other companions, other positions: the same pixels
    part = batched(pixels[order], cfg, seeds[order])
    assert torch.allclose(part, whole[order], atol=1e-5)
    assert not torch.allclose(batched(pixels, cfg, seeds + 1), whole, atol=1e-3)


@pytest.mark.parametrize("part, cfg", [
    ("affine", AugmentCfg(probability=1, blur=0, motion_blur=0, greyscale=0, add=0, multiply=(1, 1))),
    ("blur", AugmentCfg(probability=0, blur=1, motion_blur=0, greyscale=0, add=0, multiply=(1, 1))),
    ("motion blur", AugmentCfg(probability=0, blur=0, motion_blur=1, greyscale=0, add=0, multiply=(1, 1))),
    ("greyscale", AugmentCfg(probability=0, blur=0, motion_blur=0, greyscale=1, add=0, multiply=(1, 1))),
    ("add and multiply", AugmentCfg(probability=0, blur=0, motion_blur=0, greyscale=0)),
    ("everything", AugmentCfg()),
])
def test_effects_match_the_per_image_pipeline(part, cfg):
    """Mean absolute change per image, and the spread of it, within 15% of the reference's.

    The reference sees the network's view only (its affine fills the corners with the mean
    colour); the batched one samples the room around it, here all photo. Same seeds, so the
    same parameters; sign conventions and sub-pixel shifts may differ, the sizes may not."""
    n = 160
    pixels = smooth_crops(n, seed=1)
    view = torch.from_numpy(np.ascontiguousarray(centre(pixels, SPEC))).permute(0, 3, 1, 2).float() / 255
    seeds = np.arange(n) * 7919
    ref = torch.stack([reference(view[i], cfg, np.random.default_rng(int(s))) for i, s in enumerate(seeds)])
    new = batched(pixels, cfg, seeds)
    ref_change = (ref - view).abs().mean((1, 2, 3))
    new_change = (new - view).abs().mean((1, 2, 3))
    assert new_change.mean() == pytest.approx(float(ref_change.mean()), rel=0.15)
    assert new_change.std() == pytest.approx(float(ref_change.std()), rel=0.25)
    assert new.mean() == pytest.approx(float(ref.mean()), abs=0.01)
