"""Training augmentations from the winners' recipes, applied to a whole batch on the model's device.

Input: cached crops (`kit.data.crops`), uint8 (B, Hc, Wc, C) with room around the network's view.
Output: the network input, (B, 3, H, W) float32, normalised. Per image:

- affine (with probability `probability`): scale, translate, shear and rotate about the centre, and
  the flip, as one 2 x 3 matrix; all of them sampled in one `grid_sample` from the room-padded crop,
  so a zoom-out or a shift shows the photo around the fluke. Where even the room ends, the crop's
  mean colour (not black corners);
- Gaussian blur (sigma 0.3-1.2) and linear motion blur, as grouped convolutions with one kernel
  per image;
- greyscale, multiply (gain) and add (brightness), in pixel units before normalisation.

Every random number of an image comes from its own generator, seeded by the epoch plan from
(recipe seed, epoch, position): the same pixels whatever the batch it lands in, the device, a
resume or a DDP split. `draw` makes the numbers (NumPy, on the CPU, a few microseconds an image),
`params` the tensors that travel with the pixels, `augment_batch` applies them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kit.data.crops import CropSpec
from kit.train.recipe import AugmentCfg

_LUMA = (0.299, 0.587, 0.114)
_MAX_SIGMA = 1.2


@dataclass
class Draws:
    """Each image's augmentation: (B,) arrays."""

    flip: np.ndarray  # bool: mirror left-right
    affine: np.ndarray  # bool: the geometric part applies
    scale: np.ndarray
    angle: np.ndarray  # degrees
    shear: np.ndarray  # degrees, along x
    tx: np.ndarray  # share of the width
    ty: np.ndarray  # share of the height
    sigma: np.ndarray  # Gaussian blur; 0: none
    motion: np.ndarray  # motion-blur length in pixels; 0: none
    motion_angle: np.ndarray  # degrees
    grey: np.ndarray  # bool
    gain: np.ndarray
    bias: np.ndarray

    def __len__(self) -> int:
        return len(self.flip)


