"""The training loop: stages, epochs, checkpoints, resume, DDP, validation.

`train(recipe)` writes `models/<name>/` (docs/design.md, "The trained member"): recipe.yaml,
classes.txt, checkpoint.pt (after every epoch), metrics.json, train.log. With `fold: all` it trains
one such member per fold of folds.csv into `models/<name>/fold<k>/` (`train_every_fold`): an
out-of-fold member.

Reproducibility: the model is initialised from the recipe seed; each epoch's plan (rows, flips,
augmentation seeds) and its torch RNG (dropout) are drawn from (seed, epoch) alone; the learning
rate is a function of (stage, epoch, step). So a run resumed from its last checkpoint after a
kill repeats the interrupted epoch exactly, and an N-process DDP run sees the same global batches
as one process accumulating N micro-batches.

Run under `torchrun --nproc_per_node N scripts/train.py ...` for DistributedDataParallel (NCCL on
GPUs, gloo on the CPU); the global batch `sampling.batch_size` is split over the processes.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import math
import multiprocessing
import os
import shutil
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from kit.data.competition import load_competition
from kit.data.crops import CropSpec, open_crops
from kit.data.folds import read_folds
from kit.errors import KitError
from kit.io import atomic_path, cpu_count, write_text
from kit.progress import progress as progress_bar
from kit.train.budget import TimeBudget
from kit.train.data import Feeder, build_tables, make_plan, rank_batches
from kit.train.heads import Criterion
from kit.train.model import apply_freeze, build_model, member_info, read_checkpoint, resolve_norm, set_train_mode
from kit.train.recipe import ALL_FOLDS, REMOVED, Recipe, StageCfg, fold_dir, recipe_from_dict, save_recipe
from kit.train.validate import baselines, evaluate_probs

# Keys that may change between a run and its resume: they do not change what is learned.
RESUMABLE_CHANGES = ("name", "data", "runtime")
PROVISIONAL_EPOCHS = 10  # a stage by time, until its probe has planned it: the schedule's length meanwhile


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device_kind: str) -> "DistEnv":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        env = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
            env.started_here = True
        return env

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()


class Log:
    """train.log and the console, from the main process only."""

    def __init__(self, path: Path | None, echo: bool):
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            print(message, flush=True)


def _device(recipe: Recipe, local_rank: int) -> torch.device:
    want = recipe.runtime.device
    if want == "cuda" and not torch.cuda.is_available():
        raise KitError("runtime.device is cuda but no GPU is available; use device: auto or cpu")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        # every training batch has the recipe's one input size: cuDNN times its convolution kernels for
        # it once and keeps the fastest (a new shape, the last validation batch, is timed once too)
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def _threads(world: int, threads: int | None = None):
    """torch's CPU threads while training: `threads` if given; else the cores over the processes, or
    OMP_NUM_THREADS (torchrun sets 1) when given. Put back afterwards: a caller's setting survives."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, cpu_count() // max(1, world)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr(stage: StageCfg, progress: float, step_fraction: float, epochs: int) -> float:
    """Learning rate at `progress` epochs into a stage of `epochs` (warm-up, then constant or cosine)."""
    factor = 1.0
    if stage.warmup_epochs > 0:
        factor = min(1.0, (progress + step_fraction) / stage.warmup_epochs)
    if stage.schedule == "cosine":
        factor *= stage.final_lr + (1 - stage.final_lr) * 0.5 * (1 + math.cos(math.pi * min(progress / epochs, 1.0)))
    return stage.lr * factor


