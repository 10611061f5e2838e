"""Real Optuna studies in real storages (sqlite and journal files under tmp_path), on a fabricated
competition with noisy-truth members: the objective is blend.py's MAP@5 (cross-validated: equal to a
slow reference), the untuned recipe is the first trial, the held-out gain carries its interval, a
killed study resumes, two workers share one study, pins stay pinned, a seed repeats, bad input is
one line."""
import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import numpy as np
import optuna
import pytest
import yaml
from tune_project import ROOT, edit_yaml, script, script_env
from optuna.trial import TrialState

from kit.errors import KitError
from kit.post.files import blend_files
from kit.post.inputs import prepare
from kit.post.pipeline import run
from kit.post.recipe import load_recipe
from kit.tune.space import search_space
from kit.tune.storage import open_storage
from kit.tune.objective import Objective
from kit.tune.study import study_name_for, tune

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

FITTED = "steps.new_whale.threshold"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def trials_of(storage_url: str, study_name: str) -> list:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        storage_url.removeprefix("journal:"))) if storage_url.startswith("journal:") else optuna.storages.RDBStorage(storage_url)
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def complete(trials) -> list:
    return [t for t in trials if t.state == TrialState.COMPLETE]


def quiet(_line: str) -> None:
    pass


# ------------------------------------------------------------------------- objective == blend.py
@pytest.mark.parametrize("metric", ["map5", "top1", "animalclef"])
def test_the_objective_is_blend_score(project, metric):
    """With nothing held out and one part, a trial's value is blend.py's val score under the recipe's
    metric, of the recipe made from its parameters and its fitted threshold, to 1e-12: the tuned yaml
    through blend_files, and every trial through prepare/run."""
    path = edit_yaml(project.recipe(holdout=0, parts=1, accept="best"), lambda d: d.update(metric=metric))
    s = tune(path, 15, storage=project.sqlite(metric), progress=False)
    trials = complete(trials_of(project.sqlite(metric), s.study_name))
    assert len(trials) == s.n_trials == 15
    best = max(trials, key=lambda t: t.value)
    assert s.tuned_path == path.with_name("final.tuned.yaml") and s.tuned_path.is_file()

    report = blend_files(s.tuned_path, echo=quiet).summary
    assert abs(report["val"][metric] - best.value) <= 1e-12
    assert abs(s.best["all"] - report["val"][metric]) <= 1e-12 and abs(s.best["tune"] - best.value) <= 1e-12
    assert s.sizes == (report["val"]["images"], 0)
    # the script on the tuned yaml, as a user runs it
    out = script("blend.py", str(s.tuned_path), "--json")
    assert out.returncode == 0, out.stderr
    assert abs(json.loads(out.stdout.splitlines()[-1])["val"][metric] - best.value) <= 1e-12

    # every trial: its parameters into the recipe, fresh inputs, blend.py's code path
    recipe = load_recipe(path)
    objective = Objective(recipe, search_space(recipe), holdout=0.0, seed=0)
    assert {t.value for t in trials} != {best.value}  # the trials differ: the check below means something
    for t in trials:
        r = objective.finish(t.params, objective.evaluate(objective.recipe_for(t.params))[1])
        assert abs(run(r, prepare(r, "val")).score - t.value) <= 1e-12, t.number
        # the fitted threshold is the best one: no grid point beats it
        grid = [run(r.with_params({FITTED: float(x)}), objective.inputs).score for x in np.linspace(0, 1, 41)]
        assert max(grid) <= t.value + 1e-12
    untuned = blend_files(path, echo=quiet).summary["val"][metric]
    assert abs(objective.scores(recipe)["all"] - untuned) <= 1e-12 and abs(s.untuned["all"] - untuned) <= 1e-12
    # the untuned recipe is the first trial: the best is never below it
    assert trials[0].params == pytest.approx(objective.start_values()) and best.value >= trials[0].value


