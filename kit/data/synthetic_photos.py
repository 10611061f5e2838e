"""The synthetic competition's animals and photos (kit/data/synthetic.py plans the competition and
writes it; here each image is drawn). An animal is a fluke (or a dorsal fin) in a canonical frame,
drawn once per animal from its own generator; a photo poses it, puts it in water under sea and
sky, and varies light, lens, caption and JPEG quality, from the image's own generator, so the
bytes of a seed are the same whatever the number of workers."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Generator streams: each seeds its own generators, so adding draws to one never shifts another.
_PLAN, _ANIMAL, _PHOTO, _COPY, _SPECIES, _DATASETS = 0, 1, 2, 3, 4, 5

# Happywhale 2022's shape (`layout="happywhale"`): 51,033 train images of 15,587 individuals of 30
# species, the unknown label `new_individual`. The ten commonest species, by their share of the
# train images; each is drawn as a fluke or a dorsal fin of its own proportions and tone, and its
# test images are new animals more or less often than the others (`unknown`: a factor on the share).
@dataclass(frozen=True)
class Species:
    share: float
    shape: str  # fluke | fin
    unknown: float = 1.0
    height: tuple[float, float] = (0.4, 0.6)  # fin: apex above the base, canonical units
    falcate: tuple[float, float] = (1.4, 2.4)  # fin: how hooked the trailing edge is (1: straight)
    sweep: tuple[float, float] = (0.05, 0.25)  # fin: how far back the apex leans
    tone: tuple[float, float] = (0.2, 0.35)  # skin between the animal's black (0) and white (1)
    notches: tuple[int, int] = (1, 6)  # fin: nicks in the trailing edge, the animal's fingerprint


SPECIES = {
    "bottlenose_dolphin": Species(0.19, "fin", 1.0),
    "beluga": Species(0.15, "fin", 0.5, height=(0.08, 0.16), falcate=(1.0, 1.2), sweep=(-0.1, 0.1),
                      tone=(0.8, 0.92), notches=(0, 3)),
    "humpback_whale": Species(0.15, "fluke", 1.0),
    "blue_whale": Species(0.10, "fin", 1.6, height=(0.1, 0.2), falcate=(1.2, 2.0), tone=(0.35, 0.5), notches=(0, 3)),
    "false_killer_whale": Species(0.07, "fin", 0.8, height=(0.45, 0.65), falcate=(2.0, 3.0), sweep=(0.15, 0.35),
                                  tone=(0.06, 0.14)),
    "dusky_dolphin": Species(0.06, "fin", 1.2, height=(0.35, 0.5), tone=(0.3, 0.5)),
    "spinner_dolphin": Species(0.04, "fin", 1.4, height=(0.4, 0.55), falcate=(1.0, 1.4), tone=(0.25, 0.4)),
    "killer_whale": Species(0.04, "fin", 0.6, height=(0.7, 0.9), falcate=(1.0, 1.5), sweep=(0.0, 0.12),
                            tone=(0.04, 0.1)),
    "minke_whale": Species(0.04, "fin", 1.5, height=(0.15, 0.3), tone=(0.3, 0.45), notches=(0, 2)),
    "gray_whale": Species(0.03, "fluke", 1.3, tone=(0.3, 0.55)),
}

# AnimalCLEF 2025's three species (`layout="animalclef"`), one per dataset: its share of the gallery's
# animals and how often a query shows a new one. Apart from SPECIES, whose shares draw the happywhale
# layout. Drawn with the same two shapes (a lynx's spotted flank is no fin, but identities told apart
# by marks on an outline, some new to the gallery, are what the kit is tested on).
CLEF_SPECIES = {
    "lynx": Species(0.3, "fin", 1.0, height=(0.3, 0.5), falcate=(1.0, 1.5), tone=(0.45, 0.6), notches=(2, 6)),
    "salamander": Species(0.15, "fluke", 2.0, tone=(0.1, 0.2)),
    "loggerhead turtle": Species(0.55, "fluke", 0.6, tone=(0.35, 0.5)),
}


def species_look(name: str) -> Species:
    return SPECIES[name] if name in SPECIES else CLEF_SPECIES[name]

# --------------------------------------------------------------------------------------------
# Animals: a fluke outline and ventral pattern in a canonical frame, drawn once per animal.

TEX_W, TEX_H = 512, 256
UNIT = 236.0  # canonical pixels per fluke unit; a lobe spans one unit from the notch
ORIGIN = (256.0, 44.0)  # canonical pixel of the median notch's level line (u, v) = (0, 0)


@dataclass(frozen=True)
class _Animal:
    alpha: np.ndarray  # (TEX_H, TEX_W) float32 in [0, 1]: the fluke's silhouette
    mask: Image.Image  # the same as an L image, ready to warp
    pattern: Image.Image  # L: ventral pigmentation, 0 black .. 255 white, spots and old scars
    scars: tuple  # (birth, points, width, value): drawn on photos taken after `birth`
    dark: np.ndarray  # (3,) float32 skin colours
    white: np.ndarray
    v_base: float  # canonical v where the lobes meet the peduncle


def _noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A smooth random field: a (rows, cols) normal grid upsampled bicubically to size (w, h)."""
    small = rng.standard_normal((max(2, grid[0]), max(2, grid[1]))).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


