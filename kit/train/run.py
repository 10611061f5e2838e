"""One member's training run, in this process: `train_member` builds it (`build_run`: checks,
data, model, feeders, loss, log), then trains its stages (`_train_stage`), each epoch's optimizer
steps (`_train_epoch`) and its validation, log line and checkpoint (`_epoch_entry`). kit/train/loop.py
decides which runs to make (a fold, every fold, several at once) and hands each here.

Reproducibility: the model is initialised from the recipe seed; each epoch's plan (rows, flips,
augmentation seeds) and its torch RNG (dropout) are drawn from (seed, epoch) alone; the learning
rate is a function of (stage, epoch, step). So a run resumed from its last checkpoint after a
kill repeats the interrupted epoch exactly, and an N-process DDP run sees the same global batches
as one process accumulating N micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
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
from kit.errors import KitError
from kit.io import write_text
from kit.progress import progress as progress_bar
from kit.train.budget import TimeBudget
from kit.train.checkpoint import resumable, save_checkpoint, write_member_files
from kit.train.data import Feeder, ImageTable, build_tables, make_plan, rank_batches
from kit.train.heads import Criterion
from kit.train.model import MemberInfo, apply_freeze, build_model, member_info, resolve_norm, set_train_mode
from kit.train.recipe import Recipe, StageCfg
from kit.train.validate import baselines, evaluate_probs

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


def device_for(recipe: Recipe, local_rank: int) -> torch.device:
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


@dataclass
class Run:
    """One member's training, built once by `build_run`: what each stage and epoch works with."""

    recipe: Recipe
    out: Path
    env: DistEnv
    device: torch.device
    model: nn.Module
    info: MemberInfo
    classes: list[str]
    train_t: ImageTable
    val_t: ImageTable
    feeder: Feeder
    val_feeder: Feeder | None
    criterion: Criterion
    log: Log
    metrics: dict
    bad_images: set[str]
    autocast: Callable
    channels_last: bool
    progress: bool
    on_step: Callable[[int, int, int], None] | None
    ckpt_path: Path
    saved: dict | None  # the checkpoint resumed from, until its stage is done

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def train_member(recipe: Recipe, out: Path, data_dir: Path, resume: bool, force: bool, progress: bool,
                 on_step, env: DistEnv) -> Path:
    """Train one member into `out` (kit.train.loop.train's work, in this process): build the run,
    then its stages from where the checkpoint left off."""
    run = build_run(recipe, out, data_dir, resume, force, progress, on_step, env)
    start_stage = run.saved["stage"] if run.saved else 0
    global_epoch = run.saved["epoch"] if run.saved else 0
    if start_stage >= len(recipe.stages) and env.main:
        run.log(f"{run.ckpt_path}: already trained ({global_epoch} epochs); nothing to resume")
    for s, stage in enumerate(recipe.stages):
        if s >= start_stage:
            global_epoch = _train_stage(run, s, stage, global_epoch)
            run.saved = None
    if env.main and run.metrics["bad_images"]:
        run.log(f"{len(run.metrics['bad_images'])} bad image(s) skipped (listed in metrics.json)")
    return out


def build_run(recipe: Recipe, out: Path, data_dir: Path, resume: bool, force: bool, progress: bool, on_step,
              env: DistEnv) -> Run:
    """Check the recipe against the data and the processes, load the data and the checkpoint to
    resume, build the model, feeders and loss, start the log and the member's files."""
    device = device_for(recipe, env.local_rank)
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
    saved = resumable(recipe, ckpt_path, resume, force, classes, train_t.species_names, env)

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
    if env.main:
        log(f"{recipe.name}: {recipe.model.backbone} + {recipe.head.type} head, {K} identities"
            f"{' (x2 flip twins)' if recipe.flip_twins else ''}, {len(train_t)} train / {len(val_t)} val images, "
            f"{tuple(recipe.input.size)} input, boxes {'on' if use_boxes else 'off'}, on {device}"
            f"{f' x{env.world} processes' if env.world > 1 else ''}")
        if saved is not None:
            log(f"resuming after epoch {saved['epoch']} (stage {saved['stage'] + 1}, epoch {saved['stage_epoch']} of it)")
    return Run(recipe, out, env, device, model, info, classes, train_t, val_t, feeder, val_feeder, criterion, log, metrics,
               set(metrics["bad_images"]), autocast, channels_last, progress, on_step, ckpt_path, saved)


