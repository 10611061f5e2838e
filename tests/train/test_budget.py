"""Training by time (kit/train/budget.py): the plan follows the steady speed, not the warm-up, and
the stage ends on time when the speed changes. Time here is a fake clock: nothing sleeps, nothing
is timed for real."""
import json

import pytest
import torch

from kit.train import budget as budget_module
from kit.train.budget import PROBE_STEPS, WARMUP_STEPS, TimeBudget


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(budget_module, "clock", fake)
    return fake


def simulate(clock, budget: TimeBudget, step_seconds, val_seconds: float = 0.0, limit: int = 1000):
    """Run epochs as the loop does until the plan is done; `step_seconds(i)` is the i-th step's time
    (counted over the whole stage). Returns the log lines."""
    lines, i, done = [], 0, 0
    while budget.epochs is None or done < budget.epochs:
        budget.epoch_start()
        for _ in range(budget.steps_per_epoch):
            clock.now += step_seconds(i)
            i += 1
            lines.append(budget.step())
        clock.now += val_seconds(done) if callable(val_seconds) else val_seconds
        done += 1
        lines.append(budget.epoch_end(done))
        assert done < limit
    return [line for line in lines if line]


def test_the_probe_ignores_warm_up_steps(clock):
    # the first steps are 20x slower (allocation, kernel choice): a mean would halve the plan
    b = TimeBudget(130, steps_per_epoch=50, batch_size=8, val_images=0)
    lines = simulate(clock, b, lambda i: 10.0 if i < WARMUP_STEPS else 0.5)
    assert b.step_seconds == 0.5
    assert "16 images/s steady" in lines[0] and f"steps {WARMUP_STEPS + 1}-{WARMUP_STEPS + PROBE_STEPS}" in lines[0]
    # 30 s of warm-up, then 25 s epochs: the first epoch ends at 53.5 s, 3 more fit the rest
    assert b.epochs == 4 and abs(clock.now - 130) <= 0.2 * 130


def test_a_short_first_epoch_is_planned_from_its_steps_past_warm_up(clock):
    b = TimeBudget(120, steps_per_epoch=10, batch_size=8, val_images=0)
    lines = simulate(clock, b, lambda i: 10.0 if i < WARMUP_STEPS else 0.5, val_seconds=1.0)
    assert b.step_seconds == 0.5 and "median of the first epoch's 7 step(s) past warm-up" in lines[0]
    assert abs(clock.now - 120) <= 0.2 * 120


def test_a_load_spike_during_the_probe_moves_the_plan_little(clock):
    spikes = {WARMUP_STEPS + 2, WARMUP_STEPS + 9}
    b = TimeBudget(300, steps_per_epoch=40, batch_size=8, val_images=0)
    simulate(clock, b, lambda i: 5.0 if i in spikes else 0.5)
    assert b.step_seconds == 0.5 and abs(clock.now - 300) <= 0.2 * 300


def test_the_stage_ends_on_time_when_the_machine_slows_down(clock):
    # twice as slow from step 60 on (another job started): the plan shortens and the stage still
    # ends within 20% of its budget, saying why
    b = TimeBudget(200, steps_per_epoch=10, batch_size=8, val_images=0)
    lines = simulate(clock, b, lambda i: 0.5 if i < 60 else 1.0)
    assert any("the schedule shortened" in line for line in lines)
    assert abs(clock.now - 200) <= 0.2 * 200


def test_a_faster_machine_stretches_the_plan(clock):
    b = TimeBudget(200, steps_per_epoch=10, batch_size=8, val_images=0)
    lines = simulate(clock, b, lambda i: 1.0 if i < 40 else 0.4)
    assert any("the schedule stretched" in line for line in lines)
    assert abs(clock.now - 200) <= 0.2 * 200


def test_validation_counts_against_the_budget(clock):
    # 5 s of steps and 5 s of validation an epoch: half the epochs of training alone
    b = TimeBudget(100, steps_per_epoch=10, batch_size=8, val_images=0)
    simulate(clock, b, lambda i: 0.5, val_seconds=5.0)
    assert 9 <= b.epochs <= 11 and abs(clock.now - 100) <= 0.2 * 100


