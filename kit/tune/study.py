"""Tune a blend recipe with Optuna, honestly: search on part of the validation images, report the rest.

The validation images are split once (seeded, stratified on the unknown label) into a tuning part
and a held-out part that no trial sees. The summary shows the untuned recipe and the tuned one on
both, and the tuned - untuned gain on the held-out part with its paired bootstrap 95% interval,
in words when it is not significant.

The objective is the recipe's metric (`metric:`, MAP@5 by default), cross-validated on the tuning
part, through `kit.post.pipeline`, the very
code `blend.py` runs. Optuna proposes the weights (and whatever `tune.free` opens); the new_whale
threshold, the number that overfits most, is not proposed but fitted exactly inside each trial
(kit.ranking.cross_validated): the tuning images are split into `tune.parts` parts, the
threshold is chosen on all parts but one and scores that one, for each part. A trial is thus
scored only on images its threshold never saw, and weights that merely suit one lucky threshold
lose. A `proportion:` step gets its share fitted the same way (the best threshold's share of the
fitting parts, applied as that share of the part scored). The untuned recipe's values are the
study's first trial. With the threshold pinned nothing is fitted, and the objective is the plain
metric on the tuning part.

The tuned recipe takes the best trial's values and the threshold fitted on the whole tuning part,
if the evidence is there (`tune.accept: significant`, the default): the best trial's per-image
scores on the tuning part (each scored by a threshold it did not help choose) must beat the untuned
recipe's with a paired bootstrap interval above 0. Otherwise the untuned recipe is kept as written
(what it fits, blend.py fits on all the validation images), and the tuned recipe says why: on a few
dozen images the best of hundreds of trials is mostly luck.

Studies live in Optuna storages: `sqlite:///models/studies.db` by default (resumable: run the same
command again and it carries on to N finished trials), any RDB URL (PostgreSQL for several
machines), or a journal file (`journal:/shared/disk/study.log`) on a shared disk.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kit.errors import KitError
from kit.io import Outputs
from kit.post import pipeline
from kit.post.baseline import Bars
from kit.post.compare import Gain, paired_gain
from kit.post.recipe import BlendRecipe, load_recipe, save_recipe
from kit.progress import interactive
from kit.tune.objective import Objective
from kit.tune.space import Param, search_space, to_recipe_values
from kit.tune.storage import GRACE, create_study, open_storage, storage_errors


DEFAULT_STORAGE = "sqlite:///models/studies.db"


@dataclass
class TuneSummary:
    recipe: BlendRecipe
    tuned: BlendRecipe
    tuned_path: Path
    study_name: str
    storage: str
    n_trials: int
    best_params: dict[str, Any]
    untuned: dict[str, float]  # part ("tune", "holdout", "all") -> the recipe's metric
    best: dict[str, float]
    importances: dict[str, float] = field(default_factory=dict)
    trials_per_second: float = 0.0
    sizes: tuple[int, int] = (0, 0)  # images in the tuning and held-out parts
    holdout_gain: Gain | None = None  # tuned - untuned on the held-out part
    objective_note: str = ""  # how trials were scored, in words
    evidence: Gain | None = None  # best trial - untuned on the tuning part (left-out scores)
    kept_untuned: bool = False  # tune.accept: significant and the evidence was not
    warnings: list[str] = field(default_factory=list)  # the tuned blend not above new_whale alone (kit/post/baseline.py)

    def verdict(self) -> str:
        """The held-out gain in one sentence (significant or not)."""
        if self.kept_untuned:
            return (f"kept the untuned values: the best trial's gain on the tuning part was not significant "
                    f"({self.evidence}, {self.evidence.n} images)")
        if self.holdout_gain is None or self.holdout_gain.n == 0:
            return "no held-out part (tune.holdout: 0): what tuning gained is not measured"
        return self.holdout_gain.verdict("tuned - untuned")

    def table(self) -> str:
        n_t, n_h = self.sizes
        rows = [
            f"{'':<22}{'tuning part':>14}{'held-out part':>16}{'all val':>10}",
            f"{'':<22}{f'({n_t} images)':>14}{f'({n_h} images)':>16}{'':>10}",
            f"{'untuned recipe':<22}{self.untuned['tune']:>14.4f}{self.untuned['holdout']:>16.4f}{self.untuned['all']:>10.4f}",
            f"{'tuned recipe':<22}{self.best['tune']:>14.4f}{self.best['holdout']:>16.4f}{self.best['all']:>10.4f}",
            f"{'gain':<22}{self.best['tune'] - self.untuned['tune']:>+14.4f}{self.best['holdout'] - self.untuned['holdout']:>+16.4f}"
            f"{self.best['all'] - self.untuned['all']:>+10.4f}",
        ]
        if self.evidence is not None:
            rows.append(f"best trial - untuned on the tuning part (left-out scores): {self.evidence}"
                        + (" not significant: untuned values kept" if self.kept_untuned else ""))
        rows.append(f"held-out: {self.verdict()}")
        return "\n".join(rows + self.warnings)


# a server URL without a driver (postgresql://, as the README writes it) gets the first one installed:
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and the [postgres] extra installs psycopg2


def _die_with_parent(parent: int) -> None:
    """A worker ends when the tune.py that started it does, even by `kill -9` (Linux: the kernel
    sends SIGTERM); its trial in flight is then marked FAIL by the next run, like any killed one."""
    try:

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker finishes its trials and ends
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


_stop_asked = False  # this process was asked to stop after its trial in flight (Ctrl-C, or STOP_SIGNAL)
STOP_SIGNAL = getattr(signal, "SIGUSR1", signal.SIGTERM)


def _ask_stop(signum=None, frame=None) -> None:
    global _stop_asked
    _stop_asked = True


@contextlib.contextmanager
def finish_trial_on_ctrl_c() -> Iterator[None]:
    """In the block, a first Ctrl-C lets the trial in flight finish and then ends the run (with a
    KeyboardInterrupt, from `_optimize`); a second one interrupts at once. The main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    global _stop_asked

    def ask(signum, frame) -> None:
        _ask_stop()
        signal.signal(signal.SIGINT, previous)

    _stop_asked = False
    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _stop_asked = False