def _train_stage(run: Run, s: int, stage: StageCfg, global_epoch: int) -> int:
    """Train stage `s` from its first epoch not yet trained; returns the global epoch count after it."""
    recipe, env, saved, model = run.recipe, run.env, run.saved, run.model
    trainable = apply_freeze(model, stage.freeze, recipe.model.freeze_bn)
    optimizer = _optimizer(recipe, _param_groups(recipe, model))
    first_epoch = saved["stage_epoch"] if saved and s == saved["stage"] else 0
    if first_epoch > 0 and saved.get("optimizer") and saved.get("optimizer_stage") == s:
        optimizer.load_state_dict(saved["optimizer"])
    net: nn.Module = model
    ddp = None
    if env.world > 1:
        net = ddp = nn.parallel.DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if recipe.runtime.compile:
        net = torch.compile(net)
    # the stage's length: its epochs, or by time the count a resumed run planned, else the budget's
    # (until its probe decides, the schedule runs as if the stage had `epochs`, else PROVISIONAL)
    planned = saved.get("planned_epochs") if saved and s == saved["stage"] and stage.minutes else None
    budget = None
    b, a = recipe.sampling.batch_size, recipe.optim.accumulate
    if stage.minutes and planned is None:
        per_epoch = len(rank_batches(len(make_plan(run.train_t, recipe, stage, _epoch_seed(recipe, global_epoch))),
                                     b, env.rank, env.world, a)) // a
        budget = TimeBudget(stage.minutes * 60, per_epoch, b, len(run.val_t) if env.main else 0, stage.epochs)
    stage_epochs = planned or stage.epochs or PROVISIONAL_EPOCHS
    if env.main:
        length = (f"{stage.epochs} epoch(s)" if not stage.minutes else
                  f"{stage.minutes:g} minutes" + (f", resuming the {planned} epoch(s) planned" if planned else ""))
        run.log(f"stage {s + 1}/{len(recipe.stages)} {stage.name}: {length}, lr {stage.lr:g} "
                f"({stage.schedule}), freeze {stage.freeze}, identities with >= {stage.min_images} image(s), "
                f"{trainable:,} trainable parameters")

    e = first_epoch
    while e < stage_epochs:
        t0 = time.time()
        if budget is not None:
            budget.epoch_start()
        epoch_loss, seen, stage_epochs = _train_epoch(run, s, stage, e, global_epoch, stage_epochs, net, ddp,
                                                      optimizer, budget, t0)
        seconds = time.time() - t0
        if env.world > 1:
            stats = torch.tensor([epoch_loss, float(seen)], dtype=torch.float64, device=run.device)  # NCCL: on the GPU
            dist.all_reduce(stats)
            epoch_loss, seen = float(stats[0]) / env.world, int(stats[1])
            gathered = [None] * env.world
            dist.all_gather_object(gathered, sorted(run.bad_images))
            run.bad_images = set().union(*map(set, gathered))
        global_epoch += 1
        entry = _epoch_entry(run, s, stage, e, global_epoch, stage_epochs, epoch_loss, seen, seconds) if env.main else None
        e += 1
        if budget is not None:  # validated: the plan against the time the epochs really take
            said = budget.epoch_end(e)
            stage_epochs = budget.epochs = _agree(env, budget.epochs)
            if env.main and said:
                run.log(f"stage {s + 1}: {said}")
        if env.main:
            done_stage = e >= stage_epochs
            entry["stage_epochs"] = stage_epochs
            if done_stage and stage.minutes:
                spent = f" in {budget.elapsed / 60:.1f} of {stage.minutes:g} minutes" if budget is not None else ""
                run.log(f"stage {s + 1}: {e} epoch(s){spent}; `epochs: {e}` in place of `minutes` trains them again")
            save_checkpoint(run.ckpt_path, model, recipe, run.classes, run.info,
                            epoch=global_epoch, stage=s + 1 if done_stage else s,
                            stage_epoch=0 if done_stage else e,
                            planned_epochs=None if done_stage or not stage.minutes else stage_epochs,
                            optimizer=optimizer.state_dict(), optimizer_stage=s,
                            scheduler={"stage": s, "epoch": e}, rng={"torch": torch.get_rng_state()},
                            metrics=run.metrics)
            write_text(run.out / "metrics.json", json.dumps(run.metrics, indent=1) + "\n")
        env.barrier()
    return global_epoch


