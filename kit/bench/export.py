"""The export benchmark: onnxruntime against eager PyTorch, images per second, same model and batch.

Kept out of the test suite (tests check behaviour, not speed); `scripts/bench.py` prints it as
its `export` section. For every recipe the network is built from the recipe (trained weights
when `models/<name>/checkpoint.pt` exists; speed does not depend on them), exported to a
temporary model.onnx, and both runtimes are timed on the same random batch after two untimed
batches, in alternating rounds (the median of each). Network time only: image decoding overlaps
it in production (kit.export.images).

- CPU: every tiny recipe (`models/*_tiny.yaml`), onnxruntime's CPU provider vs eager PyTorch,
  both with one thread per core (each runtime's default) and both with one thread. The one-thread
  rows are the robust comparison on a shared machine: a multi-threaded OpenMP runtime (PyTorch)
  loses most of its speed when another process holds one of its cores, onnxruntime's
  non-spinning pool much less.
- GPU: the full-size recipes (the other `models/*.yaml`) with the CUDA provider in fp32 and
  fp16 (onnxruntime's float16 conversion) against eager PyTorch in fp32 and under fp16 autocast;
  skipped with a note when no GPU is usable.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kit.io import cpu_count
from kit.train.recipe import load_recipe

DEFAULT_CLASSES = 5004  # the real 2019 competition's identities, for recipes without a trained member


def _network(recipe_path: Path, models_root: Path):
    """(model, info) for a recipe: the trained member if there is one, else fresh weights."""
    import torch

    from kit.train.model import build_model, load_member, member_info, resolve_norm

    recipe = load_recipe(recipe_path)
    member = models_root / recipe.name
    if (member / "checkpoint.pt").is_file():
        return load_member(member) + ("trained",)
    torch.manual_seed(0)
    classes = [f"w_{i:07x}" for i in range(DEFAULT_CLASSES)]
    model = build_model(recipe, len(classes), pretrained=False).eval()
    mean, std = resolve_norm(recipe, model.backbone)
    return model, member_info(recipe, classes, mean, std, use_boxes=True), "untrained"


def images_per_second(run: Callable[[np.ndarray], object], x: np.ndarray, *, warmup: int = 2,
                      min_batches: int = 5, min_seconds: float = 3.0, sync: Callable[[], None] = lambda: None) -> float:
    """Throughput of `run` on batch `x`: `warmup` untimed calls, then at least `min_batches` calls
    and `min_seconds` seconds."""
    for _ in range(warmup):
        run(x)
    sync()
    n, start = 0, time.perf_counter()
    while n < min_batches or time.perf_counter() - start < min_seconds:
        run(x)
        n += 1
    sync()
    return n * len(x) / (time.perf_counter() - start)


def interleaved(runners: dict[str, Callable[[np.ndarray], object]], x: np.ndarray, *, rounds: int = 5,
                min_seconds: float = 1.0, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median images/s of each runner over `rounds` alternating rounds (A, B, A, B, ...): on a
    shared machine the load drifts, and alternating gives each runtime the same share of it."""
    speeds: dict[str, list[float]] = {k: [] for k in runners}
    for name, run in runners.items():  # warm-up: first-call allocations, cuDNN algorithm search
        for _ in range(2):
            run(x)
    sync()
    for _ in range(rounds):
        for name, run in runners.items():
            speeds[name].append(images_per_second(run, x, warmup=0, min_batches=2, min_seconds=min_seconds, sync=sync))
    return {k: float(np.median(v)) for k, v in speeds.items()}