def stop_workers(procs: list, wait: float = 10.0) -> None:
    """Ctrl-C to tune.py: each worker is asked to stop after its trial in flight (STOP_SIGNAL), then
    terminated if it has not ended within `wait` seconds. Without this, a Ctrl-C to tune.py alone
    (not its process group) waited for every remaining trial of the workers: multiprocessing joins
    its children at exit."""
    for p in procs:
        if p.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, STOP_SIGNAL)
    deadline = time.monotonic() + wait
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()


def _worker(*args, parent: int, **kwargs) -> None:
    """A `--jobs` worker process: one line and exit status 2 for a KitError, as the scripts do."""
    _die_with_parent(parent)
    # A terminal's Ctrl-C reaches every process of its group, and an interrupt in the middle of Optuna's
    # bookkeeping is a traceback (and a trial left RUNNING): the workers leave it to tune.py, which
    # asks them (STOP_SIGNAL) to stop after their trial in flight
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(STOP_SIGNAL, _ask_stop)
    try:
        with storage_errors(args[1]):
            _optimize(*args, **kwargs)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # stopped as asked: tune.py says so, once
        sys.exit(130)


def study_name_for(recipe: BlendRecipe, space: list[Param], holdout: float, seed: int) -> str:
    """The recipe's name plus a digest of what the study optimises: a changed space is a new study."""
    # "cv": trials are scored by the cross-validated objective (a study of the plain one is another study)
    key = json.dumps(["cv", recipe.to_dict(), [p.__dict__ for p in space], holdout, seed], sort_keys=True, default=str)
    return f"{recipe.name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number` of a study tuned with `seed`."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def trial_seeded_tpe(seed: int, first: dict[str, Any] | None = None):
    """Optuna's multivariate TPE, its randomness drawn afresh for each trial from (seed, the trial's
    number). Runs that share a study (`--jobs` workers, machines on one PostgreSQL, two tune.py
    started together) hold different numbers, so they never propose the same trial, as runs seeded
    alike would; a resumed run's numbers are new, so it does not replay the run it carries on; and a
    run alone repeats itself exactly. Trial 0 takes `first` (the untuned recipe's values), whichever
    run draws it: enqueueing them raced when two runs created the study together. Only Optuna's
    public sampler interface is used; `constant_liar` is set (Optuna 5's default, not 4's) so that
    workers treat each other's running trials alike on every supported version."""
    import optuna

    def tpe(number: int):
        return optuna.samplers.TPESampler(seed=trial_seed(seed, number), multivariate=True, constant_liar=True)

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._tpe = tpe(0)
            self._first = False

        def before_trial(self, study, trial) -> None:  # called before any of the trial's sampling
            self._tpe = tpe(trial.number)
            self._first = first is not None and trial.number == 0
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return {} if self._first else self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space) if search_space else {}

        def sample_independent(self, study, trial, param_name, param_distribution):
            if self._first and param_name in first:
                return first[param_name]
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:  # Optuna's threads ask it; the seed is per trial already
            pass

    return TrialSeededTPE()


