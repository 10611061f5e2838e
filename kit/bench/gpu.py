"""The GPU check in one command (`python scripts/bench.py gpu`), under 5 minutes on one GPU.

1. versions: python, torch + CUDA, timm, numpy, pandas, onnxruntime and its providers, the GPU;
2. the train rows (kit/bench/train.py) for every recipe in models/, full-size ones included: model
   alone vs the real loop from scratch on synthetic medium, GPU utilisation;
3. the demo's training stage: its three tiny recipes trained one after another on the GPU, timed;
4. export on the GPU: one of those members exported (ONNX parity as always) and run with
   provider auto, which names what ran; the GPU's outputs against onnxruntime on the CPU.

`allow_cpu` runs the same code without a GPU, one epoch per demo member: a dry run of the command.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from kit.bench.train import bench_train, synthetic_competition
from kit.data.competition import load_competition
from kit.data.crops import CropSpec, open_crops
from kit.export.images import ImageSource
from kit.export.member import export_member
from kit.train.recipe import load_recipe


def versions() -> dict:
    import onnxruntime
    import timm

    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "timm": timm.__version__, "numpy": np.__version__, "pandas": pd.__version__,
         "onnxruntime": onnxruntime.__version__, "onnxruntime providers": onnxruntime.get_available_providers()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v["gpu"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB"
    return v


def demo_training(small: Path, out: Path, recipes: Sequence[str], epochs: int | None = None, echo=print) -> dict:
    """`recipes` (the demo's tiny ones, paths from the repository root) trained one after another on
    `small`: seconds each and in all."""
    from kit.train.loop import train

    root = Path(__file__).resolve().parents[2]
    result: dict = {"members": {}}
    start = time.perf_counter()
    for path in recipes:
        recipe = load_recipe(root / path)
        if epochs:
            recipe = dataclasses.replace(recipe, stages=(dataclasses.replace(recipe.stages[0], epochs=epochs),))
        t0 = time.perf_counter()
        member = train(recipe, out=out / recipe.name, data=small, progress=False, force=True)
        last = json.loads((member / "metrics.json").read_text())["epochs"][-1]
        result["members"][recipe.name] = {"seconds": round(time.perf_counter() - t0, 1),
                                          "images_per_s": last["images_per_s"], "val_map5": last["val"]["map5"]}
        echo(f"  {recipe.name}: {result['members'][recipe.name]}")
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def export_on_gpu(member: Path, small: Path, echo=print) -> dict:
    """Export one member with provider auto; then its GPU outputs against onnxruntime's on the CPU."""
    from kit.export.exporter import relative_error
    from kit.export.runtime import OnnxRunner, TorchRunner
    from kit.train.model import load_member

    report = export_member(member, data=small, force=True, progress=False, log=lambda line: echo(f"  {line}"))
    model, info = load_member(member)
    comp = load_competition(small)
    source = ImageSource(comp, info, open_crops(comp, CropSpec.of(info)))
    x = np.stack([source(n) for n in comp.test_images[:256]])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu, on_cpu = TorchRunner(model, device), OnnxRunner(member / "model.onnx", "cpu")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # full fp32 for the comparison
    try:
        (gl, ge), (cl, ce) = on_gpu(x), on_cpu(x)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"provider": report.get("provider"), "images_per_s": report.get("images_per_second"),
            "parity (ONNX vs PyTorch, CPU)": report["parity"]["rel_error"],
            f"torch-{device} (fp32, no TF32) vs onnxruntime-cpu": {
                "logits": relative_error(cl, gl), "embedding": relative_error(ce, ge), "images": len(x)}}


def gpu_check(medium: Path, small: Path, demo_recipes: Sequence[str], steps: int | None = None, compile: bool = False,
              allow_cpu: bool = False, echo=print) -> dict:
    """Run the check; `compile` times resnet50_full's model under torch.compile too; `demo_recipes`:
    the demo's members (kit.demo.TINY_RECIPES: the caller's, the demo being above this layer)."""

    if not torch.cuda.is_available() and not allow_cpu:
        raise SystemExit("error: no CUDA GPU visible to PyTorch; bench.py gpu --cpu runs the check on the CPU (a dry run)")
    started = time.perf_counter()
    result: dict = {"versions": versions()}
    echo("gpu: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    # torch.compile on the recipe the targets name only: six cold compiles would not fit in 5 minutes
    result["train"] = bench_train(medium, steps=steps, compile=["resnet50_full"] if compile else False, print_fn=echo)
    synthetic_competition(small, "small")
    with tempfile.TemporaryDirectory() as tmp:
        echo(f"demo training stage on {small} (one member at a time):")
        result["demo_training"] = demo_training(small, Path(tmp), demo_recipes,
                                                epochs=1 if allow_cpu and not torch.cuda.is_available() else None,
                                                echo=echo)
        echo(f"  in all: {result['demo_training']['seconds']:.0f} s")
        echo("export on the GPU:")
        result["export"] = export_on_gpu(Path(tmp) / "resnet18_tiny", small, echo=echo)
        echo(f"  {json.dumps(result['export'])}")
    result["seconds"] = round(time.perf_counter() - started, 1)
    echo(f"gpu check: {result['seconds']:.0f} s in all")
    return result