def draw(cfg: AugmentCfg, seeds: np.ndarray, flips: np.ndarray, size: tuple[int, int]) -> Draws:
    """The augmentation of each image, from its seed alone (`size` (H, W) bounds the motion blur)."""
    n = len(seeds)
    z = np.zeros(n)
    d = Draws(np.asarray(flips, bool).copy(), np.zeros(n, bool), np.ones(n), z.copy(), z.copy(), z.copy(), z.copy(),
              z.copy(), np.zeros(n, np.int64), z.copy(), np.zeros(n, bool), np.ones(n), z.copy())
    longest = max(4, min(size) // 12)
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(int(seed))
        if rng.random() < cfg.probability:
            d.affine[i] = True
            d.scale[i] = rng.uniform(*cfg.scale)
            d.angle[i] = rng.uniform(-cfg.rotate, cfg.rotate)
            d.shear[i] = rng.uniform(-cfg.shear, cfg.shear)
            d.tx[i] = rng.uniform(-cfg.translate, cfg.translate)
            d.ty[i] = rng.uniform(-cfg.translate, cfg.translate)
        if rng.random() < cfg.blur:
            d.sigma[i] = rng.uniform(0.3, _MAX_SIGMA)
        if rng.random() < cfg.motion_blur:
            d.motion[i] = rng.integers(3, longest + 1)
            d.motion_angle[i] = rng.uniform(0, 180)
        if cfg.greyscale and rng.random() < cfg.greyscale:
            d.grey[i] = True
        d.gain[i] = rng.uniform(*cfg.multiply)
        d.bias[i] = rng.uniform(-cfg.add, cfg.add)
    return d


def _thetas(d: Draws, spec: CropSpec) -> torch.Tensor:
    """(B, 2, 3) affine_grid matrices: output coordinates of the (H, W) view -> the padded crop's."""
    (h, w), (hc, wc, _) = spec.size, spec.shape
    n = len(d)
    a = np.zeros((n, 2, 2))
    a[:, 0, 0] = a[:, 1, 1] = 1.0
    t = np.zeros((n, 2))
    k = np.flatnonzero(d.affine)
    if len(k):
        # forward, in pixels about the centre: out = scale * R(angle) * Shear(shear) * in + (tx w, ty h)
        th, sh = np.radians(d.angle[k]), np.radians(d.shear[k])
        cos, sin, tan = np.cos(th), np.sin(th), np.tan(sh)
        fwd = np.empty((len(k), 2, 2))
        fwd[:, 0, 0], fwd[:, 0, 1] = cos, cos * tan - sin
        fwd[:, 1, 0], fwd[:, 1, 1] = sin, sin * tan + cos
        fwd *= d.scale[k, None, None]
        inv = np.linalg.inv(fwd)
        a[k] = inv
        shift = np.stack([d.tx[k] * w, d.ty[k] * h], 1)
        t[k] = -np.einsum("nij,nj->ni", inv, shift)
    mirror = np.where(d.flip, -1.0, 1.0)  # the photo mirrored first: x of the source flips sign
    a[:, 0, :] *= mirror[:, None]
    t[:, 0] *= mirror
    # normalised coordinates: out u in [-1, 1] spans w pixels, in u' in [-1, 1] spans wc pixels
    out_half, in_half = np.array([w / 2, h / 2]), np.array([wc / 2, hc / 2])
    theta = np.empty((n, 2, 3))
    theta[:, :, :2] = a * out_half[None, None, :] / in_half[None, :, None]
    theta[:, :, 2] = t / in_half[None, :]
    return torch.from_numpy(theta.astype(np.float32))


def _gaussian_kernels(sigma: np.ndarray) -> torch.Tensor:
    """(n, 7) one-dimensional kernels, each the 2 * ceil(2 sigma) + 1 taps of its sigma, zero-padded."""
    half = math.ceil(2 * _MAX_SIGMA)
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    k[np.abs(x)[None, :] > np.ceil(2 * sigma)[:, None]] = 0.0
    return torch.from_numpy((k / k.sum(1, keepdims=True)).astype(np.float32))


def _motion_kernels(length: np.ndarray, angle: np.ndarray, size: int) -> torch.Tensor:
    """(n, size, size): a normalised line of `length` pixels at `angle` degrees, centred."""
    out = np.zeros((len(length), size, size), np.float32)
    for i, (n, a) in enumerate(zip(length, angle)):
        c = (n - 1) / 2
        t = np.linspace(-c, c, 4 * n)
        xs = np.clip(np.round(c + t * math.cos(math.radians(a))).astype(int), 0, n - 1)
        ys = np.clip(np.round(c + t * math.sin(math.radians(a))).astype(int), 0, n - 1)
        off = (size - n) // 2
        out[i, ys + off, xs + off] = 1.0
        out[i] /= out[i].sum()
    return torch.from_numpy(out)


def _grouped(x: torch.Tensor, kernels: torch.Tensor, pad: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Each image of x (n, C, H, W) convolved with its own kernel (n, kh, kw), every channel alike."""
    n, c, h, w = x.shape
    weight = kernels.to(x.dtype)[:, None].repeat_interleave(c, 0)  # (n C, 1, kh, kw)
    y = F.conv2d(F.pad(x.reshape(1, n * c, h, w), pad, mode=mode), weight, groups=n * c)
    return y[..., :h, :w].reshape(n, c, h, w)


@dataclass
class Params:
    """A batch's augmentation as tensors: made on the CPU (`params`), sent to the device with the
    pixels (pinned, non-blocking: nothing in a training step waits for the GPU)."""

    theta: torch.Tensor  # (B, 2, 3) affine_grid matrices
    gain: torch.Tensor  # (B, 1, 1, 1)
    bias: torch.Tensor  # (B, 1, 1, 1)
    grey: torch.Tensor  # (B, 1, 1, 1) bool
    any_grey: bool
    blur_rows: torch.Tensor  # (nb,) int64: the images to blur
    blur_kernels: torch.Tensor  # (nb, 7) one-dimensional Gaussians
    motion_rows: torch.Tensor  # (nm,) int64
    motion_kernels: torch.Tensor  # (nm, L, L)

    def tensors(self) -> list[torch.Tensor]:
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor)]

    def to(self, device: torch.device, pin: bool = False) -> "Params":
        def move(t: torch.Tensor) -> torch.Tensor:
            return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

        return Params(**{f.name: move(v) if isinstance(v, torch.Tensor) else v
                         for f in dataclasses.fields(self) for v in [getattr(self, f.name)]})


def params(d: Draws, spec: CropSpec) -> Params:
    """The tensors `augment_batch` applies, from each image's draws."""
    b = len(d)
    blur = np.flatnonzero(d.sigma > 0)
    motion = np.flatnonzero(d.motion > 0)
    size = (int(d.motion[motion].max()) | 1) if len(motion) else 1  # odd: one centre for every kernel
    column = lambda v, dtype=torch.float32: torch.from_numpy(np.asarray(v)).to(dtype).view(b, 1, 1, 1)  # noqa: E731
    return Params(
        theta=_thetas(d, spec), gain=column(d.gain), bias=column(d.bias), grey=column(d.grey, torch.bool),
        any_grey=bool(d.grey.any()),
        blur_rows=torch.from_numpy(blur), blur_kernels=_gaussian_kernels(d.sigma[blur]),
        motion_rows=torch.from_numpy(motion), motion_kernels=_motion_kernels(d.motion[motion], d.motion_angle[motion], size),
    )


def norm_tensors(mean, std, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as (1, 3, 1, 1) tensors on `device` (made once, not per batch)."""
    return (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device),
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(device))


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in 0..1, C = 1 or 3 -> (B, 3, H, W) normalised by `norm_tensors`."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x - mean) / std


def augment_batch(pixels: torch.Tensor, p: Params, spec: CropSpec, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Cached crops (B, Hc, Wc, C) uint8 and their Params, on the model's device -> the augmented
    network input (B, 3, H, W)."""
    h, w = spec.size
    b, c = pixels.shape[0], pixels.shape[-1]
    src = pixels.permute(0, 3, 1, 2).float().div_(255.0)
    # a coverage channel tells where the sample left the crop: those pixels get the mean colour
    src = torch.cat([src, torch.ones_like(src[:, :1])], 1)
    grid = F.affine_grid(p.theta, [b, c + 1, h, w], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    image, covered = out[:, :c], out[:, c:]
    ph, pw = spec.room
    fill = src[:, :c, ph:ph + h, pw:pw + w].mean((2, 3), keepdim=True)
    image = image + (1.0 - covered) * fill

    if p.blur_rows.numel():
        kern = p.blur_kernels
        half = kern.shape[1] // 2
        part = _grouped(image[p.blur_rows], kern[:, None, :], (half, half, 0, 0), "reflect")
        image[p.blur_rows] = _grouped(part, kern[:, :, None], (0, 0, half, half), "reflect")
    if p.motion_rows.numel():
        size = p.motion_kernels.shape[-1]
        image[p.motion_rows] = _grouped(image[p.motion_rows], p.motion_kernels, (size // 2,) * 4, "replicate")
    if c == 3 and p.any_grey:
        luma = (image[:, 0:1] * _LUMA[0] + image[:, 1:2] * _LUMA[1] + image[:, 2:3] * _LUMA[2]).expand(-1, 3, -1, -1)
        image = torch.where(p.grey, luma, image)
    return to_input((image * p.gain + p.bias).clamp_(0.0, 1.0), mean, std)


def plain_batch(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The network's view without augmentation: centre crops (B, H, W, C) uint8 -> (B, 3, H, W)."""
    return to_input(pixels.permute(0, 3, 1, 2).float().div_(255.0), mean, std)
