"""Training throughput per recipe (images/s), for `python scripts/bench.py train` and `gpu`.

Two numbers per recipe, and their ratio:
- model: training steps (forward, loss, backward, optimizer) on one random batch of the recipe's
  input size, batch size and head, with the identities the loop trains (fold 0's) — what the
  network alone allows, with the recipe's autocast / channels_last on a GPU;
- loop: the real `train()` on a competition (synthetic medium by default) through its crop cache,
  batched augmentation and validation-free steps, timed between the 3rd and the last of a fixed
  number of optimizer steps (the cache is built before, and timed apart). On a GPU, the mean
  utilisation `nvidia-smi` reports during those steps.

A recipe that fails is a row with its error; the table goes on. Full-size recipes run on a GPU
only unless asked (`full=True`): on two CPU cores one step of resnet50 at 256 x 512 takes seconds.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from kit.data.competition import load_competition
from kit.data.crops import CropSpec, open_crops
from kit.data.folds import make_folds, write_folds
from kit.data.synthetic import generate
from kit.errors import KitError
from kit.train.recipe import Recipe, StageCfg, load_recipe
from kit.train.speed import training_step

DEFAULT_DATA = Path("data/medium")  # synthetic medium (seed 0), made on first use


def synthetic_competition(path: Path, size: str) -> Path:
    """A synthetic competition (seed 0) with folds.csv at `path`, made if absent. No hashes: training
    needs none, and phash's numba may be missing on a GPU image."""
    if not (path / "train.csv").is_file():
        generate(path, size=size, seed=0, progress=False)
    if not (path / "folds.csv").is_file():
        comp = load_competition(path)
        write_folds(path / "folds.csv", make_folds(comp.train, comp.unknown, n_folds=3, seed=0))
    return path



def training_competition(data: str | None = None) -> Path:
    """The training benchmarks' competition: `data`, or synthetic medium made once at DEFAULT_DATA."""
    path = Path(data) if data else DEFAULT_DATA
    if not (path / "folds.csv").is_file():
        if data:
            raise KitError(f"{path}: no folds.csv; run python scripts/prepare.py {path} first")
        print(f"generating synthetic medium (seed 0) in {path} for the training benchmarks ...")
        synthetic_competition(path, "medium")
    return path


def is_tiny(recipe: Recipe) -> bool:
    h, w = recipe.input.size
    return h * w <= 128 * 256


def model_throughput(recipe: Recipe, num_classes: int, seconds: float, device: torch.device,
                     compile: bool = False) -> float:
    """Images/s of training steps on one random batch, after warm-up steps."""
    step = training_step(recipe, num_classes, device, compile)
    b, cuda = recipe.sampling.batch_size, device.type == "cuda"
    for _ in range(5 if compile else 2):
        step()
    if cuda:
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3 * b:
        step()
        n += b
    if cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