def slow_cross_validated(objective: Objective, recipe) -> float:
    """The cross-validated objective the long way: every distinct threshold through blend.py's code,
    for each part the best on the other parts (ties: the highest threshold), scored on that part."""
    rows = objective.tune_idx
    bare = run(recipe.with_params({"steps.new_whale.enabled": False}), objective.inputs)
    scores = np.unique(bare.top_scores[rows, :5])[::-1]
    candidates = [float(scores[0]) + 1.0] + [float(x) for x in scores]  # above every score, then each score
    # in sixtieths (AP@5 is 0, 1, 1/2, ..., 1/5): whole numbers, so equal totals tie exactly
    ap = np.stack([np.rint(60 * run(recipe.with_params({FITTED: t}), objective.inputs).marks[rows]) for t in candidates])
    total = 0.0
    for k in range(objective.n_parts):
        here = objective.part == k
        best = int(np.argmax(ap[:, ~here].sum(axis=1)))
        total += ap[best, here].sum()
    return total / 60 / len(rows)


def test_the_cross_validated_objective_equals_a_slow_reference(project):
    path = project.recipe(holdout=0.3, parts=4, seed=2)
    recipe = load_recipe(path)
    objective = Objective(recipe, search_space(recipe), holdout=0.3, seed=2)
    assert objective.fit_threshold and objective.n_parts == 4 and [p.name for p in objective.space] == [
        "members.0.weight", "members.1.weight", "members.2.weight"]
    rng = np.random.default_rng(0)
    for values in [objective.start_values()] + [{p.name: float(rng.random()) for p in objective.space} for _ in range(3)]:
        r = objective.recipe_for(values)
        value, threshold = objective.evaluate(r)
        assert value == pytest.approx(slow_cross_validated(objective, r), abs=1e-12)
        # honest: below the in-sample optimum of the same weights
        assert value <= run(r.with_params({FITTED: threshold}), objective.inputs).marks[objective.tune_idx].mean() + 1e-12


def test_a_balanced_metric_is_cross_validated_the_long_way(project):
    """Under AnimalCLEF's score (not a mean over images) the objective fits each part's threshold on the
    other parts alone, their groups their own: every midpoint between their scores through blend.py's
    code, the metric recomputed from scratch on them, then the chosen threshold scores the part."""
    path = edit_yaml(project.recipe(holdout=0.3, parts=3, seed=2), lambda d: d.update(metric="animalclef"))
    recipe = load_recipe(path)
    objective = Objective(recipe, search_space(recipe), holdout=0.3, seed=2)
    rows, inputs = objective.tune_idx, objective.inputs
    r = objective.recipe_for(objective.start_values())
    bare = run(r.with_params({"steps.new_whale.enabled": False}), inputs)
    marks = np.zeros(len(rows))
    for k in range(objective.n_parts):
        rest, here = rows[objective.part != k], objective.part == k
        edges = np.unique(bare.top_scores[rest, :5].astype(np.float64))[::-1]
        candidates = [edges[0] + 1.0] + [float(x) for x in (edges[:-1] + edges[1:]) / 2] + [edges[-1] - 1.0]
        scorer = inputs.scorer.rows(rest)
        value = [scorer.score(run(r.with_params({FITTED: t}), inputs).marks[rest]) for t in candidates]
        best = candidates[int(np.flatnonzero(np.array(value) >= max(value) - 1e-9)[0])]  # ties: the highest
        marks[here] = run(r.with_params({FITTED: best}), inputs).marks[rows[here]]
    assert objective.evaluate(r)[0] == pytest.approx(inputs.scorer.rows(rows).score(marks), abs=1e-12)


def test_the_summary_carries_the_held_out_gain(project):
    path = project.recipe(holdout=0.3, seed=1, accept="best")
    s = tune(path, 10, storage=project.sqlite(), progress=False)
    objective = Objective(load_recipe(path), search_space(load_recipe(path)), holdout=0.3, seed=1)
    g = s.holdout_gain
    assert g.n == len(objective.hold_idx) and g.low <= g.value <= g.high
    assert g.value == pytest.approx(s.best["holdout"] - s.untuned["holdout"], abs=1e-12)
    assert "held-out:" in s.table() and ("not significant" in s.verdict()) != g.significant
    head = s.tuned_path.read_text().splitlines()[0]
    assert head.startswith("# Tuned by scripts/tune.py") and load_recipe(s.tuned_path) == s.tuned


