"""How fast this machine trains a recipe: one training step on one random batch, timed. The starter's
budget probe (`prepare.py --init`) and the train benchmark (kit/bench/train.py) both use it."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from kit.train.heads import Criterion
from kit.train.model import build_model, set_train_mode
from kit.train.recipe import Recipe


def steady_speed(recipe: Recipe, num_classes: int, device: torch.device, warmup: int = 3, steps: int = 6) -> float:
    """Images/s of one training step on one random batch: the median of `steps` timed steps after
    `warmup` untimed ones (prepare.py --init's estimate; a busy machine's slow step moves it little)."""
    step = training_step(recipe, num_classes, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return recipe.sampling.batch_size / float(np.median(times))


def training_step(recipe: Recipe, num_classes: int, device: torch.device, compile: bool = False):
    """One training step (forward, loss, backward, optimizer) on one random batch, as a closure."""
    torch.manual_seed(0)
    model = build_model(recipe, num_classes, pretrained=False).to(device)
    cuda = device.type == "cuda"
    channels_last = recipe.runtime.channels_last is True or (recipe.runtime.channels_last == "auto" and cuda)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    set_train_mode(model, recipe.model.freeze_bn)
    net = torch.compile(model, dynamic=False) if compile else model  # static: every recipe its own kernels
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    outputs = num_classes * (2 if recipe.flip_twins else 1)
    criterion = Criterion(recipe.head, outputs, recipe.flip_twins, np.ones(outputs))  # one image each: any margins do
    b = recipe.sampling.batch_size
    h, w = recipe.input.size
    x = torch.randn(b, 3, h, w, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, num_classes, (b,), device=device)
    weight = torch.ones(b, device=device)
    amp = recipe.runtime.amp == "bf16" or (recipe.runtime.amp == "auto" and cuda)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def step():
        with autocast():
            logits, emb = net(x)
        criterion(logits, emb, target, weight).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step