class GpuMonitor:
    """Mean GPU utilisation (%) from `nvidia-smi`, sampled every 0.2 s between start() and stop()."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # by UUID, read here in the main thread: a CUDA index is not nvidia-smi's (CUDA_VISIBLE_DEVICES)
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        self._id = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"

    @staticmethod
    def available() -> bool:
        return shutil.which("nvidia-smi") is not None and torch.cuda.is_available()

    def _read(self) -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  f"--id={self._id}"], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def start(self) -> None:
        def loop():
            while not self._stop.wait(0.2):
                v = self._read()
                if v is not None:
                    self.samples.append(v)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else None


class _Enough(Exception):
    """Raised from on_step to end a timed run."""


def loop_throughput(recipe: Recipe, data: Path, steps: int, device: torch.device) -> dict:
    """The real training loop for `steps` optimizer steps on `data`: images/s between step 3 and
    the last, and (on a GPU) the mean utilisation over them."""
    from kit.train.loop import train

    b = recipe.sampling.batch_size
    # the work model_throughput times: every layer trains (no frozen first stage), from scratch (no download)
    one_stage = StageCfg(epochs=1, lr=recipe.stages[0].lr)
    recipe = dataclasses.replace(recipe, name=f"bench-{recipe.name}", fold=0, stages=(one_stage,),
                                 model=dataclasses.replace(recipe.model, pretrained=False, pretrained_file=None),
                                 runtime=dataclasses.replace(recipe.runtime, device=device.type))
    marks: list[float] = []
    monitor = GpuMonitor() if device.type == "cuda" and GpuMonitor.available() else None

    def on_step(stage: int, epoch: int, step: int) -> None:
        if device.type == "cuda" and len(marks) + 1 in (3, steps):  # only at the marks timed: the queue stays full
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        if len(marks) == 3 and monitor:
            monitor.start()
        if len(marks) >= steps:
            raise _Enough

    with tempfile.TemporaryDirectory() as tmp:
        try:
            train(recipe, out=Path(tmp) / "m", data=data, progress=False, on_step=on_step, force=True)
        except _Enough:
            pass
    utilisation = monitor.stop() if monitor else None
    if len(marks) < 4:
        raise RuntimeError(f"only {len(marks)} steps in one epoch of {data}; lower the steps")
    return {"loop": (len(marks) - 3) * b / (marks[-1] - marks[2]), "steps": len(marks), "gpu_util": utilisation}


def compiled_throughput(recipe: Recipe, classes: int, seconds: float, device: torch.device) -> dict:
    """The model alone under torch.compile: images/s, and the seconds compiling took (or the error)."""
    torch._dynamo.reset()
    start = time.perf_counter()
    try:
        ips = model_throughput(recipe, classes, seconds, device, compile=True)
    except Exception as e:  # no compiler, no Triton: the row keeps its other figures
        return {"compiled": None, "compile_error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]}
    return {"compiled": ips, "compile_s": round(time.perf_counter() - start - seconds, 1)}


def build_cache(recipe: Recipe, data: Path) -> tuple[float, int, int]:
    """(seconds, images) to bring the recipe's crop cache of `data` up to date, and the identities
    its fold 0 trains."""
    from kit.train.data import build_tables

    comp = load_competition(data)
    classes = len(build_tables(dataclasses.replace(recipe, fold=0, extra_train=None), comp, data)[2])
    use_boxes = comp.boxes is not None if recipe.input.boxes == "auto" else bool(recipe.input.boxes)
    spec = CropSpec(tuple(recipe.input.size), 1 if recipe.input.colour == "grey" else 3, use_boxes,
                    recipe.input.box_margin)
    start = time.perf_counter()
    cache = open_crops(comp, spec)
    return time.perf_counter() - start, len(cache.keys), classes


def bench_train(data: Path, recipes: list[str | Path] | None = None, seconds: float = 6.0, steps: int | None = None,
                full: bool | None = None, compile: bool | list[str] = False, print_fn=print) -> list[dict]:
    """Print (and return) the table of model-only and real-loop images/s for `recipes` (default
    models/*.yaml). `compile`: also time the model under torch.compile (True: every recipe; a
    list: those recipes only)."""
    root = Path(__file__).resolve().parents[2]
    paths = [Path(p) for p in recipes] if recipes else sorted((root / "models").glob("*.yaml"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    full = cuda if full is None else full
    steps = steps or (60 if cuda else 30)
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    print_fn(f"train: images/s on {where}; model = random batches, loop = train() on {data} "
             f"through the crop cache, steps 3..{steps}; target loop/model >= 0.8 (tiny), 0.9 (full size, GPU)")
    header = (f"  {'recipe':<20} {'backbone':<19} {'input':>8} {'batch':>5} {'model':>8} "
              + (f"{'compiled':>9} " if compile else "") + f"{'loop':>8} {'loop/model':>10} {'GPU busy':>8}  cache")
    print_fn(header)
    rows = []
    for path in paths:
        row: dict = {"recipe": path.stem}
        try:
            recipe = load_recipe(path)
            h, w = recipe.input.size
            row.update(backbone=recipe.model.backbone, input=f"{h}x{w}", batch=recipe.sampling.batch_size)
            if not is_tiny(recipe) and not full:
                row["skipped"] = "full size: GPU only"
            else:
                cache_s, n, classes = build_cache(recipe, data)
                row["cache"] = f"{n:,} images, {cache_s:.1f} s"
                row["model"] = model_throughput(recipe, classes, seconds, device)
                if compile is True or (compile and path.stem in compile):
                    row.update(compiled_throughput(recipe, classes, seconds, device))
                row.update(loop_throughput(recipe, data, steps, device))
                row["ratio"] = row["loop"] / row["model"]
                row["target"] = 0.8 if is_tiny(recipe) else 0.9
        except Exception as e:  # one recipe's failure is its row; the others still run
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
        finally:
            if cuda:
                torch.cuda.empty_cache()
        rows.append(row)
        print_fn(format_row(row, compile))
    return rows


def format_row(row: dict, compile: bool = False) -> str:
    head = f"  {row['recipe']:<20} {row.get('backbone', ''):<19} {row.get('input', ''):>8} {row.get('batch', ''):>5} "
    if "error" in row:
        return head + f"failed: {row['error']}"
    if "skipped" in row:
        return head + f"skipped ({row['skipped']})"
    util = f"{row['gpu_util']:.0f}%" if row.get("gpu_util") is not None else "-"
    verdict = "ok" if row["ratio"] >= row["target"] else f"below {row['target']:.0%}"
    compiled = (f"{row['compiled']:>9.0f} " if row.get("compiled") else f"{'failed' if 'compile_error' in row else '-':>9} ")
    note = f", compiling took {row['compile_s']:.0f} s" if row.get("compile_s") is not None else ""
    note += f", compile failed: {row['compile_error']}" if "compile_error" in row else ""
    return (head + f"{row['model']:>8.0f} " + (compiled if compile else "")
            + f"{row['loop']:>8.0f} {row['ratio']:>9.0%} {util:>8}  {row['cache']}  [{verdict}]{note}")