def _trailing_edge(rng: np.random.Generator, a: np.ndarray) -> tuple[np.ndarray, dict]:
    """One lobe's trailing edge v(a), a in [0, 1] from the notch to the tip, and its shape."""
    tip = rng.uniform(-0.08, 0.04)  # the tip's height (negative: above the notch line)
    depth = rng.uniform(0.16, 0.34)  # how far the notch sits below the tip
    power = rng.uniform(1.2, 2.6)
    sag = rng.uniform(-0.04, 0.06)  # concave or convex lobe
    v = tip + depth * (1 - a) ** power + sag * np.sin(np.pi * a)
    for k in (1, 2, 3):
        v += rng.normal(0, 0.008 / k) * np.sin(2 * np.pi * k * a + rng.uniform(0, 2 * np.pi))
    # Scallops between serration points: the trailing edge is the fluke's fingerprint.
    n = int(rng.integers(12, 40))
    points = np.concatenate([[0.0], np.sort(rng.uniform(0.04, 0.99, n)), [1.0]])
    amp = rng.uniform(0.003, 0.016) * rng.lognormal(0, 0.5, n + 1)
    seg = np.clip(np.searchsorted(points, a, side="right") - 1, 0, n)
    frac = (a - points[seg]) / np.maximum(points[seg + 1] - points[seg], 1e-6)
    v += amp[seg] * np.sin(np.pi * np.clip(frac, 0, 1)) ** 0.6
    # Bites and nicks: notches cut deep into the edge.
    for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
        c, w, d = rng.uniform(0.1, 0.95), rng.uniform(0.015, 0.06), rng.uniform(0.015, 0.06)
        v += d * np.clip(1 - (np.abs(a - c) / w) ** 2, 0, None) ** rng.uniform(0.3, 1.0)
    curl = rng.uniform(0, 0.06) * np.clip((a - 0.8) / 0.2, 0, None) ** 2
    return v - curl, {"tip": tip, "curl": curl}


