"""Which training runs to make, and making them: `train(recipe)` trains one member (its run:
kit/train/run.py, stages, epochs, checkpoints, resume, validation) into `models/<name>/`
(docs/design.md, "The trained member"): recipe.yaml, classes.txt, checkpoint.pt (after every
epoch), metrics.json, train.log. With `fold: all` it trains one such member per fold of folds.csv
into `models/<name>/fold<k>/` (`train_every_fold`): an out-of-fold member. `train_tasks` runs
several at once, each in its own process.

Run under `torchrun --nproc_per_node N scripts/train.py ...` for DistributedDataParallel (NCCL on
GPUs, gloo on the CPU); the global batch `sampling.batch_size` is split over the processes.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from kit.data.folds import read_folds
from kit.errors import KitError
from kit.io import cpu_count
from kit.train.recipe import ALL_FOLDS, Recipe, fold_dir, save_recipe
from kit.train.checkpoint import already_trained_error, fully_trained
from kit.train.run import DistEnv, Log, device_for, train_member


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
        with _threads(env.world if device_for(recipe, env.local_rank).type == "cpu" else 1, threads):
            return train_member(recipe, Path(out) if out else Path("models") / recipe.name, Path(data or recipe.data),
                                resume, force, progress, on_step, env)
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
        raise already_trained_error(out)
    return [Task(recipe, out, Path(data) if data else None, resume, force)]


def _dist_env(recipe: Recipe) -> DistEnv:
    want_cuda = recipe.runtime.device == "cuda" or (recipe.runtime.device == "auto" and torch.cuda.is_available())
    return DistEnv.setup("cuda" if want_cuda else "cpu")


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
        raise already_trained_error(out)
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
        if resume and started and fully_trained(child / "checkpoint.pt", member):
            if log is not None:
                log(f"fold {k}: already trained in {child}; skipped")
            continue
        tasks.append(Task(member, child, Path(data) if data else None, resume and started, force))
    return tasks


def val_map5_note(member_dir: Path) -> str:
    try:
        epochs = json.loads((member_dir / "metrics.json").read_text())["epochs"]
    except (OSError, ValueError, KeyError):
        return ""
    val = epochs[-1].get("val") if epochs else None
    return f", val MAP@5 {val['map5']:.4f}" if val else ""