def bench_recipe(recipe_path: Path, *, batch: int = 32, device: str = "cpu", models_root: Path = Path("models"),
                 rounds: int = 5, min_seconds: float = 1.0) -> list[dict]:
    """Rows {recipe, runtime, precision, batch, images_per_s} for one recipe on `device`."""
    from kit.export.exporter import export_onnx, to_fp16
    from kit.export.runtime import OnnxRunner, TorchRunner

    model, info, weights = _network(recipe_path, models_root)
    h, w = info.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
    base = {"recipe": recipe_path.stem, "input": f"{h}x{w}", "batch": batch, "weights": weights}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, info, path)
        if device == "cpu":
            import torch

            default_threads = torch.get_num_threads()
            for threads in sorted({cpu_count(), 1}, reverse=True):
                runners = {"onnxruntime": OnnxRunner(path, "cpu", threads=threads),
                           "pytorch": TorchRunner(model, threads=threads)}
                speed = interleaved(runners, x, rounds=rounds, min_seconds=min_seconds)
                for runtime, ips in speed.items():
                    rows.append({**base, "runtime": runtime, "provider": "cpu", "precision": "fp32",
                                 "threads": threads, "images_per_s": ips})
            torch.set_num_threads(default_threads)
            return rows
        import torch

        half = Path(tmp) / "model.fp16.onnx"
        to_fp16(path, half)
        runners = {("onnxruntime", "fp32"): OnnxRunner(path, "cuda"), ("onnxruntime", "fp16"): OnnxRunner(half, "cuda"),
                   ("pytorch", "fp32"): TorchRunner(model, "cuda"),
                   ("pytorch", "fp16"): TorchRunner(model, "cuda", autocast_fp16=True)}
        speed = interleaved(runners, x, rounds=rounds, min_seconds=min_seconds, sync=torch.cuda.synchronize)
        for (runtime, precision), r in runners.items():
            rows.append({**base, "runtime": runtime, "provider": "cuda", "precision": precision,
                         "threads": "", "images_per_s": speed[runtime, precision]})
        model.to("cpu")
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add `ort_vs_torch`: onnxruntime's images/s over PyTorch's, same recipe, provider and precision."""
    def key(r):
        return r["recipe"], r["provider"], r["precision"], r.get("threads")

    torch_speed = {key(r): r["images_per_s"] for r in rows if r["runtime"] == "pytorch"}
    for r in rows:
        ref = torch_speed.get(key(r))
        r["ort_vs_torch"] = r["images_per_s"] / ref if r["runtime"] == "onnxruntime" and ref else None
    return rows


def format_table(rows: Sequence[dict]) -> str:
    head = (f"{'recipe':<24} {'input':>8} {'batch':>5} {'runtime':<12} {'provider':<8} {'threads':>7} {'prec':<4} "
            f"{'img/s':>9} {'ORT/PT':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['ort_vs_torch']:.2f}x" if r.get("ort_vs_torch") else ""
        lines.append(f"{r['recipe']:<24} {r['input']:>8} {r['batch']:>5} {r['runtime']:<12} {r['provider']:<8} "
                     f"{r.get('threads', ''):>7} {r['precision']:<4} {r['images_per_s']:>9.1f} {ratio:>7}")
    return "\n".join(lines)


def bench_export(models_root: str | Path = "models", *, batch: int = 32, gpu_batch: int = 64,
                 rounds: int = 5, min_seconds: float = 1.0, recipes: Sequence[str | Path] | None = None,
                 log: Callable[[str], None] = print) -> list[dict]:
    """The `export` section: CPU rows for the tiny recipes, GPU rows for the full-size ones."""
    from kit.export.runtime import gpu_present

    models_root = Path(models_root)
    all_recipes = [Path(r) for r in recipes] if recipes else sorted(models_root.glob("*.yaml"))
    tiny = [r for r in all_recipes if r.stem.endswith("_tiny")]
    full = [r for r in all_recipes if not r.stem.endswith("_tiny")]
    rows: list[dict] = []
    log(f"export: onnxruntime vs eager PyTorch, network only, random input, warm-up excluded, "
        f"median of {rounds} alternating rounds ({cpu_count()} CPU cores)")
    if not tiny:
        log(f"  no tiny recipe (models/*_tiny.yaml) under {models_root}")
    for r in tiny:
        rows += bench_recipe(r, batch=batch, device="cpu", models_root=models_root, rounds=rounds, min_seconds=min_seconds)
    if gpu_present():
        for r in full:
            rows += bench_recipe(r, batch=gpu_batch, device="cuda", models_root=models_root, rounds=rounds,
                                 min_seconds=min_seconds)
        if not full:
            log("  GPU: no full-size recipe to run")
    else:
        log("  GPU rows skipped: no usable GPU (no NVIDIA driver, or onnxruntime without CUDA); "
            "on a GPU machine the full-size recipes run with the CUDA provider in fp32 and fp16")
    with_ratios(rows)
    if rows:
        log(format_table(rows))
    return rows


if __name__ == "__main__":
    bench_export()