def _marks(rng: np.random.Generator, pattern: Image.Image, alpha: np.ndarray, pigment: np.ndarray) -> tuple:
    """Spots (barnacles, healed marks) and scars drawn on `pattern`; returns the scars born later
    in life (birth > 0), which only later photos show."""
    draw = ImageDraw.Draw(pattern)
    ys, xs = np.nonzero(alpha > 0.5)
    n_spots = int(min(600, rng.lognormal(3.2, 1.2))) if len(xs) else 0
    pick = rng.integers(0, len(xs), n_spots) if n_spots else np.zeros(0, int)
    radius = np.clip(rng.lognormal(0.0, 0.5, n_spots), 0.5, 4)
    for x, y, r in zip(xs[pick].tolist(), ys[pick].tolist(), radius.tolist()):
        shade = pigment[y, x] > 0.5
        value = int(rng.integers(10, 80) if shade else rng.integers(170, 245))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=value)
    scars = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3, 4]))):  # rake marks: parallel lines
        k = int(rng.integers(len(xs))) if len(xs) else 0
        x0, y0 = (int(xs[k]), int(ys[k])) if len(xs) else (256, 100)
        ang, length = rng.uniform(0, np.pi), rng.uniform(15, 70)
        dx, dy = np.cos(ang), np.sin(ang)
        gap = rng.uniform(3, 8)
        value = int(rng.integers(180, 250) if rng.random() < 0.7 else rng.integers(10, 60))
        birth = 0.0 if rng.random() < 0.6 else rng.uniform(0, 1)
        for j in range(int(rng.integers(2, 5))):
            ox, oy = -dy * gap * j, dx * gap * j
            pts = [(x0 + ox, y0 + oy), (x0 + ox + dx * length, y0 + oy + dy * length)]
            scars.append((birth, pts, int(rng.integers(1, 4)), value))
    for _ in range(int(rng.choice([0, 0, 1, 2]))):  # single long lines
        k = int(rng.integers(len(xs))) if len(xs) else 0
        x0, y0 = (int(xs[k]), int(ys[k])) if len(xs) else (256, 100)
        ang, length = rng.uniform(0, np.pi), rng.uniform(40, 160)
        bend = rng.normal(0, 10)
        pts = [(x0 + np.cos(ang) * length * t - np.sin(ang) * bend * np.sin(np.pi * t),
                y0 + np.sin(ang) * length * t + np.cos(ang) * bend * np.sin(np.pi * t)) for t in np.linspace(0, 1, 6)]
        value = int(rng.integers(5, 50) if pigment[y0, x0] > 0.5 else rng.integers(190, 250))
        scars.append((0.0 if rng.random() < 0.7 else rng.uniform(0, 1), pts, int(rng.integers(1, 3)), value))
    for birth, pts, width, value in scars:
        if birth == 0.0:
            draw.line(pts, fill=value, width=width)
    return tuple(s for s in scars if s[0] > 0)


