"""Tune a blend recipe with Optuna, honestly: search on part of the validation images, report the rest.

The validation images are split once (seeded, stratified on the unknown label) into a tuning part
and a held-out part that no trial sees. The summary shows the untuned recipe and the tuned one on
both, and the tuned - untuned gain on the held-out part with its paired bootstrap 95% interval,
in words when it is not significant.

The objective is cross-validated MAP@5 on the tuning part, through `kit.post.pipeline`, the very
code `blend.py` runs. Optuna proposes the weights (and whatever `tune.free` opens); the new_whale
threshold, the number that overfits most, is not proposed but fitted exactly inside each trial
(kit.ranking.cross_validated): the tuning images are split into `tune.parts` parts, the
threshold is chosen on all parts but one and scores that one, for each part. A trial is thus
scored only on images its threshold never saw, and weights that merely suit one lucky threshold
lose. A `proportion:` step gets its share fitted the same way (the best threshold's share of the
fitting parts, applied as that share of the part scored). The untuned recipe's values are the
study's first trial. With the threshold pinned nothing is fitted, and the objective is plain MAP@5
on the tuning part.

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
import importlib.util
import json
import multiprocessing as mp
import os
import random
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

from kit import ranking
from kit.errors import KitError
from kit.io import DISK_ERRORS, Outputs
from kit.post import fits, pipeline
from kit.post.baseline import Bars
from kit.post.compare import Gain, holdout_split, paired_gain
from kit.post.inputs import LEAK_SEARCH_DISTANCE, prepare
from kit.post.recipe import BlendRecipe, load_recipe, save_recipe
from kit.progress import interactive
from kit.tune.space import Param, search_space, to_recipe_values

# fitted inside each trial, never proposed by the sampler: the step's threshold, or its share
FITTED = ("steps.new_whale.threshold", "steps.new_whale.proportion")

DEFAULT_STORAGE = "sqlite:///models/studies.db"
GRACE = 15  # seconds without a heartbeat after which a RUNNING trial counts as a killed worker's


@dataclass
class TuneSummary:
    recipe: BlendRecipe
    tuned: BlendRecipe
    tuned_path: Path
    study_name: str
    storage: str
    n_trials: int
    best_params: dict[str, Any]
    untuned: dict[str, float]  # part ("tune", "holdout", "all") -> MAP@5
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


def _sqlite_write_ahead(engine) -> None:
    """A trial is some 20 small commits (its parameters one by one, the heartbeat, the value), and
    sqlite's default journal syncs the disk at each: half the trial's time. Write-ahead logging
    with `synchronous=NORMAL` syncs at checkpoints only, still loses nothing to a killed process
    (only to a power cut), and lets workers read while one writes. Local disks only, as sqlite is."""
    from sqlalchemy import event

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections Optuna opened to set the schema up, without the pragmas


# a server URL without a driver (postgresql://, as the README writes it) gets the first one installed:
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and the [postgres] extra installs psycopg2
DRIVERS = {"postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
           "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql"))}


def with_driver(url: str) -> str:
    """`url` with an installed SQLAlchemy driver named for a bare postgresql:// or mysql:// (and
    postgres://, an old spelling); other URLs as they are. A KitError when no driver is installed."""
    scheme, sep, rest = url.partition("://")
    scheme = "postgresql" if scheme == "postgres" else scheme
    if not sep or scheme not in DRIVERS:
        return url
    for module, driver in DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            return f"{scheme}+{driver}://{rest}"
    extra = ("pip install -e '.[postgres]' (psycopg2), or psycopg" if scheme == "postgresql"
             else "pip install mysqlclient, or pymysql")
    raise KitError(f"--storage {scheme}://...: no {scheme} driver is installed: {extra}")


def open_storage(url: str, grace: int = GRACE):
    """An Optuna storage from a URL: RDB (sqlite:///, postgresql://, mysql://) or `journal:PATH`.
    `grace`: seconds without a heartbeat before an RDB storage fails a killed worker's trial."""
    import optuna

    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if url.startswith(("sqlite:", "postgres", "mysql")):
        url = with_driver(url)
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # two workers share one file
        # A killed worker's trial stays RUNNING; heartbeats let the next run mark it FAILED.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=max(1, min(5, grace // 3)), grace_period=grace, **kwargs)
        if url.startswith("sqlite:///"):
            _sqlite_write_ahead(storage.engine)
        return storage
    raise KitError(f"--storage {url!r}: expected sqlite:///PATH, postgresql://..., mysql://... or journal:PATH")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A storage that fails (a full disk, a refused file, a server that went away) is one line naming
    it; Optuna's experimental-feature warnings are silenced inside."""
    import optuna

    try:
        with warnings.catch_warnings():
            # Optuna 4 calls multivariate TPE and stale-trial failing experimental, once per process:
            # noise in a log, and it would break the one-line error of a failed run
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    except _storage_failures() as e:
        raise KitError(f"--storage {url}: {_reason(e)}") from None
    except OSError as e:  # a journal file's disk
        if e.errno not in DISK_ERRORS:
            raise
        raise KitError(f"--storage {url}: {e.strerror}") from None