def test_an_epoch_too_short_to_probe_is_timed_whole(clock):
    b = TimeBudget(60, steps_per_epoch=3, batch_size=8, val_images=0)
    lines = simulate(clock, b, lambda i: 1.0, val_seconds=1.0)
    assert "too few for the 20-step probe" in lines[0] and b.epochs == 15 and abs(clock.now - 60) <= 0.2 * 60


def test_epochs_cap_what_the_time_buys(clock):
    b = TimeBudget(1000, steps_per_epoch=10, batch_size=8, val_images=0, max_epochs=7)
    lines = simulate(clock, b, lambda i: 0.5)
    assert b.epochs == 7 and "capped by epochs: 7" in lines[0]


def test_a_budget_shorter_than_one_epoch_trains_one(clock):
    b = TimeBudget(5, steps_per_epoch=100, batch_size=8, val_images=0)
    simulate(clock, b, lambda i: 0.5)
    assert b.epochs == 1


# ------------------------------------------------------------------------- in the training loop
def test_a_stage_by_time_in_the_real_loop_is_planned_saved_and_resumed(learnable, tiny_recipe, tmp_path, clock):
    from kit.train.loop import train

    over = dict(stages=[{"minutes": 0.5, "lr": 0.003}])

    def slow_step(stage, epoch, step):  # a fake-slow loop: every optimizer step takes 1 s
        clock.now += 1.0

    out = train(tiny_recipe(learnable, **over), out=tmp_path / "timed", progress=False, on_step=slow_step)
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    planned = epochs[-1]["stage_epochs"]
    assert len(epochs) == planned and all(e["stage_epochs"] == planned for e in epochs[-2:])
    assert abs(clock.now - 30) <= 0.2 * 30  # the fake 30 seconds, to within 20%
    log = (out / "train.log").read_text()
    assert "stage 1: 0.5 minutes" in log and f"stage 1: {planned} epoch(s) in 0.5 of 0.5 minutes" in log

    # killed in its second epoch, resumed with the real clock: it finishes the plan it had made by then
    planned = epochs[0]["stage_epochs"]
    class Interrupt(Exception):
        pass

    def kill(stage, epoch, step):
        clock.now += 1.0
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_recipe(learnable, **over), out=tmp_path / "cut", progress=False, on_step=kill)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["planned_epochs"] == planned and saved["epoch"] == 1
    train(tiny_recipe(learnable, **over), out=tmp_path / "cut", progress=False, resume=True)
    assert f"resuming the {planned} epoch(s) planned" in (tmp_path / "cut" / "train.log").read_text()
    assert len(json.loads((tmp_path / "cut" / "metrics.json").read_text())["epochs"]) == planned


def test_a_recipe_by_time_reads_and_writes_back_equal():
    import yaml

    from kit.train.recipe import dump_recipe, recipe_from_dict

    timed = recipe_from_dict({"stages": [{"minutes": 4, "lr": 0.002}, {"epochs": 2}, {}]})
    assert [(s.epochs, s.minutes) for s in timed.stages] == [(None, 4), (2, None), (10, None)]
    assert recipe_from_dict(yaml.safe_load(dump_recipe(timed))) == timed


def test_the_first_epoch_s_warm_up_does_not_shake_the_plan(clock):
    # slow first steps and a slow first validation (kernels compiled once) inside the first epoch: no
    # re-plan after it, and none later while the pace holds
    b = TimeBudget(240, steps_per_epoch=40, batch_size=8, val_images=40)
    lines = simulate(clock, b, lambda i: 2.0 if i < WARMUP_STEPS else 0.2, val_seconds=lambda e: 5.0 if e == 0 else 1.0)
    assert len(lines) == 1 and "fit" in lines[0]  # the plan, once
    assert abs(clock.now - 240) <= 0.2 * 240