def _agree(env: DistEnv, value):
    """The main process's value in every process (a time budget's plan: each process measures its own)."""
    if env.world <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _param_groups(recipe: Recipe, model: nn.Module) -> list:
    """The trainable parameters: one group, or with `optim.head_lr` != 1 the backbone's and the
    head's, each with its `lr_scale` (the schedule's lr times it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optim.head_lr == 1.0:
        return params
    net = getattr(model, "module", model)
    head = {id(p) for part in (net.head, net.species_head) if part is not None for p in part.parameters()}
    groups = [{"params": [p for p in params if id(p) not in head], "lr_scale": 1.0},
              {"params": [p for p in params if id(p) in head], "lr_scale": recipe.optim.head_lr}]
    return [g for g in groups if g["params"]]


def _optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    o = recipe.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=0.0, weight_decay=o.weight_decay)


def _epoch_seed(recipe: Recipe, global_epoch: int) -> tuple[int, int]:
    return (recipe.seed, global_epoch)


def _as_run(saved: dict) -> dict:
    """A checkpoint's recipe with every key of this release (keys added since take their defaults,
    which reproduce what the older release did)."""
    return recipe_from_dict(saved, "checkpoint", checkpoint=True).to_dict()


def _compare(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        if (not prefix and key in RESUMABLE_CHANGES) or prefix + key in REMOVED:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _compare(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def write_member_files(out: Path, recipe: Recipe, classes: list[str]) -> None:
    """A member's recipe.yaml (the recipe as run) and classes.txt (the head's identities, in order)."""
    save_recipe(recipe, out / "recipe.yaml")
    write_text(out / "classes.txt", "".join(c + "\n" for c in classes))


def save_checkpoint(path: Path, model: nn.Module, recipe: Recipe, classes: list[str], info, **training) -> None:
    """checkpoint.pt (docs/design.md, "The trained member"): the weights, recipe, classes and MemberInfo,
    and `training`'s state (epoch, stage, optimizer, ... for --resume); written atomically."""
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "recipe": recipe.to_dict(), "classes": list(classes), "info": info.to_dict(), **training}
    buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError; Python's names it
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


@torch.no_grad()
def predict(model: nn.Module, feeder: Feeder, batch_size: int, autocast, activation: str, num_classes: int):
    """(probabilities (N, K) of the unflipped columns, targets, ok, the species head's top-1 (N,) or
    None) over the feeder's table, in order."""
    model.eval()
    probs, oks, species = [], [], []
    for batch in feeder.plain(batch_size):
        with autocast():
            logits, _, *species_logits = model(batch.x, species=model.species_head is not None)
        logits = logits.float()
        p = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=1)
        probs.append(p[:, :num_classes])  # stays on the device: one copy back at the end, no wait per batch
        species.extend(s.argmax(dim=1) for s in species_logits)
        oks.append(batch.ok)
    if not probs:
        return np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), None
    return (torch.cat(probs).cpu().numpy(), feeder.table.targets.copy(), np.concatenate(oks),
            torch.cat(species).cpu().numpy() if species else None)


def train(recipe: Recipe, out: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
          resume: bool = False, force: bool = False, progress: bool = True,
          on_step: Callable[[int, int, int], None] | None = None, threads: int | None = None,
          jobs: int = 1) -> Path:
    """Train one member into `out` (default models/<name>); returns the directory.

    resume: continue from out/checkpoint.pt (the recipe must match but for name, data and runtime).
    force: start over even if out/ holds a checkpoint. on_step(stage, epoch, step): called after
    every optimizer step (tests use it to interrupt a run). threads: CPU threads (default: the cores
    over the processes). A recipe with `fold: all` trains every fold (`train_every_fold`, `jobs` of
    them at once) and returns the parent directory.
    """
    if data is not None:  # recipe.yaml records the competition trained on: export reads it from there
        recipe = dataclasses.replace(recipe, data=str(data))
    if recipe.fold == ALL_FOLDS:
        return train_every_fold(recipe, out, data, resume, force, progress, on_step, jobs=jobs)
    env = _dist_env(recipe)
    try:
        with _threads(env.world if _device(recipe, env.local_rank).type == "cpu" else 1, threads):
            return _train(recipe, Path(out) if out else Path("models") / recipe.name, Path(data or recipe.data),
                          resume, force, progress, on_step, env, load_competition)
    finally:
        env.close()


@dataclass
class Task:
    """One training run for `train_tasks`: train(recipe, out, data, resume, force)."""

    recipe: Recipe
    out: Path
    data: Path | None = None
    resume: bool = False
    force: bool = False


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit when the process that started it is gone (a killed demo or train.py must
    not leave trainings running with nobody to collect them)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_task(task: Task, threads: int) -> Path:
    return train(task.recipe, task.out, task.data, task.resume, task.force, progress=False, threads=threads)


