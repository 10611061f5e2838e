"""Training throughput per recipe (images/s), for `python scripts/bench.py train`.

Two numbers per recipe, measured apart so each is clear:
- model: full training steps (forward, loss, backward, optimizer) on random batches of the
  recipe's input size, batch size, head and class count (395 = synthetic small, or 5,004 = the
  real 2019 competition for full-size recipes), with the recipe's autocast / channels_last on a GPU;
- data: one image through the training pipeline (decode, box crop, resize, augment, normalise)
  on one core, from a 512 x 256 JPEG (the synthetic photos' size).
Full-size recipes run on a GPU only unless asked (`full=True`): on two CPU cores one step of
senet154 at 256 x 512 takes minutes.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kit.train.augment import augment
from kit.train.data import load_pixels, normalise
from kit.train.losses import Criterion
from kit.train.model import build_model, set_train_mode
from kit.train.recipe import Recipe, load_recipe

TINY_CLASSES, FULL_CLASSES = 395, 5004


def is_tiny(recipe: Recipe) -> bool:
    h, w = recipe.input.size
    return h * w <= 128 * 256


def model_throughput(recipe: Recipe, num_classes: int, seconds: float, device: torch.device,
                     batch_size: int | None = None) -> tuple[float, int]:
    """(images/s, batch) of training steps on random inputs, after two warm-up steps."""
    torch.manual_seed(0)
    model = build_model(recipe, num_classes, pretrained=False).to(device)
    cuda = device.type == "cuda"
    if cuda and recipe.runtime.channels_last in ("auto", True):
        model = model.to(memory_format=torch.channels_last)
    set_train_mode(model, recipe.model.freeze_bn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = Criterion(recipe.head, num_classes * (2 if recipe.flip_twins else 1), recipe.flip_twins)
    b = batch_size or recipe.sampling.batch_size
    h, w = recipe.input.size
    x = torch.randn(b, 3, h, w, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, num_classes, (b,), device=device)
    weight = torch.ones(b, device=device)
    amp = recipe.runtime.amp == "bf16" or (recipe.runtime.amp == "auto" and cuda)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def step():
        with autocast():
            logits, emb = model(x)
        criterion(logits, emb, target, weight).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if cuda:
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3 * b:
        step()
        n += b
    if cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start), b


def data_throughput(recipe: Recipe, seconds: float = 2.0) -> float:
    """Images/s of the training data pipeline on one core (decode + crop + resize + augment + normalise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (256, 512, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        channels = 1 if recipe.input.colour == "grey" else 3
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                p = load_pixels(path, (20, 30, 490, 230), tuple(recipe.input.size), channels, True, recipe.input.box_margin)
                image = torch.from_numpy(np.ascontiguousarray(p.transpose(2, 0, 1))).float() / 255.0
                normalise(augment(image, recipe.augment, np.random.default_rng(n)), mean, std)
                n += 1
        finally:
            torch.set_num_threads(threads)
    return n / (time.perf_counter() - start)


def bench_train(recipes: list[str | Path] | None = None, seconds: float = 8.0, full: bool | None = None,
                print_fn=print) -> list[dict]:
    """Print (and return) a table of training throughput for `recipes` (default models/*.yaml)."""
    root = Path(__file__).resolve().parents[2]
    paths = [Path(p) for p in recipes] if recipes else sorted((root / "models").glob("*.yaml"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    full = device.type == "cuda" if full is None else full
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print_fn(f"train: training throughput on {where} (model: random batches, recipe's batch/head/classes; "
             f"data: one core)")
    print_fn(f"  {'recipe':<26} {'backbone':<22} {'input':>8} {'batch':>5} {'classes':>7} {'model img/s':>12} {'data img/s':>11}")
    rows = []
    for path in paths:
        recipe = load_recipe(path)
        tiny = is_tiny(recipe)
        classes = TINY_CLASSES if tiny else FULL_CLASSES
        h, w = recipe.input.size
        row = {"recipe": path.stem, "backbone": recipe.model.backbone, "input": f"{h}x{w}", "classes": classes}
        if not tiny and not full:
            row.update(model="skipped (GPU)", batch=recipe.sampling.batch_size)
        else:
            try:
                ips, b = model_throughput(recipe, classes, seconds, device)
                row.update(model=round(ips, 1), batch=b)
            except torch.cuda.OutOfMemoryError:
                row.update(model="out of memory", batch=recipe.sampling.batch_size)
        row["data"] = round(data_throughput(recipe), 1)
        rows.append(row)
        model = row["model"] if isinstance(row["model"], str) else f"{row['model']:.1f}"
        print_fn(f"  {row['recipe']:<26} {row['backbone']:<22} {row['input']:>8} {row['batch']:>5} {classes:>7} "
                 f"{model:>12} {row['data']:>11.0f}")
    return rows


if __name__ == "__main__":
    bench_train()