@functools.lru_cache(maxsize=32)  # tasks come grouped by animal; ~1 MB each
def _animal(seed: int, index: int) -> _Animal:
    rng = np.random.default_rng([seed, _ANIMAL, index])
    u = (np.arange(TEX_W, dtype=np.float32) + 0.5 - ORIGIN[0]) / UNIT
    v = ((np.arange(TEX_H, dtype=np.float32) + 0.5 - ORIGIN[1]) / UNIT)[:, None]

    # Outline: per lobe a trailing edge (top) and a leading edge (bottom) meeting at the tip.
    top = np.full(TEX_W, 10.0, np.float32)
    bot = np.full(TEX_W, -10.0, np.float32)
    base = rng.uniform(0.52, 0.72)  # the lobes meet the peduncle this far below the notch line
    for side in (u < 0, u >= 0):
        span = rng.uniform(0.92, 1.0)
        a = np.abs(u[side]) / span
        inside = a <= 1
        t, shape = _trailing_edge(rng, np.clip(a, 0, 1))
        lead = shape["tip"] - shape["curl"] + (base - shape["tip"]) * (1 - np.clip(a, 0, 1)) ** rng.uniform(0.4, 0.7)
        lead += rng.normal(0, 0.01) * np.sin(np.pi * np.clip(a, 0, 1) * rng.uniform(1, 3))
        top[side] = np.where(inside, t, 10.0)
        bot[side] = np.where(inside, np.maximum(lead, t + 0.004), -10.0)
    notch_w, notch_d = rng.uniform(0.015, 0.05), rng.uniform(0.03, 0.09)
    top += notch_d * np.clip(1 - np.abs(u) / notch_w, 0, None) ** 1.5
    ped_w, ped_k = rng.uniform(0.06, 0.1), rng.uniform(0.05, 0.3)
    ped = ped_w + ped_k * np.clip(v - base, 0, None)
    inside_top = np.clip((v - top) * UNIT + 0.5, 0, 1)
    inside_bot = np.clip((bot - v) * UNIT + 0.5, 0, 1)
    inside_ped = np.clip((ped - np.abs(u)) * UNIT + 0.5, 0, 1) * (v > base - 0.1)
    alpha = (inside_top * np.maximum(inside_bot, inside_ped)).astype(np.float32)

    # Ventral pattern: a thresholded noise field biased by the usual humpback features.
    field = (_noise(rng, (4, 8), (TEX_W, TEX_H)) + 0.55 * _noise(rng, (8, 16), (TEX_W, TEX_H))
             + 0.3 * _noise(rng, (16, 32), (TEX_W, TEX_H)) + 0.15 * _noise(rng, (48, 96), (TEX_W, TEX_H)))
    field /= field.std() + 1e-6
    # Distance below a smoothed trailing edge: a bite cuts through the fringe, not along it.
    smooth_top = np.convolve(np.minimum(top, 1.0), np.ones(15) / 15, mode="same")
    below_edge = np.clip((v - smooth_top) * UNIT, 0, None)
    field -= rng.uniform(0, 3) * np.exp(-below_edge / rng.uniform(2, 14))  # dark trailing fringe
    field -= rng.uniform(0, 2) * np.exp(-np.clip((bot - v) * UNIT, 0, None) / rng.uniform(3, 25))
    field += rng.normal(0, 1.0) * np.exp(-((u / rng.uniform(0.05, 0.35)) ** 2))  # median band
    field -= rng.uniform(0.5, 3) * np.clip((v - base) * 8, 0, 1) * (np.abs(u) < 0.3)  # peduncle
    if rng.random() < 0.35:  # streaks radiating from the peduncle
        angle = np.arctan2(v - base - rng.uniform(0.2, 0.6), u)
        ray = rng.standard_normal(int(rng.integers(20, 60)))
        field += rng.uniform(0.5, 1.5) * np.interp(angle, np.linspace(-np.pi, 0, len(ray)), ray)
    kind = rng.choice(3, p=[0.25, 0.35, 0.4])  # mostly white, mixed, mostly black
    white_share = [rng.uniform(0.65, 0.97), rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.3)][kind]
    cut = NormalDist().inv_cdf(min(max(1 - white_share, 0.005), 0.995))
    soft = rng.uniform(0.02, 0.12)
    pigment = 1 / (1 + np.exp(-np.clip((field - cut) / soft, -30, 30)))
    pigment = pigment * rng.uniform(0.8, 1.0) + 0.04  # whites are never quite white
    pattern = Image.fromarray(np.clip(pigment * 255, 0, 255).astype(np.uint8))

    later = _marks(rng, pattern, alpha, pigment)

    dark = np.array([22, 24, 29], np.float32) * rng.uniform(0.7, 1.4)
    white = np.array([234, 237, 240], np.float32) - rng.uniform(0, 25)
    mask = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))
    return _Animal(alpha, mask, pattern, later, dark.astype(np.float32), white.astype(np.float32), float(base))