def test_with_a_holdout_the_study_sees_the_tuning_part_only(project):
    path = project.recipe(holdout=0.3, seed=4, accept="best")
    s = tune(path, 12, storage=project.sqlite(), progress=False)
    best = max(complete(trials_of(project.sqlite(), s.study_name)), key=lambda t: t.value)
    tuned = load_recipe(s.tuned_path)
    result = run(tuned, prepare(tuned, "val"))
    objective = Objective(load_recipe(path), search_space(load_recipe(path)), holdout=0.3, seed=4)
    n_tune, n_hold = len(objective.tune_idx), len(objective.hold_idx)
    assert (n_tune, n_hold) == s.sizes and n_tune + n_hold == len(result.marks) and 0.25 < n_hold / len(result.marks) < 0.35
    assert sorted(set(objective.tune_idx) | set(objective.hold_idx)) == list(range(len(result.marks)))
    # the best trial's value is its cross-validated score on the tuning part, nothing held out in it
    assert abs(objective.evaluate(objective.recipe_for(best.params))[0] - best.value) <= 1e-12
    assert tuned.steps.new_whale.threshold == pytest.approx(objective.evaluate(objective.recipe_for(best.params))[1])
    assert abs(objective.scores(tuned)["all"] - blend_files(s.tuned_path, echo=quiet).summary["val"]["map5"]) <= 1e-12
    assert s.best == objective.scores(tuned)
    # the split is stratified: new_whale images in both parts, in about the same share
    truth = objective.inputs.truth == objective.inputs.unknown_code
    assert abs(truth[objective.tune_idx].mean() - truth[objective.hold_idx].mean()) < 0.05


# ---------------------------------------------------------------------------- resume after kill
def _kill_mid_trial(proc: subprocess.Popen, url: str, study_name: str, at_least: int, timeout: float = 60) -> list:
    """SIGKILL `proc` while it holds a RUNNING trial and the study has `at_least` finished ones:
    stop it (SIGSTOP), look, and let it go on (SIGCONT) until both hold; return the trials as they
    were. It looks with plain sqlite3, read-only: opening an Optuna storage on a file another
    process is still creating races it to the schema."""
    path = url.removeprefix("sqlite:///")
    query = ("SELECT trials.state FROM trials JOIN studies ON trials.study_id = studies.study_id "
             "WHERE studies.study_name = ?")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tune.py ended before it was killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGSTOP)
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2)) as db:
                states = [row[0] for row in db.execute(query, (study_name,))]
        except sqlite3.OperationalError:  # no file or tables yet, or stopped while writing
            states = []
        if states.count("COMPLETE") >= at_least and "RUNNING" in states:
            proc.kill()
            proc.wait()
            return trials_of(url, study_name)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no RUNNING trial to kill in time")


def test_resume_after_a_kill(project):
    """Killed mid-trial (SIGKILL), the same command carries on to exactly N finished trials: every
    trial finished before the kill is kept as it was, the killed one is marked FAIL (heartbeat)."""
    n = 30
    path = project.recipe()
    url = project.sqlite()
    recipe = load_recipe(path)
    name = study_name_for(recipe, search_space(recipe), recipe.tune.holdout, recipe.tune.seed)
    cmd = [sys.executable, "scripts/tune.py", str(path), "--trials", str(n), "--storage", url, "--no-report", "--grace", "1"]
    env = script_env()
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = _kill_mid_trial(first, url, name, at_least=5)
    done = {t.number: t for t in complete(before)}
    killed = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(killed) == 1 and 5 <= len(done) < n
    assert not path.with_name("final.tuned.yaml").exists()  # written only at the end

    time.sleep(2.1)  # past the grace period (1 s, in whole seconds as sqlite's clock has them)
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"study {name} in {url}: {n} finished trials" in again.stdout

    after = {t.number: t for t in trials_of(url, name)}
    assert len(complete(after.values())) == n
    for number, t in done.items():  # no finished trial lost or changed
        assert after[number].state == TrialState.COMPLETE
        assert after[number].params == t.params and after[number].value == t.value
    assert after[killed[0]].state == TrialState.FAIL
    assert {t.state for t in after.values()} == {TrialState.COMPLETE, TrialState.FAIL}
    assert sorted(after) == list(range(len(after)))
    # the resumed run samples anew: no parameter set tried twice
    params = [tuple(sorted(t.params.items())) for t in complete(after.values())]
    assert len(set(params)) == n
    assert path.with_name("final.tuned.yaml").is_file()


def test_a_finished_study_runs_no_more_trials(project):
    path = project.recipe()
    first = tune(path, 5, storage=project.sqlite(), progress=False)
    second = tune(path, 5, storage=project.sqlite(), progress=False)
    assert second.n_trials == 5 and second.trials_per_second == 0.0
    assert second.best_params == first.best_params
    assert len(trials_of(project.sqlite(), first.study_name)) == 5