def train_tasks(tasks: list[Task], jobs: int, done: Callable[[Task, Path], None] | None = None) -> list[Path]:
    """Run training tasks `jobs` at a time in fresh processes, the cores shared among them; in order
    of the list as workers free up. On the CPU, two one-thread trainings of a small network go ~1.4x
    faster together than one two-thread training (small convolutions scale badly over threads), and
    each overlaps its data loading with the other's compute. The first failure stops the rest and is
    raised. `done(task, out)` is called as each finishes. CPU only: GPUs train one run at a time (or
    one per GPU under torchrun)."""
    threads = max(1, cpu_count() // jobs)
    ctx = multiprocessing.get_context("spawn")  # a fresh torch per process: no forked thread pools
    out = []
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_exit_with_parent,
                                                initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_run_task, t, threads): t for t in tasks}
        try:
            for future in concurrent.futures.as_completed(futures):
                path = future.result()
                out.append(path)
                if done is not None:
                    done(futures[future], path)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out


def recipe_tasks(recipe: Recipe, data: str | os.PathLike | None = None, resume: bool = False,
                 force: bool = False) -> list[Task]:
    """A recipe's trainings for `train_tasks`, into models/<name>: its folds' for `fold: all`, else one."""
    out = Path("models") / recipe.name
    if data is not None:
        recipe = dataclasses.replace(recipe, data=str(data))
    if recipe.fold == ALL_FOLDS:
        return fold_tasks(recipe, out, data, resume, force, Log(out / "train.log", echo=False))
    if (out / "checkpoint.pt").is_file() and not (resume or force):
        raise _already_trained_error(out)
    return [Task(recipe, out, Path(data) if data else None, resume, force)]


def _dist_env(recipe: Recipe) -> DistEnv:
    want_cuda = recipe.runtime.device == "cuda" or (recipe.runtime.device == "auto" and torch.cuda.is_available())
    return DistEnv.setup("cuda" if want_cuda else "cpu")


def _already_trained_error(out: Path) -> KitError:
    return KitError(f"{out}: already holds a checkpoint; use --resume to continue it or --force to start over")


def train_every_fold(recipe: Recipe, out: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                     resume: bool = False, force: bool = False, progress: bool = True,
                     on_step: Callable[[int, int, int], None] | None = None, jobs: int = 1) -> Path:
    """Train one member per fold of folds.csv (ascending, -1 excluded) into out/fold<k>/; returns out.

    Each fold is an ordinary `train` run of the recipe with `fold: k`, named `<name>.fold<k>`; out/
    (default models/<name>) gets the recipe as run (`fold: all`) and a train.log of one line per fold
    start and finish. resume: skip the folds already trained, continue the interrupted one from its
    checkpoint; force: train every fold again. jobs: folds trained at once (`train_tasks`, CPU).
    """
    out = Path(out) if out else Path("models") / recipe.name
    env = _dist_env(recipe)  # once for every fold: train() reuses the process group, never re-creates it
    if jobs > 1 and env.world > 1:
        env.close()
        raise KitError("--jobs runs folds side by side on the CPU; under torchrun train one fold at a time")
    try:
        log = Log(out / "train.log" if env.main else None, echo=progress)
        tasks = fold_tasks(recipe, out, data, resume, force, log if env.main else None)
        env.barrier()
        if jobs > 1:
            log(f"{len(tasks)} fold(s) to train, {jobs} at a time")

            def done(task: Task, path: Path) -> None:
                log(f"fold {task.recipe.fold}: done{val_map5_note(path)}")

            train_tasks(tasks, jobs, done)
            return out
        for task in tasks:
            t0 = time.time()
            log(f"fold {task.recipe.fold}: {'resuming' if task.resume else 'training'} {task.recipe.name} in {task.out}")
            train(task.recipe, out=task.out, data=task.data, resume=task.resume, force=task.force, progress=progress,
                  on_step=on_step)
            if env.main:
                log(f"fold {task.recipe.fold}: done in {time.time() - t0:.0f}s{val_map5_note(task.out)}")
    finally:
        env.close()
    return out