@functools.lru_cache(maxsize=32)
def _fin(seed: int, index: int, species: str) -> _Animal:
    """A dorsal fin above a curved back, in the fluke's canonical frame: a convex leading edge up to
    the apex, a hooked (falcate) trailing edge down to the base with nicks in it (the animal's
    fingerprint, as a fluke's trailing edge is), skin of the species' tone with scars and spots."""
    sp = species_look(species)
    rng = np.random.default_rng([seed, _ANIMAL, index])
    u = (np.arange(TEX_W, dtype=np.float32) + 0.5 - ORIGIN[0]) / UNIT
    v = ((np.arange(TEX_H, dtype=np.float32) + 0.5 - ORIGIN[1]) / UNIT)[:, None]
    base = rng.uniform(0.58, 0.68)
    apex_v = base - rng.uniform(*sp.height)
    apex_u = rng.uniform(*sp.sweep)
    lead_u, trail_u = rng.uniform(-0.8, -0.45), apex_u + rng.uniform(0.2, 0.45)
    t = np.clip((v - apex_v) / (base - apex_v), 0, 1)  # 0 at the apex, 1 at the base
    lead = apex_u + (lead_u - apex_u) * t ** rng.uniform(0.45, 0.8)
    hook = rng.uniform(*sp.falcate)
    trail = apex_u + (trail_u - apex_u) * t ** hook + rng.uniform(0.0, 0.08) * (hook - 1) * np.sin(np.pi * t)
    for _ in range(int(rng.integers(sp.notches[0], sp.notches[1] + 1))):
        c, w, d = rng.uniform(0.05, 0.95), rng.uniform(0.015, 0.06), rng.uniform(0.01, 0.07)
        trail = trail - d * np.clip(1 - (np.abs(t - c) / w) ** 2, 0, None) ** rng.uniform(0.3, 1.0)
    fin = (np.clip((u - lead) * UNIT + 0.5, 0, 1) * np.clip((trail - u) * UNIT + 0.5, 0, 1)
           * np.clip((v - apex_v) * UNIT + 0.5, 0, 1))
    back = np.clip((v - (base - 0.02 + rng.uniform(0.05, 0.2) * u ** 2)) * UNIT + 0.5, 0, 1) * (np.abs(u) < 1.05)
    alpha = np.maximum(fin, back).astype(np.float32)

    tone = rng.uniform(*sp.tone)
    field = _noise(rng, (4, 8), (TEX_W, TEX_H)) + 0.5 * _noise(rng, (16, 32), (TEX_W, TEX_H))
    pigment = np.clip(tone + 0.06 * field / (field.std() + 1e-6), 0.02, 0.98)
    pattern = Image.fromarray((pigment * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pattern)
    ys, xs = np.nonzero(fin > 0.5)
    light = tone < 0.6  # marks show light on dark skin, dark on white
    for _ in range(int(min(300, rng.lognormal(2.5, 1.0)))) if len(xs) else ():
        k = int(rng.integers(len(xs)))
        r = float(np.clip(rng.lognormal(0.0, 0.5), 0.5, 4))
        value = int(rng.integers(150, 240) if light else rng.integers(20, 90))
        draw.ellipse((xs[k] - r, ys[k] - r, xs[k] + r, ys[k] + r), fill=value)
    scars = []
    for _ in range(int(rng.choice([0, 1, 2, 3]))) if len(xs) else ():
        k = int(rng.integers(len(xs)))
        ang, length = rng.uniform(0, np.pi), rng.uniform(10, 60)
        pts = [(float(xs[k]), float(ys[k])), (xs[k] + np.cos(ang) * length, ys[k] + np.sin(ang) * length)]
        value = int(rng.integers(170, 250) if light else rng.integers(10, 60))
        scars.append((0.0 if rng.random() < 0.7 else rng.uniform(0, 1), pts, int(rng.integers(1, 3)), value))
    for birth, pts, width, value in scars:
        if birth == 0.0:
            draw.line(pts, fill=value, width=width)
    dark = np.array([22, 24, 29], np.float32) * rng.uniform(0.7, 1.4)
    white = np.array([234, 237, 240], np.float32) - rng.uniform(0, 25)
    mask = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))
    later = tuple(s for s in scars if s[0] > 0)
    return _Animal(alpha, mask, pattern, later, dark, white, float(base + 0.15))  # water near the fin's base


def _animal_of(seed: int, index: int, species: str | None) -> _Animal:
    """The animal of a photo: a humpback fluke (the 2019 layout), or its species' fluke or fin."""
    if species is None:
        return _animal(seed, index)
    sp = species_look(species)
    if sp.shape == "fin":
        return _fin(seed, index, species)
    animal = _animal(seed, index)
    if species == "humpback_whale":
        return animal
    # another fluked species: its own tone, the humpback's black-and-white pattern muted to mottling
    rng = np.random.default_rng([seed, _SPECIES, index])
    tone = rng.uniform(*sp.tone)
    muted = np.asarray(animal.pattern, np.float32) / 255 * 0.3 + tone - 0.15
    return dataclasses.replace(animal, pattern=Image.fromarray(np.clip(muted * 255, 0, 255).astype(np.uint8)))