# ---------------------------------------------------------------------- two workers on one study
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_study(project, kind):
    """--jobs 2: exactly N finished trials, numbered 0..N-1 once each, no parameter set twice."""
    n = 24
    path = project.recipe()
    url = project.journal() if kind == "journal" else project.sqlite()
    out = script("tune.py", str(path), "--trials", str(n), "--storage", url, "--jobs", "2", "--no-report")
    assert out.returncode == 0, out.stderr
    recipe = load_recipe(path)
    name = study_name_for(recipe, search_space(recipe), recipe.tune.holdout, recipe.tune.seed)
    trials = trials_of(url, name)
    finished = complete(trials)
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    assert sorted(t.number for t in finished) == list(range(n))
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n
    # a worker that would go past N stops; its last trial is kept as PRUNED, never COMPLETE
    surplus = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.PRUNED and t.number >= n for t in surplus) and len(surplus) <= 2
    assert path.with_name("final.tuned.yaml").is_file()


# ------------------------------------------------------------------------- pins, ranges, seeds
def test_pinned_parameters_stay_pinned(project):
    path = project.recipe(accept="best", free=["members.0.calibration.*", "steps.*"], pin=["members.*.weight", "steps.leak.max_distance"],
                          ranges={"steps.new_whale.threshold": [0.3, 0.6], "members.0.calibration.temperature": [0.5, 2.0]})
    s = tune(path, 15, storage=project.sqlite(), progress=False)
    trials = complete(trials_of(project.sqlite(), s.study_name))
    assert len(trials) == 15
    recipe = load_recipe(path)
    objective = Objective(recipe, search_space(recipe), recipe.tune.holdout, recipe.tune.seed)
    for t in trials:
        assert not any(k.endswith(".weight") or k == "steps.leak.max_distance" for k in t.params)
        assert 0.3 <= objective.evaluate(objective.recipe_for(t.params))[1] <= 0.6  # fitted, within its range
        assert 0.5 <= t.params["members.0.calibration.temperature"] <= 2.0
        assert "steps.balance.margin" in t.params  # what free opened is searched
        assert "members.1.calibration.temperature" not in t.params  # the rest is not
    tuned, untuned = load_recipe(s.tuned_path), load_recipe(path)
    assert [m.weight for m in tuned.members] == [m.weight for m in untuned.members] == [1.0, 0.5, 0.5]
    assert tuned.steps.leak.max_distance == untuned.steps.leak.max_distance == 1
    assert 0.3 <= tuned.steps.new_whale.threshold <= 0.6
    assert tuned.tune == untuned.tune and tuned.name == "final_tuned"
    assert tuned.with_params(name="final") != untuned  # something was tuned


def test_bad_pins_and_ranges_fail_before_the_study(project):
    for tune_cfg, key in [({"pin": ["members.*.wieght"]}, "members.*.wieght"),
                          ({"ranges": {"steps.new_whale.treshold": [0.1, 0.2]}}, "steps.new_whale.treshold"),
                          ({"free": ["steps.*"], "ranges": {"steps.balance.min_count": [0, 3]}}, "tune.ranges.steps.balance.min_count"),
                          ({"ranges": {"steps.balance.min_count": [1, 3]}}, "tune.ranges: 'steps.balance.min_count' is not searched")]:
        path = project.recipe("bad", **tune_cfg)
        with pytest.raises(KitError, match=key.replace(".", r"\.").replace("*", r"\*")):
            tune(path, 5, storage=project.sqlite("bad"), progress=False)
    assert not (project.root / "studies" / "bad.db").exists() or not optuna.get_all_study_names(project.sqlite("bad"))


def test_a_range_wider_than_the_default_leak_search(project):
    """tune.ranges may widen the leak distance past prepare()'s default search: the objective's
    inputs are prepared for it, no trial fails."""
    path = project.recipe(accept="best", free=["steps.leak.*"], ranges={"steps.leak.max_distance": [9, 12]})
    s = tune(path, 6, storage=project.sqlite(), progress=False)
    trials = trials_of(project.sqlite(), s.study_name)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(9 <= t.params["steps.leak.max_distance"] <= 12 for t in trials)
    assert blend_files(s.tuned_path, echo=quiet).summary["val"]["map5"] == pytest.approx(s.best["all"], abs=1e-12)