def _optimize(recipe_path: str, storage_url: str, study_name: str, trials: int, seed: int, grace: int,
              since: datetime, worker: int, progress: bool, objective: Objective | None = None) -> None:
    """One worker: load the study and run trials until the study holds `trials` finished ones.
    `objective`: the caller's, when the worker runs in its process (else prepared here)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if objective is None:
        recipe = load_recipe(recipe_path)
        objective = Objective(recipe, search_space(recipe), recipe.tune.holdout, seed)
    # the untuned recipe is trial 0: tuning never ends below it
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url, grace),
                              sampler=trial_seeded_tpe(seed, first=objective.start_values()))
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done >= trials:
        return

    def objective_within_budget(trial):
        # Exactly `trials` finished trials, with any number of workers: the storage numbers trials
        # one by one, so the finished trials numbered before this one, and the running ones this
        # run started, say whether it would go past `trials`; then it stops, kept as PRUNED. (A
        # callback counting finished trials lets every other worker's trial in flight finish too.)
        # RUNNING trials started before this run (`since`) are a killed run's and do not count.
        ahead = sum(1 for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                    if t.number < trial.number and (t.state == TrialState.COMPLETE or t.datetime_start >= since))
        if ahead >= trials:
            trial.study.stop()
            raise optuna.TrialPruned(f"the study holds {trials} trials")
        return objective(trial)

    def stop_when_asked(study, trial) -> None:  # after each trial: a Ctrl-C ends the run here, its trials whole
        if _stop_asked:
            study.stop()

    # Optuna's bar is tqdm's: on a terminal only (a log would fill with carriage-return frames)
    study.optimize(objective_within_budget, n_trials=trials - done, show_progress_bar=progress and interactive(),
                   gc_after_trial=False, callbacks=[stop_when_asked])
    if _stop_asked:
        raise KeyboardInterrupt


def wait_for_other_runs(study, trials: int, grace: int, poll: float = 0.1) -> None:
    """This run stopped because the study's finished and running trials reach `trials`; another run
    sharing the study (another machine) may still be finishing one of them. Wait for it (trials take
    milliseconds; a killed run's is given up after the grace period), so that every run summarises
    the same `trials` finished trials."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        states = [t.state for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))]
        if states.count(TrialState.COMPLETE) >= trials or TrialState.RUNNING not in states:
            return
        time.sleep(poll)


def fail_abandoned(study, started_before: datetime) -> list[int]:
    """Mark FAIL the RUNNING trials started before `started_before` (now less the grace period): a
    killed run's. Heartbeats do it on RDB storages, but only for a trial whose first heartbeat was
    recorded: a worker killed while its trial was being sampled leaves none, and journal storages
    keep none. Trials here take milliseconds, so one that old is no live worker's."""
    from optuna.trial import TrialState

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.datetime_start is not None and t.datetime_start < started_before:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


def tune(recipe_path: str | Path, trials: int, storage: str | None = None, study_name: str | None = None,
         jobs: int = 1, seed: int | None = None, progress: bool = True, out: Outputs | None = None,
         grace: int = GRACE) -> TuneSummary:
    """Run (or resume) a study to `trials` finished trials, write `<recipe>.tuned.yaml` (staged to
    `out` when given: in place once the caller commits), summarise."""
    import optuna

    if trials < 1:
        raise KitError(f"--trials must be >= 1, got {trials}")
    if jobs < 1:
        raise KitError(f"--jobs must be >= 1, got {jobs}")
    if grace < 1:
        raise KitError(f"--grace must be >= 1 second, got {grace}")
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    cfg = recipe.tune
    seed = cfg.seed if seed is None else seed
    space = search_space(recipe)
    if not space:
        raise KitError(f"{recipe_path}: nothing to tune: every parameter is pinned")
    objective = Objective(recipe, space, cfg.holdout, seed)
    objective.evaluate(objective.recipe)  # a recipe the pipeline refuses fails here, before a study or a failed trial exists
    if not objective.space:  # only the threshold, fitted exactly: one trial says it all
        trials = 1
    storage = storage or DEFAULT_STORAGE
    study_name = study_name or study_name_for(recipe, space, cfg.holdout, seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with storage_errors(storage):
        return _tune(recipe_path, recipe, space, objective, trials, storage, study_name, jobs, seed, progress, out, grace)


def _tune(recipe_path: Path, recipe: BlendRecipe, space: list[Param], objective: Objective, trials: int, storage: str,
          study_name: str, jobs: int, seed: int, progress: bool, out: Outputs | None, grace: int) -> TuneSummary:
    import optuna
    from optuna.trial import TrialState

    cfg = recipe.tune
    study = create_study(storage, study_name, grace)
    study.set_user_attr("recipe", str(recipe_path))
    since = datetime.now()
    fail_abandoned(study, since - timedelta(seconds=grace))
    before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    start = time.perf_counter()
    _run_trials((str(recipe_path), storage, study_name, trials, seed, grace, since), jobs, progress, objective)
    elapsed = time.perf_counter() - start

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage, grace))
    wait_for_other_runs(study, trials, grace)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise KitError(f"study {study_name!r} has no finished trial")
    best = study.best_trial
    untuned = objective.untuned
    fitted = objective.evaluate(objective.recipe_for(best.params))[1]
    best_recipe = objective.finish(best.params, fitted)
    evidence = paired_gain(objective.left_out_marks(objective.recipe_for(best.params)),
                           pipeline.run(untuned, objective.inputs).marks[objective.tune_idx], objective.scorer)
    kept = cfg.accept == "significant" and not evidence.low > 0
    tuned = (untuned if kept else best_recipe).with_params(name=f"{recipe.name}_tuned")
    gain = objective.holdout_gain(tuned, untuned)
    tuned_path = recipe_path.with_name(f"{recipe_path.stem}.tuned.yaml")
    importances = _importances(study, complete, space)
    ran = len(complete) - before
    best_params = to_recipe_values(recipe, best.params)
    if objective.fit_threshold:
        best_params[objective.fit_key] = fitted
    # what the tuned recipe scores where its threshold was fitted (left-out scores), against new_whale alone
    inputs, idx = objective.inputs, objective.tune_idx
    scorer = objective.scorer
    tuned_marks = objective.left_out_marks(tuned)
    trivial = scorer.unknown_everywhere()
    first = pipeline.run(tuned, inputs).top5[idx, 0] == inputs.unknown_code
    bars = Bars(tuned_marks, trivial, paired_gain(tuned_marks, trivial, scorer), objective.cross_fits,
                inputs.labels[inputs.unknown_code], scorer, first_share=float(first.mean()) if len(first) else None)
    summary = TuneSummary(
        recipe=recipe, tuned=tuned, tuned_path=tuned_path, study_name=study_name, storage=storage,
        n_trials=len(complete), best_params=best_params,
        untuned=objective.scores(untuned), best=objective.scores(tuned), importances=dict(importances),
        trials_per_second=ran / elapsed if ran > 0 and elapsed > 0 else 0.0,
        sizes=(len(objective.tune_idx), len(objective.hold_idx)), holdout_gain=gain,
        objective_note=objective.note, evidence=evidence, kept_untuned=kept,
        warnings=[line.replace("the blend scores", "the tuned blend scores", 1) for line in bars.lines()],
    )
    note = [f"Tuned by scripts/tune.py from {recipe_path} ({summary.n_trials} trials, study {study_name}).",
            f"Best trial - untuned on the tuning part ({evidence.n} images, left-out scores): {evidence}"
            + ("; not significant, so the untuned recipe is kept as written, fitted on all the validation images when"
               " blended (tune.accept: best takes the best trial)." if kept else ".")]
    if not kept:
        note.append(f"Held-out part ({summary.sizes[1]} validation images no trial saw): {summary.verdict()}.")
        if gain.n and not gain.significant:
            note.append("Not significant: the untuned recipe is as good a choice on this evidence.")
    # kept: the recipe as written, so that what it fits (weights, threshold) is fitted on all the
    # validation images at blend time, not on the tuning part alone as in the study
    save_recipe(recipe.with_params(name=tuned.name) if kept else tuned, tuned_path, note=note, out=out)
    return summary


def _run_trials(args: tuple, jobs: int, progress: bool, objective: Objective) -> None:
    """The study's trials: in this process, or in `jobs` worker processes (processes, not threads:
    the objective holds the GIL between numba calls); a worker's failure is one line."""
    if jobs == 1:
        with finish_trial_on_ctrl_c():
            _optimize(*args, worker=0, progress=progress, objective=objective)
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=args,
                         kwargs={"worker": w, "progress": progress and w == 0, "parent": os.getpid()})
             for w in range(jobs)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        stop_workers(procs)
        raise
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:  # a worker's KitError is its own line above this one
        raise KitError(f"{len(failed)} of {jobs} tuning workers failed (exit codes {failed}); the study keeps every finished trial")


def _importances(study, complete: list, space: list[Param]) -> dict:
    """The parameters' importances over the finished trials ({} with fewer than two, or one parameter)."""
    import optuna

    if len(complete) < 2 or len(space) < 2:
        return {}
    try:
        # PED-ANOVA, Optuna 5's default, named: Optuna 4's default (fANOVA) needs scikit-learn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna 4
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # e.g. every trial scored the same
        return {}