# --------------------------------------------------------------------------------------------
# Photos: pose, water, sea and sky, light, lens, caption, JPEG.


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE data mapping output points dst (4, 2) to input points src (4, 2)."""
    rows, rhs = [], []
    for (x, y), (X, Y) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -x * X, -y * X])
        rows.append([0, 0, 0, x, y, 1, -x * Y, -y * Y])
        rhs += [X, Y]
    return tuple(np.linalg.solve(np.array(rows, float), np.array(rhs, float)).tolist())


def _pose(rng: np.random.Generator, w: int, h: int):
    """A function mapping canonical (u, v) to photo (x, y): scale, yaw, pitch, roll, position."""
    frac = float(np.clip(rng.normal(0.9, 0.12), 0.45, 1.25))  # fluke span / photo width
    unit = frac * w / 2
    yaw = float(np.clip(rng.normal(0, 0.4), -0.9, 0.9))
    pitch = rng.uniform(0.45, 1.1)  # < 1: the fluke tilted away, seen at a grazing angle
    roll = np.deg2rad(rng.normal(0, 7))
    depth = rng.uniform(2.5, 6)  # camera distance in fluke units: perspective strength
    cx = w / 2 + rng.normal(0, 0.06) * w
    cy = h * rng.uniform(0.38, 0.6)

    def forward(u, v):
        x0, y0 = u, (v - 0.3) * pitch
        s = depth / (depth + x0 * np.sin(yaw))
        x1, y1 = x0 * np.cos(yaw) * s, y0 * s
        x2 = x1 * np.cos(roll) - y1 * np.sin(roll)
        y2 = x1 * np.sin(roll) + y1 * np.cos(roll)
        return cx + x2 * unit, cy + y2 * unit

    return forward, unit


def _sea(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Sea (and sometimes sky over a horizon) as (h, w, 3) float32 in 0..1."""
    hue = rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])  # blue, grey, green-grey, dark navy
    base = np.array([[0.3, 0.4, 0.52], [0.45, 0.47, 0.5], [0.33, 0.42, 0.42], [0.13, 0.17, 0.24]][hue], np.float32)
    base = base * rng.uniform(0.6, 1.5) + rng.normal(0, 0.01) * np.array([-1, 0.5, 1], np.float32)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    grad = 1 + rng.uniform(-0.3, 0.3) * (ys - 0.5)
    waves = _noise(rng, (max(2, h // 5), max(2, w // 40)), (w, h)) * rng.uniform(0.04, 0.18)
    waves += _noise(rng, (max(2, h // 2), max(2, w // 10)), (w, h)) * rng.uniform(0.02, 0.08)
    lum = grad * (1 + waves)
    sea = base[None, None, :] * lum[..., None]
    glint = np.clip((waves - rng.uniform(0.1, 0.3)) * 4, 0, 1) * rng.uniform(0, 0.6)
    sea += glint[..., None]
    if rng.random() < 0.22:  # horizon and sky above it
        horizon = int(h * rng.uniform(0.0, 0.3))
        sky = np.array([0.75, 0.8, 0.88], np.float32) * rng.uniform(0.8, 1.2)
        sky_grad = (1 - 0.15 * (1 - ys[:horizon] / max(horizon, 1) * 1.0))[..., None]
        sea[:horizon] = sky[None, None, :] * sky_grad
        if rng.random() < 0.4 and horizon > 4:  # a distant shore
            band = int(rng.integers(2, max(3, horizon // 3)))
            sea[horizon - band : horizon] *= rng.uniform(0.3, 0.6)
    return sea


_FONTS: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
_CAPTION_WORDS = ("Cascadia", "Hervey Bay", "Maui", "Tonga", "Gulf of Maine", "Husavik", "Monterey",
                  "Happywhale", "NOAA", "Reunion", "Azores", "Kaikoura")


def _caption(rng: np.random.Generator, image: Image.Image) -> None:
    w, h = image.size
    size = int(np.clip(h * rng.uniform(0.045, 0.09), 9, 40))
    font = _FONTS.get(size) or _FONTS.setdefault(size, ImageFont.load_default(size=size))
    year, kind = int(rng.integers(1990, 2019)), int(rng.integers(4))
    text = [f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{year}",
            f"(c) {_CAPTION_WORDS[int(rng.integers(len(_CAPTION_WORDS)))]} {year}",
            f"HW-{int(rng.integers(1, 9999)):04d}",
            f"{_CAPTION_WORDS[int(rng.integers(len(_CAPTION_WORDS)))]} #{int(rng.integers(1, 999))}"][kind]
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    x = int(rng.uniform(0.02, 0.05) * w) if rng.random() < 0.5 else max(0, w - tw - int(0.03 * w))
    y = int(h - th - rng.uniform(0.03, 0.08) * h) if rng.random() < 0.75 else int(0.03 * h)
    colour = [(255, 255, 255), (255, 235, 60), (10, 10, 10)][int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
    draw.text((x, y), text, fill=colour if image.mode == "RGB" else colour[0], font=font)


def _at_this_moment(rng: np.random.Generator, animal: _Animal) -> tuple[Image.Image, Image.Image]:
    """(mask, pattern) of the animal as it is at this photo's date (later scars only after their
    birth), its lobes flexed as they are at this moment of the dive."""
    when = rng.random()
    pattern = animal.pattern
    if any(birth <= when for birth, *_ in animal.scars):
        pattern = pattern.copy()
        draw = ImageDraw.Draw(pattern)
        for birth, pts, width, value in animal.scars:
            if birth <= when:
                draw.line(pts, fill=value, width=width)
    u = (np.arange(TEX_W) + 0.5 - ORIGIN[0]) / UNIT
    flex = np.where(u < 0, rng.normal(0, 0.07), rng.normal(0, 0.07)) * u**2 * UNIT
    rows = np.clip(np.arange(TEX_H)[:, None] + np.round(flex).astype(int)[None, :], 0, TEX_H - 1)
    mask = Image.fromarray(np.take_along_axis(np.asarray(animal.mask), rows, axis=0))
    pattern = Image.fromarray(np.take_along_axis(np.asarray(pattern), rows, axis=0))
    return mask, pattern


def _light_and_lens(rng: np.random.Generator, img: np.ndarray, w: int, h: int) -> Image.Image:
    """The scene as the camera saw it: light (contrast, exposure, haze, cast, grain, gamma), then
    the lens (low-resolution originals, blur)."""
    # Light: contrast and exposure, haze, a warm or cool cast: one affine map per channel.
    contrast, exposure = rng.uniform(0.7, 1.3), rng.normal(0, 0.07)
    haze = rng.uniform(0, 0.35) if rng.random() < 0.4 else 0.0
    haze_level = rng.uniform(0.5, 0.85)
    cast = 1 + rng.normal(0, 0.04) * np.array([0.5, 0.1, -0.5], np.float32)
    scale = contrast * (1 - haze) * cast * 255
    shift = ((0.5 - 0.5 * contrast + exposure) * (1 - haze) + haze * haze_level) * cast * 255 + 0.5
    img = img * scale.astype(np.float32) + shift.astype(np.float32)
    if rng.random() < 0.5:  # sensor grain
        img += (rng.random((h, w, 1), dtype=np.float32) - 0.5) * np.float32(255 * rng.uniform(0.02, 0.1))
    out = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8), "RGB")
    gamma = rng.uniform(0.8, 1.25)
    out = out.point([round(255 * (i / 255) ** gamma) for i in range(256)] * 3)
    # Lens: low-resolution originals and blur.
    if rng.random() < 0.18:
        f = rng.uniform(1.8, 3.5)
        out = out.resize((max(8, int(w / f)), max(8, int(h / f))), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
    radius = rng.choice([0, 0.5, 0.8, 1.2, 1.8], p=[0.35, 0.25, 0.2, 0.12, 0.08])
    if radius:
        out = out.filter(ImageFilter.GaussianBlur(float(radius)))
    return out


def photo(seed: int, index: int, animal_index: int, grey: bool, caption: bool,
           widths: tuple[int, int], species: str | None = None) -> tuple[Image.Image, tuple[int, int, int, int], int]:
    """Render one photo of an animal: the image, the fluke's (or fin's) box and a JPEG quality."""
    rng = np.random.default_rng([seed, _PHOTO, index])
    animal = _animal_of(seed, animal_index, species)
    w = int(widths[1] if rng.random() < 0.6 else rng.integers(widths[0], widths[1] + 1))
    r = rng.random()
    aspect = 1.5 if r < 0.3 else rng.uniform(1.3, 2.6) if r < 0.93 else rng.uniform(2.6, 3.6)
    h = max(64, int(round(w / aspect)))

    mask, pattern = _at_this_moment(rng, animal)

    for _attempt in range(8):  # redraw a pose that leaves too little fluke in view
        forward, unit = _pose(rng, w, h)
        corners = np.array([(0, 0), (TEX_W, 0), (TEX_W, TEX_H), (0, TEX_H)], float)
        cu, cv = (corners[:, 0] - ORIGIN[0]) / UNIT, (corners[:, 1] - ORIGIN[1]) / UNIT
        dst = np.stack(forward(cu, cv), axis=1)
        coeffs = _perspective_coeffs(dst, corners)
        alpha = np.asarray(mask.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR),
                           np.float32) / 255
        # Water line: canonical depth below the lobes' base, then waves along it.
        v_water = animal.v_base + (rng.uniform(-0.3, 0.15) if rng.random() < 0.8 else rng.uniform(0.15, 0.5))
        v_water = min(v_water, 0.86)  # the canonical frame ends at v = 0.9: no floating peduncle
        # Water is level: its line tilts only with the camera, however the fluke turns.
        x_c, y_c = forward(0.0, v_water)
        xs = np.arange(w, dtype=np.float32)
        water = y_c + np.tan(rng.normal(0, 0.04)) * (xs - x_c)
        water += np.asarray(Image.fromarray(rng.standard_normal((1, max(2, w // 30))).astype(np.float32))
                            .resize((w, 1), Image.Resampling.BICUBIC))[0] * rng.uniform(0.5, 3)
        ys = np.arange(h, dtype=np.float32)[:, None]
        above = np.clip(water[None, :] - ys, 0, 1)
        visible = alpha * above
        seen = visible > 0.5
        if seen.sum() > 0.04 * w * h:
            break
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) if len(rows) else (0, 0, w, h)

    # Colour: pattern between the animal's black and white, lit from above, over the sea.
    pat = np.asarray(pattern.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR),
                     np.float32)[..., None] / 255
    skin = (animal.dark + (animal.white - animal.dark) * pat) / 255
    # Uneven light on a wet, curved surface: broad shading and sheen that greys the black.
    shade = 1 + rng.uniform(-0.25, 0.15) * (ys / h - 0.5) * 2 + _noise(rng, (3, 5), (w, h)) * rng.uniform(0.05, 0.3)
    sheen = np.clip(_noise(rng, (4, 8), (w, h)) - rng.uniform(0.5, 1.5), 0, None) * rng.uniform(0.05, 0.3)
    skin = skin * shade[..., None] + sheen[..., None]
    sea = _sea(rng, w, h)
    img = sea * (1 - visible[..., None]) + skin * visible[..., None]
    # Foam and spray where the fluke leaves the water.
    band = np.clip(1 - ((ys - water[None, :]) / rng.uniform(3, 16)) ** 2, 0, None)
    centre_x = forward(0.0, animal.v_base)[0]
    near = np.exp(-(((xs - centre_x) / (unit * rng.uniform(0.3, 1.2))) ** 2))[None, :]
    froth = np.clip(_noise(rng, (max(2, h // 6), max(2, w // 6)), (w, h)) * 0.7 + rng.uniform(-0.4, 0.8), 0, 1)
    foam = np.clip(band * near * froth * rng.uniform(0.3, 1.6), 0, 1)[..., None]
    img = img * (1 - foam) + np.float32(0.92) * foam
    if rng.random() < 0.25:  # sheets of water streaming off the trailing edge
        x0, y0, x1, y1 = box
        sheet = np.clip(_noise(rng, (3, max(2, (x1 - x0) // 20)), (x1 - x0, y1 - y0)) - rng.uniform(0.5, 1.2), 0, 1)
        sheet = (sheet * visible[y0:y1, x0:x1] * rng.uniform(0.3, 0.7))[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - sheet) + np.float32(0.85) * sheet
    out = _light_and_lens(rng, img, w, h)
    if grey:
        out = out.convert("L")
    if caption:
        _caption(rng, out)
    quality = int(rng.integers(60, 96))
    # The box as a detector gives it (the real boxes come from a public kernel's model): loose.
    bw, bh = box[2] - box[0], box[3] - box[1]
    jitter = rng.normal(0, 0.03, 4) * np.array([bw, bh, bw, bh])
    x0, y0 = int(np.clip(box[0] + jitter[0], 0, w - 2)), int(np.clip(box[1] + jitter[1], 0, h - 2))
    x1, y1 = int(np.clip(box[2] + jitter[2], x0 + 2, w)), int(np.clip(box[3] + jitter[3], y0 + 2, h))
    return out, (x0, y0, x1, y1), quality