def test_seeded_tpe_repeats_in_one_process(project):
    """Two fresh studies with one seed: the same trials, the same best parameters; another seed differs."""
    path = project.recipe()
    runs = [tune(path, 14, storage=project.sqlite(f"s{i}"), seed=seed, progress=False) for i, seed in enumerate((3, 3, 4))]
    same = [[t.params for t in trials_of(project.sqlite(f"s{i}"), runs[i].study_name)] for i in range(3)]
    assert runs[0].best_params == runs[1].best_params and same[0] == same[1]
    assert runs[0].best == runs[1].best
    assert same[2] != same[0]


# ---------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_and_writes_nothing(project, tmp_path):
    bad_key = edit_yaml(project.recipe("typo"), lambda d: d["members"][0].update(wieght=d["members"][0].pop("weight")))
    missing = edit_yaml(project.recipe("missing"), lambda d: d["members"][1].update(model=str(tmp_path / "models" / "nope")))
    pinned = project.recipe("pinned", pin=["*"])
    # refused by the pipeline, not by the recipe's checks: once, before any study or failed trial exists
    groups = edit_yaml(project.recipe("groups"), lambda d: d["steps"].update(new_whale_groups={"thresholds": {"beluga": 0.5}}))
    for path, message in [(bad_key, "unknown key 'members[0].wieght' (did you mean 'weight'?)"),
                          (missing, "members[1]: model directory"),
                          (pinned, "nothing to tune: every parameter is pinned"),
                          (groups, "train.csv has no 'species' column")]:
        url = project.sqlite(path.stem)
        out = script("tune.py", str(path), "--trials", "5", "--storage", url, "--no-report")
        assert out.returncode == 2, out.stderr
        assert out.stdout == "" and out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
        assert message in out.stderr and (str(path) in out.stderr or path == groups)
        assert not path.with_name(f"{path.stem}.tuned.yaml").exists()
        assert not (project.root / "studies" / f"{path.stem}.db").exists()
    out = script("tune.py", str(project.recipe()), "--trials", "0", "--storage", project.sqlite())
    assert out.returncode == 2 and out.stderr == "error: --trials must be >= 1, got 0\n"
    out = script("tune.py", str(project.recipe()), "--trials", "3", "--storage", "redis://nowhere")
    assert out.returncode == 2 and out.stderr.startswith("error: --storage 'redis://nowhere': expected")
    out = script("tune.py", str(project.recipe()), "--trials", "3", "--storage", project.sqlite(), "--grace", "0")
    assert out.returncode == 2 and out.stderr == "error: --grace must be >= 1 second, got 0\n"
    assert not list(project.root.glob("blends/*.tuned.yaml"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_killed_runs_trial_fails_on_any_storage(project):
    """The heartbeat fails a dead trial only once one was recorded, and never on a journal: the
    next run fails the RUNNING trials older than the grace period itself, and only those."""
    from datetime import datetime, timedelta

    from kit.tune.study import fail_abandoned

    for url in (project.journal(), project.sqlite()):
        study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
        old, new = study.ask(), study.ask()
        study.tell(study.ask(), 0.5)
        cut = datetime.now()
        young = study.ask()
        assert fail_abandoned(study, started_before=cut) == [old.number, new.number]
        assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.RUNNING]
        assert young.number == 3 and fail_abandoned(study, started_before=cut - timedelta(seconds=1)) == []


def test_kept_untuned_recipe_keeps_what_it_fits(project):
    """A kept untuned recipe is written as written: its `weights: select` and `fit: threshold` are
    fitted by blend.py on all the validation images, not frozen at the tuning part's values."""
    def fitting(d):
        d["weights"] = "select"
        d["steps"]["new_whale"] = {"fit": "threshold"}
        for m in d["members"]:
            m.pop("weight")
    path = edit_yaml(project.recipe(holdout=0.3, seed=1), fitting)
    s = tune(path, 1, storage=project.sqlite(), progress=False)  # one trial: the untuned recipe's own
    assert s.kept_untuned
    written = yaml.safe_load(s.tuned_path.read_text())
    assert written["weights"] == "select" and written["steps"]["new_whale"] == {"fit": "threshold"}
    assert all("weight" not in m for m in written["members"])
    # blend.py --members fits it on the tuning part, like the untuned recipe: the same row
    from kit.tune.members import member_table_for, tuned_beside

    rows = {r.what: r.marks for r in member_table_for(path, tuned_beside(path)[0]).rows}
    assert all(np.array_equal(rows["blend, tuned by Optuna"][p], rows["blend, untuned recipe"][p])
               for p in rows["blend, untuned recipe"])


def test_without_evidence_the_untuned_values_are_kept(project):
    """tune.accept: significant (the default): a best trial that does not beat the untuned recipe on
    the tuning part with an interval above 0 is not taken; the tuned recipe says why. Here the untuned
    recipe already holds the threshold that is best on the tuning part: no trial can show more."""
    path = project.recipe(holdout=0.3, seed=1, pin=["members.*.weight"])
    objective = Objective(load_recipe(path), search_space(load_recipe(path)), holdout=0.3, seed=1)
    best_threshold = objective.evaluate(objective.recipe)[1]
    edit_yaml(path, lambda d: d["steps"]["new_whale"].update(threshold=best_threshold))
    s = tune(path, 3, storage=project.sqlite(), progress=False)
    assert s.n_trials == 1  # only the threshold is searched: fitted, one trial says it all
    assert s.kept_untuned and not s.evidence.low > 0 and s.evidence.n == len(objective.tune_idx)
    assert "kept the untuned values" in s.verdict() and "untuned values kept" in s.table()
    assert s.tuned == load_recipe(path).with_params(name="final_tuned")
    assert "untuned recipe is kept as written" in s.tuned_path.read_text().splitlines()[1]
    # as written: what the recipe fits, blend.py fits on all the validation images, not the tuning part
    assert load_recipe(s.tuned_path).tunable_params() == load_recipe(path).tunable_params()
    forced = edit_yaml(project.recipe("forced", holdout=0.3, seed=1, pin=["members.*.weight"], accept="best"),
                       lambda d: d["steps"]["new_whale"].update(threshold=best_threshold))
    assert not tune(forced, 3, storage=project.sqlite(), progress=False).kept_untuned
    with pytest.raises(KitError, match=r"tune.accept = 'maybe' is not allowed; expected significant or best"):
        load_recipe(project.recipe("bad", accept="maybe"))


def test_a_study_tunes_a_threshold_per_species(project):
    """Happywhale's per-species unknown thresholds opened to the tuner (tune.free): each species' threshold
    is a parameter of the study, and the tuned recipe carries the best trial's, which blend.py scores as
    the study did."""
    import pandas as pd

    train_csv = project.comp.root / "train.csv"
    train = pd.read_csv(train_csv)
    odd = {label: i % 2 for i, label in enumerate(sorted(set(train["Id"])))}
    train["species"] = ["beluga" if odd[label] else "humpback_whale" for label in train["Id"]]
    train.to_csv(train_csv, index=False)
    groups = "steps.new_whale_groups.thresholds"
    path = edit_yaml(project.recipe(holdout=0, parts=1, accept="best", free=["steps.new_whale_groups.*"],
                                    pin=["members.*.weight"]),
                     lambda d: d["steps"].update(new_whale_groups={"thresholds": {"beluga": 0.5, "humpback_whale": 0.5}}))
    s = tune(path, 12, storage=project.sqlite(), progress=False)
    trials = complete(trials_of(project.sqlite(), s.study_name))
    assert {f"{groups}.beluga", f"{groups}.humpback_whale"} <= set(trials[-1].params)
    best = max(trials, key=lambda t: t.value)
    tuned = load_recipe(s.tuned_path)
    assert tuned.steps.new_whale_groups.thresholds == pytest.approx(
        {sp: best.params[f"{groups}.{sp}"] for sp in ("beluga", "humpback_whale")})
    assert abs(blend_files(s.tuned_path, echo=quiet).summary["val"]["map5"] - best.value) <= 1e-12



def test_no_report_removes_the_previous_tunings_report(project):
    """`tune.py --no-report` left the previous tuning's report beside the new tuned recipe."""
    path, url = project.recipe(), project.sqlite()
    out = script("tune.py", str(path), "--trials", "3", "--storage", url, "--quiet")
    assert out.returncode == 0, out.stderr
    reports = list((project.root / "blends" / "submissions").glob("*_tuned.html"))
    assert len(reports) == 1
    out = script("tune.py", str(path), "--trials", "4", "--storage", url, "--quiet", "--no-report")
    assert out.returncode == 0, out.stderr
    assert not reports[0].exists() and (project.root / "blends" / "final.tuned.yaml").is_file()