def fold_tasks(recipe: Recipe, out: Path, data: str | os.PathLike | None = None, resume: bool = False,
               force: bool = False, log: Callable[[str], None] | None = None) -> list[Task]:
    """The checks of an out-of-fold run, its parent directory (recipe.yaml, a fresh train.log unless
    resuming) and the fold trainings still to do (with resume, finished folds are skipped)."""
    data_dir = Path(data or recipe.data)
    folds_csv = data_dir / "folds.csv"
    if not folds_csv.is_file():
        raise KitError(f"{folds_csv}: not found; fold: all trains one member per fold of it "
                       f"(run `python scripts/prepare.py {data_dir}` first)")
    folds = sorted(int(k) for k in set(read_folds(folds_csv)["fold"]) - {-1})
    if not folds:
        raise KitError(f"{folds_csv}: no validation fold (every row is -1); fold: all needs at least one")
    if (out / "checkpoint.pt").is_file():
        raise KitError(f"{out}: holds a single-fold member (checkpoint.pt); train every fold into another --out")
    ours = {fold_dir(out, k) for k in folds}
    others = sorted(p.parent for p in out.glob("fold*/checkpoint.pt") if p.parent not in ours)
    if others and not force:
        raise KitError(f"{others[0]}: not a fold of {folds_csv} (folds {folds}); use --force to start over")
    if any((fold_dir(out, k) / "checkpoint.pt").is_file() for k in folds) and not (resume or force):
        raise _already_trained_error(out)
    if log is not None:  # the main process sets the parent up

        out.mkdir(parents=True, exist_ok=True)
        for stale in others:  # folds of an earlier folds.csv: --force starts over
            shutil.rmtree(stale)
        if not resume:
            (out / "train.log").unlink(missing_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
        log(f"{recipe.name}: every fold of {folds_csv} ({', '.join(map(str, folds))}), one member each in {out}/fold<k>/")
    tasks = []
    for k in folds:
        member = dataclasses.replace(recipe, name=f"{recipe.name}.fold{k}", fold=k)
        child = fold_dir(out, k)
        started = (child / "checkpoint.pt").is_file()
        if resume and started and _fully_trained(child / "checkpoint.pt", member):
            if log is not None:
                log(f"fold {k}: already trained in {child}; skipped")
            continue
        tasks.append(Task(member, child, Path(data) if data else None, resume and started, force))
    return tasks


def _fully_trained(ckpt_path: Path, recipe: Recipe) -> bool:
    """Every stage done, by this recipe (a changed recipe is left to train(), which names the change)."""
    saved = read_checkpoint(ckpt_path)
    return saved["stage"] >= len(recipe.stages) and not _compare(_as_run(saved["recipe"]), recipe.to_dict())


def val_map5_note(member_dir: Path) -> str:
    try:
        epochs = json.loads((member_dir / "metrics.json").read_text())["epochs"]
    except (OSError, ValueError, KeyError):
        return ""
    val = epochs[-1].get("val") if epochs else None
    return f", val MAP@5 {val['map5']:.4f}" if val else ""


def _resumable(recipe: Recipe, ckpt_path: Path, resume: bool, force: bool, classes: list[str], species: list[str],
               env) -> dict | None:
    """The checkpoint to resume from, or None to start afresh; a KitError when there is one and the
    run may not use it (no --resume, or the recipe, identities or species changed since)."""
    if resume and not ckpt_path.is_file() and env.main:
        warnings.warn(f"--resume: {ckpt_path} does not exist; starting from scratch", stacklevel=3)
    if not ckpt_path.is_file() or force:
        return None
    if not resume:
        raise _already_trained_error(ckpt_path.parent)
    saved = read_checkpoint(ckpt_path)
    changed = _compare(_as_run(saved["recipe"]), recipe.to_dict())
    if changed:
        raise KitError(f"{ckpt_path}: the recipe changed since this checkpoint ({'; '.join(changed[:3])}); "
                       "use --force to start over")
    if list(saved["classes"]) != classes:
        raise KitError(f"{ckpt_path}: the training identities changed ({len(saved['classes'])} then, {len(classes)} now); "
                       "use --force to start over")
    then = list(saved["info"].get("species", []))
    if then and then != species:
        raise KitError(f"{ckpt_path}: the species of train.csv changed since this checkpoint's species head "
                       f"({len(then)} then, {len(species)} now); use --force to start over")
    return saved


def _validate(model: nn.Module, feeder: Feeder, val_t, batch_size: int, autocast, info, K: int, bad_images: set[str],
              log) -> dict:
    """The epoch's validation metrics (MAP@5 and its threshold, and the species head's accuracy);
    a validation image that cannot be read joins `bad_images`, said once."""
    probs, targets, ok, species_top1 = predict(model, feeder, batch_size, autocast, info.activation, K)
    for name, good in zip(val_t.paths, ok.tolist()):
        if not good and str(name) not in bad_images:
            bad_images.add(str(name))
            log(f"warning: skipping bad validation image {name}")
    out = evaluate_probs(probs[ok], targets[ok])
    if species_top1 is not None:
        has = ok & (val_t.species >= 0)
        out["species_accuracy"] = round(float((species_top1[has] == val_t.species[has]).mean()), 4) if has.any() else None
    return out


def _train(recipe, out, data_dir, resume, force, progress, on_step, env, load_competition) -> Path:
    device = _device(recipe, env.local_rank)
    b, a = recipe.sampling.batch_size, recipe.optim.accumulate
    if b % (env.world * a):
        raise KitError(f"sampling.batch_size {b} must divide by processes x optim.accumulate = {env.world} x {a}")
    if recipe.use_pairs and (b // env.world // a) % 2:
        raise KitError(f"same-id pairs need an even micro-batch; batch_size {b} / {env.world} process(es) / accumulate {a} is odd")

    comp = load_competition(data_dir)
    train_t, val_t, classes = build_tables(recipe, comp, data_dir)
    K = len(classes)
    use_boxes = comp.boxes is not None if recipe.input.boxes == "auto" else bool(recipe.input.boxes)
    if use_boxes and comp.boxes is None:
        raise KitError(f"input.boxes is true but {data_dir}/bounding_boxes.csv does not exist")

    ckpt_path = out / "checkpoint.pt"
    saved = _resumable(recipe, ckpt_path, resume, force, classes, train_t.species_names, env)

    torch.manual_seed(recipe.seed)
    # Pretrained weights: fetched by the main process only (DDP copies its parameters to the others
    # when it wraps the model), and not at all when a checkpoint replaces them.
    species = train_t.species_names
    if recipe.head.species_weight > 0 and not species:
        raise KitError(f"head.species_weight {recipe.head.species_weight:g} trains a species head, but "
                       f"{data_dir / 'train.csv'} has no species column; set it to 0")
    model = build_model(recipe, K, pretrained=None if env.main and saved is None else False, num_species=len(species))
    mean, std = resolve_norm(recipe, model.backbone)
    info = member_info(recipe, classes, mean, std, use_boxes, species)
    if saved is not None:
        model.load_state_dict(saved["model"])

    log = Log(out / "train.log" if env.main else None, echo=progress)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        if saved is None:
            (out / "train.log").unlink(missing_ok=True)
            (out / "metrics.json").unlink(missing_ok=True)
        write_member_files(out, recipe, classes)
    env.barrier()

    r = recipe.runtime
    use_amp = r.amp == "bf16" or (r.amp == "auto" and device.type == "cuda")
    channels_last = r.channels_last is True or (r.channels_last == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    if env.world > 1 and r.sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    cache = open_crops(comp, CropSpec.of(info), progress=progress and env.main, echo=log if env.main else None)
    feeder = Feeder(cache, train_t, info, device)
    val_feeder = Feeder(cache, val_t, info, device) if env.main else None
    counts = np.bincount(train_t.targets[train_t.targets >= 0], minlength=K)
    criterion = Criterion(recipe.head, info.num_outputs, recipe.flip_twins,
                          np.tile(counts, 2) if recipe.flip_twins else counts)  # a twin: its identity's mirrors

    metrics = saved.get("metrics") if saved else None
    if metrics is None:
        metrics = {"name": recipe.name, "fold": recipe.fold, "classes": K,
                   "train_images": len(train_t), "val_images": len(val_t),
                   "baselines": baselines(val_t.targets, train_t.targets, K) if len(val_t) else None,
                   "epochs": [], "bad_images": []}
    bad_images: set[str] = set(metrics["bad_images"])
    if env.main:
        log(f"{recipe.name}: {recipe.model.backbone} + {recipe.head.type} head, {K} identities"
            f"{' (x2 flip twins)' if recipe.flip_twins else ''}, {len(train_t)} train / {len(val_t)} val images, "
            f"{tuple(recipe.input.size)} input, boxes {'on' if use_boxes else 'off'}, on {device}"
            f"{f' x{env.world} processes' if env.world > 1 else ''}")
        if saved is not None:
            log(f"resuming after epoch {saved['epoch']} (stage {saved['stage'] + 1}, epoch {saved['stage_epoch']} of it)")

    start_stage = saved["stage"] if saved else 0
    global_epoch = saved["epoch"] if saved else 0
    if start_stage >= len(recipe.stages) and env.main:
        log(f"{ckpt_path}: already trained ({global_epoch} epochs); nothing to resume")
    for s, stage in enumerate(recipe.stages):
        if s < start_stage:
            continue
        trainable = apply_freeze(model, stage.freeze, recipe.model.freeze_bn)
        optimizer = _optimizer(recipe, _param_groups(recipe, model))
        first_epoch = saved["stage_epoch"] if saved and s == saved["stage"] else 0
        if first_epoch > 0 and saved.get("optimizer") and saved.get("optimizer_stage") == s:
            optimizer.load_state_dict(saved["optimizer"])
        net: nn.Module = model
        ddp = None
        if env.world > 1:
            net = ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if r.compile:
            net = torch.compile(net)
        # the stage's length: its epochs, or by time the count a resumed run planned, else the budget's
        # (until its probe decides, the schedule runs as if the stage had `epochs`, else PROVISIONAL)
        planned = saved.get("planned_epochs") if saved and s == saved["stage"] and stage.minutes else None
        budget = None
        if stage.minutes and planned is None:
            per_epoch = len(rank_batches(len(make_plan(train_t, recipe, stage, _epoch_seed(recipe, global_epoch))),
                                         b, env.rank, env.world, a)) // a
            budget = TimeBudget(stage.minutes * 60, per_epoch, b, len(val_t) if env.main else 0, stage.epochs)
        stage_epochs = planned or stage.epochs or PROVISIONAL_EPOCHS
        if env.main:
            length = (f"{stage.epochs} epoch(s)" if not stage.minutes else
                      f"{stage.minutes:g} minutes" + (f", resuming the {planned} epoch(s) planned" if planned else ""))
            log(f"stage {s + 1}/{len(recipe.stages)} {stage.name}: {length}, lr {stage.lr:g} "
                f"({stage.schedule}), freeze {stage.freeze}, identities with >= {stage.min_images} image(s), "
                f"{trainable:,} trainable parameters")

        e = first_epoch
        while e < stage_epochs:
            t0 = time.time()
            if budget is not None:
                budget.epoch_start()
            torch.manual_seed(hash((recipe.seed, global_epoch, env.rank)) % 2**62)
            plan = make_plan(train_t, recipe, stage, _epoch_seed(recipe, global_epoch))
            batches = rank_batches(len(plan), b, env.rank, env.world, a)
            steps = len(batches) // a
            set_train_mode(model, recipe.model.freeze_bn)
            bar = progress_bar(steps, f"epoch {global_epoch + 1}", "step", enabled=progress and env.main, every=30.0)
            loss_sum, seen, step = torch.zeros((), device=device), 0, 0
            micro = feeder.train(plan, batches, recipe, K)
            for step in range(steps):
                lr = _lr(stage, e + step / steps, 1 / steps, stage_epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                step_loss = torch.zeros((), device=device)
                for m in range(a):
                    batch = next(micro)
                    ok = batch.ok
                    if not ok.all():
                        for name, good in zip(batch.names, ok.tolist()):
                            if not good and name not in bad_images:
                                bad_images.add(name)
                                warnings.warn(f"skipping bad image {name}", stacklevel=1)
                                if env.main:
                                    log(f"warning: skipping bad image {name}")
                    x, target = batch.x, batch.target
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    weight = batch.weight
                    sync = ddp.no_sync() if (ddp is not None and m < a - 1) else contextlib.nullcontext()
                    with sync:
                        with autocast():
                            logits, embedding, species_logits = net(x, species=True) if info.species else (*net(x), None)
                        loss = criterion(logits, embedding, target, weight, species_logits, batch.species) / a
                        loss.backward()
                    step_loss += loss.detach()  # no float() here: that would wait for the GPU every step
                    seen += int(ok.sum())
                if recipe.optim.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += step_loss
                if progress and env.main and (step % 20 == 0 or step == steps - 1):
                    bar.set_postfix(loss=f"{float(step_loss):.4f}", lr=f"{lr:.2g}",
                                    img_s=f"{seen * env.world / max(time.time() - t0, 1e-9):.0f}")
                bar.update()
                if budget is not None:
                    said = budget.step()  # every process completes the probe at the same step
                    if said is not None:
                        stage_epochs = budget.epochs = _agree(env, budget.epochs)
                        if env.main:
                            log(f"stage {s + 1}: {said}")
                if on_step is not None:
                    on_step(s, e, step)
            bar.close()
            micro.close()
            seconds = time.time() - t0
            epoch_loss = float(loss_sum) / max(steps, 1)
            if env.world > 1:
                stats = torch.tensor([epoch_loss, float(seen)], dtype=torch.float64, device=device)  # NCCL: on the GPU
                dist.all_reduce(stats)
                epoch_loss, seen = float(stats[0]) / env.world, int(stats[1])
                gathered = [None] * env.world
                dist.all_gather_object(gathered, sorted(bad_images))
                bad_images = set().union(*map(set, gathered))
            global_epoch += 1

            if env.main:
                entry = {"epoch": global_epoch, "stage": s + 1, "stage_epoch": e + 1, "loss": round(epoch_loss, 5),
                         "lr": _lr(stage, e + 1 - 1e-9, 0, stage_epochs), "seconds": round(seconds, 2),
                         "images_per_s": round(seen / max(seconds, 1e-9), 1)}
                if len(val_t):
                    entry["val"] = _validate(model, val_feeder, val_t, r.val_batch_size, autocast, info, K, bad_images, log)
                metrics["epochs"].append(entry)
                metrics["bad_images"] = sorted(bad_images)
                val = entry.get("val")
                log(f"epoch {global_epoch} (stage {s + 1}.{e + 1}): loss {epoch_loss:.4f}, "
                    f"{entry['images_per_s']:.0f} img/s, {seconds:.0f}s"
                    + (f", val MAP@5 {val['map5']:.4f} (threshold {val['threshold']}, "
                       f"{val['map5_without_unknown']:.4f} without the unknown label"
                       + (f", species {val['species_accuracy']:.1%}" if val.get("species_accuracy") is not None else "")
                       + ")" if val else ""))
            e += 1
            if budget is not None:  # validated: the plan against the time the epochs really take
                said = budget.epoch_end(e)
                stage_epochs = budget.epochs = _agree(env, budget.epochs)
                if env.main and said:
                    log(f"stage {s + 1}: {said}")
            if env.main:
                done_stage = e >= stage_epochs
                entry["stage_epochs"] = stage_epochs
                if done_stage and stage.minutes:
                    spent = f" in {budget.elapsed / 60:.1f} of {stage.minutes:g} minutes" if budget is not None else ""
                    log(f"stage {s + 1}: {e} epoch(s){spent}; `epochs: {e}` in place of `minutes` trains them again")
                save_checkpoint(ckpt_path, model, recipe, classes, info,
                                epoch=global_epoch, stage=s + 1 if done_stage else s,
                                stage_epoch=0 if done_stage else e,
                                planned_epochs=None if done_stage or not stage.minutes else stage_epochs,
                                optimizer=optimizer.state_dict(), optimizer_stage=s,
                                scheduler={"stage": s, "epoch": e}, rng={"torch": torch.get_rng_state()},
                                metrics=metrics)
                write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
            env.barrier()
        saved = None

    if env.main:
        if metrics["bad_images"]:
            log(f"{len(metrics['bad_images'])} bad image(s) skipped (listed in metrics.json)")
    return out
