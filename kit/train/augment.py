"""Training augmentations from the winners' recipes, on a (3, H, W) float image in 0..1.

Affine (scale, translate, shear, rotate), Gaussian blur, motion blur, add (brightness), multiply
(gain) and greyscale. They run after `load_image`'s crop and resize and before normalisation
(normalising is affine per channel, so this equals augmenting `load_image`'s output, with the
photometric steps in pixel units). Every random draw comes from the generator the caller passes:
one per sample, seeded from (recipe seed, epoch, position), so a run, its resume and its DDP
twin see the same pixels.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from kit.train.recipe import AugmentCfg

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def _motion_kernel(length: int, angle: float) -> torch.Tensor:
    """A normalised line of `length` pixels at `angle` degrees, as a (1, 1, L, L) kernel."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    t = np.linspace(-c, c, 4 * length)
    xs = np.clip(np.round(c + t * math.cos(math.radians(angle))).astype(int), 0, length - 1)
    ys = np.clip(np.round(c + t * math.sin(math.radians(angle))).astype(int), 0, length - 1)
    kernel[ys, xs] = 1.0
    return torch.from_numpy(kernel / kernel.sum())[None, None]


def augment(image: torch.Tensor, cfg: AugmentCfg, rng: np.random.Generator) -> torch.Tensor:
    """One random augmentation of `image` (3, H, W) float in 0..1; returns a new tensor in 0..1."""
    h, w = image.shape[1:]
    if rng.random() < cfg.probability:
        scale = float(rng.uniform(*cfg.scale))
        angle = float(rng.uniform(-cfg.rotate, cfg.rotate))
        shear = float(rng.uniform(-cfg.shear, cfg.shear))
        tx = int(round(rng.uniform(-cfg.translate, cfg.translate) * w))
        ty = int(round(rng.uniform(-cfg.translate, cfg.translate) * h))
        fill = [float(v) for v in image.mean(dim=(1, 2))]  # the image's mean colour, not black corners
        image = TF.affine(image, angle=angle, translate=[tx, ty], scale=scale, shear=[shear, 0.0],
                          interpolation=InterpolationMode.BILINEAR, fill=fill)
    if rng.random() < cfg.blur:
        sigma = float(rng.uniform(0.3, 1.2))
        k = 2 * math.ceil(2 * sigma) + 1
        image = TF.gaussian_blur(image, [k, k], [sigma, sigma])
    if rng.random() < cfg.motion_blur:
        length = int(rng.integers(3, max(4, min(h, w) // 12) + 1))
        kernel = _motion_kernel(length, float(rng.uniform(0, 180)))
        padded = F.pad(image[:, None], (length // 2,) * 4, mode="replicate")
        image = F.conv2d(padded, kernel)[:, 0, :h, :w]
    if cfg.greyscale and rng.random() < cfg.greyscale:
        image = (image * _LUMA).sum(0, keepdim=True).expand(3, h, w)
    gain = float(rng.uniform(*cfg.multiply))
    bias = float(rng.uniform(-cfg.add, cfg.add))
    return (image * gain + bias).clamp(0.0, 1.0)