def _storage_failures() -> tuple[type[BaseException], ...]:
    """What a storage raises when it fails: SQLAlchemy's errors, and Optuna's wrapper of them."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError, optuna.exceptions.StorageInternalError


def _reason(e: BaseException) -> str:
    cause = getattr(e, "orig", None) or e.__cause__ or e
    return (str(getattr(cause, "orig", None) or cause).splitlines() or [type(cause).__name__])[0]


def create_study(url: str, study_name: str, grace: int = GRACE):
    """Create (or load) the study. Several tune.py started at once on a new database race to create
    Optuna's tables ("table studies already exists"); the loser tries again, and then finds them."""
    import optuna

    for attempt in range(7):
        try:
            return optuna.create_study(study_name=study_name, storage=open_storage(url, grace), direction="maximize",
                                       load_if_exists=True)
        except _storage_failures():
            if attempt == 6:
                raise
            time.sleep(0.05 * 2 ** attempt + random.random() * 0.05)


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


class Objective:
    """Cross-validated MAP@5 of a trial's recipe on the tuning part of the validation images."""

    def __init__(self, recipe: BlendRecipe, space: list[Param], holdout: float, seed: int, parts: int | None = None):
        # leak candidates up to the largest distance a trial may ask for (a range may widen it)
        leak = [int(p.high) for p in space if p.name == "steps.leak.max_distance"]
        distance = max([LEAK_SEARCH_DISTANCE, recipe.steps.leak.max_distance] + leak) if leak else None
        self.inputs = prepare(recipe, "val", leak_search_distance=distance)
        self.inputs.keep_calibrated = True  # trials mostly move weights: the members' probabilities are cached
        if self.inputs.truth is None:
            raise KitError(f"{recipe.source}: the validation split has no truth to tune against")
        self.tune_idx, self.hold_idx = holdout_split(self.inputs.truth, self.inputs.unknown_code, holdout, seed)
        # automatic weights come from the tuning part only: the held-out part judges them too
        # what the recipe fits on validation (calibrations, automatic weights, a fitted new_whale threshold):
        # fitted on the tuning part, as the untuned recipe, so that the held-out part judges them too
        recipe = fits.with_data_defaults(recipe, self.inputs)
        self.recipe = fits.resolve(recipe, self.inputs, self.tune_idx)
        # a P(new) model is fitted again for each trial's weights, cross-fitted like the threshold
        self.probability = pipeline.fits_probability(recipe)
        if self.probability:
            self.recipe = self.recipe.with_params({"steps.new_whale.fit": "probability"})
        fitted = [p for p in space if p.name in FITTED]
        self.fit_key = fitted[0].name if fitted and recipe.steps.active("new_whale") is not None else None
        self.by_share = self.fit_key == FITTED[1]  # a proportion step: the fitted threshold's share
        self.bounds = (fitted[0].low, fitted[0].high) if self.fit_key in recipe.tune.range_of else None
        self.space = [p for p in space if p.name not in FITTED]  # what the sampler proposes
        self.n_parts = min(recipe.tune.parts if parts is None else parts, max(len(self.tune_idx), 1))
        self.part = ranking.cv_parts(self.inputs.truth[self.tune_idx], self.inputs.unknown_code, self.n_parts, seed)

    @property
    def fit_threshold(self) -> bool:
        return self.fit_key is not None

    @property
    def cross_fits(self) -> bool:
        """Whether each tuning image is scored by a new_whale rule fitted on the other parts."""
        return (self.fit_threshold or self.probability) and self.n_parts > 1

    @property
    def untuned(self) -> BlendRecipe:
        """The untuned recipe with everything it fits fitted on the tuning part."""
        return self.finish({}, None)

    @property
    def note(self) -> str:
        if self.probability:
            return (f": {self.n_parts}-fold cross-fitted MAP@5, the P(new) model fitted on the other parts of each"
                    if self.n_parts > 1 else ": MAP@5 with the P(new) model fitted on them")
        what = "share" if self.by_share else "threshold"
        if self.fit_threshold and self.n_parts > 1:
            return f": {self.n_parts}-fold cross-validated MAP@5, the new_whale {what} fitted on the other parts of each"
        if self.fit_threshold:
            return f": MAP@5 with the new_whale {what} fitted on them"
        return ": MAP@5"

    def recipe_for(self, values: dict[str, Any]) -> BlendRecipe:
        return self.recipe.with_params(to_recipe_values(self.recipe, values)) if values else self.recipe

    def start_values(self) -> dict[str, Any]:
        """The untuned recipe's values of the sampled parameters (the study's first trial)."""
        current = self.recipe.tunable_params()
        return {p.name: min(max(current[p.name], p.low), p.high) for p in self.space}

    def _fit(self, recipe: BlendRecipe) -> tuple[ranking.PositionTable, float, float]:
        """(the tuning part's position table, the threshold or share fitted on all of it, its MAP@5)."""
        table = pipeline.position_table(recipe, self.inputs).rows(self.tune_idx)
        fit = ranking.best_share if self.by_share else ranking.best_threshold
        return (table, *fit(table, self.bounds))

    def left_out_ap(self, recipe: BlendRecipe) -> np.ndarray:
        """Per-image AP@5 on the tuning part, each image scored by a threshold (or share) it did not
        help choose (the objective is their mean)."""
        if self.probability:
            recipe = recipe.with_params({"steps.new_whale.fit": "probability"})  # a fitted model: fitted again per part
            if self.n_parts == 1:
                return pipeline.run(fits.fit_new_whale(recipe, self.inputs, self.tune_idx), self.inputs).ap[self.tune_idx]
            return fits.cross_fitted_ap(recipe, self.inputs, self.tune_idx, self.part, self.n_parts)
        if not self.fit_threshold:
            return pipeline.run(recipe, self.inputs).ap[self.tune_idx]
        table, value, _ = self._fit(recipe)
        if self.n_parts == 1:
            return table.ap_at(table.threshold_for_share(value) if self.by_share else value)
        return ranking.cross_validated(table, self.part, self.n_parts, self.bounds, self.by_share)[1]

    def evaluate(self, recipe: BlendRecipe) -> tuple[float, float | None]:
        """(objective, the threshold or share fitted on the whole tuning part, or None if not fitted)."""
        if self.probability:
            ap = self.left_out_ap(recipe)
            return float(ap.mean()) if len(ap) else 0.0, None
        if not self.fit_threshold:
            ap = pipeline.run(recipe, self.inputs).ap
            return float(ap[self.tune_idx].mean()) if len(self.tune_idx) else 0.0, None
        table, value, whole = self._fit(recipe)
        if self.n_parts > 1:
            whole = ranking.cross_validated(table, self.part, self.n_parts, self.bounds, self.by_share)[0]
        return whole, value

    def finish(self, values: dict[str, Any], fitted: float | None) -> BlendRecipe:
        """The recipe of a trial's values, its threshold (or share) fitted on the tuning part."""
        recipe = self.recipe_for(values)
        if self.probability:
            return fits.fit_new_whale(recipe, self.inputs, self.tune_idx)
        return recipe if fitted is None else recipe.with_params({self.fit_key: fitted})

    def scores(self, recipe: BlendRecipe) -> dict[str, float]:
        ap = pipeline.run(recipe, self.inputs).ap
        part = lambda idx: float(ap[idx].mean()) if len(idx) else float("nan")
        return {"tune": part(self.tune_idx), "holdout": part(self.hold_idx), "all": float(ap.mean())}

    def holdout_gain(self, tuned: BlendRecipe, untuned: BlendRecipe) -> Gain:
        a, b = pipeline.run(tuned, self.inputs).ap, pipeline.run(untuned, self.inputs).ap
        return paired_gain(a[self.hold_idx], b[self.hold_idx])

    def __call__(self, trial) -> float:
        values = {p.name: p.suggest(trial) for p in self.space}
        return self.evaluate(self.recipe_for(values))[0]  # the fitted value: found again for the best trial


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
    args = (str(recipe_path), storage, study_name, trials, seed, grace, since)
    if jobs == 1:
        with finish_trial_on_ctrl_c():
            _optimize(*args, worker=0, progress=progress, objective=objective)
    else:  # processes, not threads: the objective holds the GIL between numba calls
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
    evidence = paired_gain(objective.left_out_ap(objective.recipe_for(best.params)),
                           pipeline.run(untuned, objective.inputs).ap[objective.tune_idx])
    kept = cfg.accept == "significant" and not evidence.low > 0
    tuned = (untuned if kept else best_recipe).with_params(name=f"{recipe.name}_tuned")
    gain = objective.holdout_gain(tuned, untuned)
    tuned_path = recipe_path.with_name(f"{recipe_path.stem}.tuned.yaml")
    importances = {}
    if len(complete) >= 2 and len(space) > 1:
        try:
            # PED-ANOVA, Optuna 5's default, named: Optuna 4's default (fANOVA) needs scikit-learn
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna 4
                evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (RuntimeError, ValueError):  # e.g. every trial scored the same
            importances = {}
    ran = len(complete) - before
    best_params = to_recipe_values(recipe, best.params)
    if objective.fit_threshold:
        best_params[objective.fit_key] = fitted
    # what the tuned recipe scores where its threshold was fitted (left-out scores), against new_whale alone
    inputs, idx = objective.inputs, objective.tune_idx
    tuned_ap, trivial = objective.left_out_ap(tuned), (inputs.truth[idx] == inputs.unknown_code).astype(float)
    first = pipeline.run(tuned, inputs).top5[idx, 0] == inputs.unknown_code
    bars = Bars(tuned_ap, trivial, paired_gain(tuned_ap, trivial), objective.cross_fits,
                inputs.labels[inputs.unknown_code], first_share=float(first.mean()) if len(first) else None)
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