def _train_epoch(run: Run, s: int, stage: StageCfg, e: int, global_epoch: int, stage_epochs: int, net: nn.Module,
                 ddp, optimizer, budget: TimeBudget | None, t0: float) -> tuple[float, int, int]:
    """One epoch's optimizer steps: (its mean loss, the images seen, the stage's epochs, which a
    time budget's probe may decide during it)."""
    recipe, env, K = run.recipe, run.env, run.num_classes
    a = recipe.optim.accumulate
    torch.manual_seed(hash((recipe.seed, global_epoch, env.rank)) % 2**62)
    plan = make_plan(run.train_t, recipe, stage, _epoch_seed(recipe, global_epoch))
    batches = rank_batches(len(plan), recipe.sampling.batch_size, env.rank, env.world, a)
    steps = len(batches) // a
    set_train_mode(run.model, recipe.model.freeze_bn)
    bar = progress_bar(steps, f"epoch {global_epoch + 1}", "step", enabled=run.progress and env.main, every=30.0)
    loss_sum, seen = torch.zeros((), device=run.device), 0
    micro = run.feeder.train(plan, batches, recipe, K)
    for step in range(steps):
        lr = _lr(stage, e + step / steps, 1 / steps, stage_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        step_loss = torch.zeros((), device=run.device)
        for m in range(a):
            batch = next(micro)
            _note_bad_images(run, batch)
            x = batch.x.contiguous(memory_format=torch.channels_last) if run.channels_last else batch.x
            sync = ddp.no_sync() if (ddp is not None and m < a - 1) else contextlib.nullcontext()
            with sync:
                with run.autocast():
                    logits, embedding, species_logits = net(x, species=True) if run.info.species else (*net(x), None)
                loss = run.criterion(logits, embedding, batch.target, batch.weight, species_logits, batch.species) / a
                loss.backward()
            step_loss += loss.detach()  # no float() here: that would wait for the GPU every step
            seen += int(batch.ok.sum())
        if recipe.optim.grad_clip:
            nn.utils.clip_grad_norm_(run.model.parameters(), recipe.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += step_loss
        if run.progress and env.main and (step % 20 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(step_loss):.4f}", lr=f"{lr:.2g}",
                            img_s=f"{seen * env.world / max(time.time() - t0, 1e-9):.0f}")
        bar.update()
        if budget is not None:
            said = budget.step()  # every process completes the probe at the same step
            if said is not None:
                stage_epochs = budget.epochs = _agree(env, budget.epochs)
                if env.main:
                    run.log(f"stage {s + 1}: {said}")
        if run.on_step is not None:
            run.on_step(s, e, step)
    bar.close()
    micro.close()
    return float(loss_sum) / max(steps, 1), seen, stage_epochs


def _note_bad_images(run: Run, batch) -> None:
    """A training image that cannot be read: skipped, warned once."""
    if batch.ok.all():
        return
    for name, good in zip(batch.names, batch.ok.tolist()):
        if not good and name not in run.bad_images:
            run.bad_images.add(name)
            warnings.warn(f"skipping bad image {name}", stacklevel=1)
            if run.env.main:
                run.log(f"warning: skipping bad image {name}")


def _epoch_entry(run: Run, s: int, stage: StageCfg, e: int, global_epoch: int, stage_epochs: int, epoch_loss: float,
                 seen: int, seconds: float) -> dict:
    """The epoch's line in metrics.json (validated, when there is a validation split) and train.log."""
    entry = {"epoch": global_epoch, "stage": s + 1, "stage_epoch": e + 1, "loss": round(epoch_loss, 5),
             "lr": _lr(stage, e + 1 - 1e-9, 0, stage_epochs), "seconds": round(seconds, 2),
             "images_per_s": round(seen / max(seconds, 1e-9), 1)}
    if len(run.val_t):
        entry["val"] = _validate(run.model, run.val_feeder, run.val_t, run.recipe.runtime.val_batch_size, run.autocast,
                                 run.info, run.num_classes, run.bad_images, run.log)
    run.metrics["epochs"].append(entry)
    run.metrics["bad_images"] = sorted(run.bad_images)
    val = entry.get("val")
    run.log(f"epoch {global_epoch} (stage {s + 1}.{e + 1}): loss {epoch_loss:.4f}, "
            f"{entry['images_per_s']:.0f} img/s, {seconds:.0f}s"
            + (f", val MAP@5 {val['map5']:.4f} (threshold {val['threshold']}, "
               f"{val['map5_without_unknown']:.4f} without the unknown label"
               + (f", species {val['species_accuracy']:.1%}" if val.get("species_accuracy") is not None else "")
               + ")" if val else ""))
    return entry
