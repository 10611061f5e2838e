"""The training loop end to end: the member's files, resume after a kill, DDP, bad images, scripts."""
import json
import os
import runpy
import socket
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from kit.data.folds import read_folds
from kit.errors import KitError
from kit.train.data import load_image
from kit.train.loop import train
from kit.train.model import build_model, load_member
from kit.train.recipe import dump_recipe, load_recipe

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[2]


def params(path: Path) -> dict:
    return torch.load(path / "checkpoint.pt", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict, keys=None, atol=0.0):
    keys = keys or a.keys()
    for k in keys:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=atol), k


def test_train_writes_the_member(learnable, tiny_recipe, tmp_path):
    recipe = tiny_recipe(learnable, head={"type": "arcface", "scale": 16.0, "margin": 0.2}, augment={"flip": "twin"})
    own = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = train(recipe, out=tmp_path / "m", progress=False, threads=2)
        assert torch.get_num_threads() == 1  # the caller's setting is put back
    finally:
        torch.set_num_threads(own)
    assert {p.name for p in out.iterdir()} >= {"recipe.yaml", "classes.txt", "checkpoint.pt", "metrics.json", "train.log"}
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # plain data, no pickle of classes
    assert {"model", "recipe", "classes", "epoch", "stage", "optimizer", "scheduler", "rng"} <= set(ckpt)
    classes = (out / "classes.txt").read_text().split()
    assert ckpt["classes"] == classes and len(classes) == 8 and "new_whale" not in classes
    assert ckpt["epoch"] == 2 and ckpt["stage"] == 1  # every stage done
    assert load_recipe(out / "recipe.yaml").head.type == "arcface"  # the recipe as run reloads

    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert 0 <= metrics["epochs"][-1]["val"]["map5"] <= 1 and metrics["epochs"][-1]["images_per_s"] > 0
    assert metrics["baselines"]["all_unknown"] == pytest.approx(2 / 6, abs=1e-4)
    assert "val MAP@5" in (out / "train.log").read_text()

    model, info = load_member(out)
    assert not model.training
    assert info.classes == tuple(classes) and info.flip_twins and info.activation == "softmax"
    assert info.input_size == (32, 64) and info.use_boxes and info.channels == 3 and info.embedding_dim == 16
    x = load_image(learnable / "train" / "tr0000.jpg", (4, 4, 92, 44), info)
    logits, embedding = model(torch.from_numpy(x)[None])
    assert logits.shape == (1, 16) and embedding.shape == (1, 16)


def test_softmax_head_learns_the_training_set(learnable, tiny_recipe, tmp_path):
    recipe = tiny_recipe(learnable, stages=[{"epochs": 6, "lr": 0.01}], head={"embedding_dim": 32})
    metrics = json.loads((train(recipe, out=tmp_path / "m", progress=False) / "metrics.json").read_text())
    losses = [e["loss"] for e in metrics["epochs"]]
    assert losses[-1] < 0.6 * losses[0], losses


class Interrupt(Exception):
    pass


def test_resume_after_an_interrupted_epoch_gives_the_same_weights(learnable, tiny_recipe, tmp_path):
    # two stages (head first, then everything), augmentation and dropout on: every RNG matters
    over = dict(head={"dropout": 0.3}, augment={"probability": 0.8, "blur": 0.3, "greyscale": 0.3, "flip": "twin"},
                stages=[{"epochs": 1, "lr": 0.003, "freeze": "backbone"}, {"epochs": 2, "lr": 0.003}])
    full = train(tiny_recipe(learnable, **over), out=tmp_path / "full", progress=False)

    def kill(stage, epoch, step):
        if (stage, epoch, step) == (1, 1, 1):  # in the second epoch of stage 2, after its 2nd step
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_recipe(learnable, **over), out=tmp_path / "cut", progress=False, on_step=kill)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    with pytest.raises(KitError, match="use --resume to continue it or --force"):
        train(tiny_recipe(learnable, **over), out=tmp_path / "cut", progress=False)
    changed = dict(over, head={"dropout": 0.1})
    with pytest.raises(KitError, match=r"recipe changed since this checkpoint \(head.dropout: 0.3 -> 0.1\)"):
        train(tiny_recipe(learnable, **changed), out=tmp_path / "cut", progress=False, resume=True)
    train(tiny_recipe(learnable, **over), out=tmp_path / "cut", progress=False, resume=True)

    assert_same_weights(params(full), params(tmp_path / "cut"))
    a = json.loads((full / "metrics.json").read_text())["epochs"]
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())["epochs"]
    assert [e["loss"] for e in a] == [e["loss"] for e in b] and len(b) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, recipe, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    train(recipe, out=out, progress=False)


@pytest.mark.parametrize("single_over", [
    # BatchNorm in training mode normalises each device's own half-batch; one process accumulating
    # the same two halves (4 + 4 images) must end with the same parameters.
    pytest.param({"optim": {"optimizer": "sgd", "accumulate": 2}}, id="per-device-batchnorm"),
    # With every BatchNorm frozen (model.freeze_bn), DDP is exactly one process on the whole batch of 8.
    pytest.param({"optim": {"optimizer": "sgd"}, "model": {"freeze_bn": True}}, id="frozen-batchnorm"),
])
def test_ddp_two_gloo_processes_match_one_process(learnable, tiny_recipe, tmp_path, monkeypatch, single_over):
    # SGD and one thread each: Adam would magnify float summation-order noise in tiny gradients.
    over = dict(augment={"probability": 0.8, "flip": "twin"}, sampling={"batch_size": 8},
                stages=[{"epochs": 2, "lr": 0.05}])
    ddp_over = {"optim": {"optimizer": "sgd"}, "model": dict(single_over.get("model", {}))}
    ddp = tiny_recipe(learnable, **ddp_over, **over)
    mp.spawn(_ddp_worker, args=(2, _free_port(), ddp, str(tmp_path / "ddp")), nprocs=2, join=True)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(tiny_recipe(learnable, **single_over, **over), out=tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = params(tmp_path / "ddp"), params(single)
    model, _ = load_member(single)
    names = [n for n, _ in model.named_parameters()]
    assert_same_weights(a, b, names, atol=1e-5)
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    torch.manual_seed(ddp.seed)  # the loop's initial weights: training really moved them
    initial = build_model(ddp, len(model.head.classifier.weight) // 2).state_dict()
    assert max(float((a[n] - initial[n]).abs().max()) for n in names) > 1e-2


def test_a_bad_image_is_skipped_and_counted(new_competition, tiny_recipe, tmp_path):
    data = new_competition()
    folds = (data / "folds.csv").read_text().splitlines()
    train_image = next(line.split(",")[0] for line in folds[1:] if line.endswith(",-1"))
    (data / "train" / train_image).write_bytes(b"not a jpeg at all")
    recipe = tiny_recipe(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train(recipe, out=tmp_path / "m", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bad_images"] == [str(data / "train" / train_image)]
    assert any(train_image in str(w.message) for w in caught)
    assert "skipping bad image" in (out / "train.log").read_text()
    # cached the same way: counted once, before training
    out = train(tiny_recipe(data), out=tmp_path / "c", progress=False)
    assert len(json.loads((out / "metrics.json").read_text())["bad_images"]) == 1


def test_missing_folds_file(new_competition, tiny_recipe, tmp_path):
    data = new_competition(folds=0)
    with pytest.raises(KitError, match=r"folds.csv: not found; run `python scripts/prepare.py"):
        train(tiny_recipe(data), out=tmp_path / "m", progress=False)
    out = train(tiny_recipe(data, fold=-1, stages=[{"epochs": 1}]), out=tmp_path / "m", progress=False)
    assert json.loads((out / "metrics.json").read_text())["val_images"] == 0


def test_script_prints_one_line_errors(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]
    from kit import cli

    (tmp_path / "r.yaml").write_text("heads: {type: softmax}\n")
    with pytest.raises(SystemExit) as e:
        cli.run(main, [str(tmp_path / "r.yaml")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown key 'heads' (did you mean 'head'?)" in err and "\n" not in err


def test_several_recipes_train_at_once_and_as_they_would_alone(learnable, tiny_recipe, tmp_path, monkeypatch):
    """train.py a.yaml b.yaml --jobs 2: both members at once, the cores split between them (one
    thread each on 2 cores), each with the weights it gets alone with as many threads: a training is
    the same whoever shares the machine."""
    import subprocess
    import sys

    from kit.io import cpu_count

    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / f"{name}.yaml").write_text(dump_recipe(tiny_recipe(learnable, name=name, seed=seed, stages=ONE_EPOCH)))
    monkeypatch.chdir(tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "a.yaml", "b.yaml", "--jobs", "2",
                          "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    threads = max(1, cpu_count() // 2)
    assert f"2 training(s), 2 at a time, {threads} thread(s) each" in out.stdout
    assert "models/a: trained, val MAP@5" in out.stdout and "models/b: trained, val MAP@5" in out.stdout
    alone = train(tiny_recipe(learnable, name="b", seed=1, stages=ONE_EPOCH), out=tmp_path / "alone", progress=False,
                  threads=threads)
    assert_same_weights(params(tmp_path / "models" / "b"), params(alone))
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "a.yaml", "b.yaml", "--out", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--out names one member's directory" in bad.stderr


# ---- fold: all (an out-of-fold member: one member per fold) ------------------------------------

ONE_EPOCH = [{"epochs": 1, "lr": 0.003}]


def test_every_fold_trains_one_ordinary_member_per_fold(learnable, tiny_recipe, tmp_path):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(dump_recipe(tiny_recipe(learnable, stages=ONE_EPOCH)))  # fold: 0 in the file
    main = runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]
    out = tmp_path / "oof"
    assert main([str(recipe_file), "--folds", "--out", str(out), "--quiet"]) == 0  # --folds overrides fold: 0

    assert load_recipe(out / "recipe.yaml").fold == "all" and not (out / "checkpoint.pt").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fold0", "fold1"]
    folds = read_folds(learnable / "folds.csv")
    for k in (0, 1):
        child = out / f"fold{k}"
        assert {p.name for p in child.iterdir()} == {"recipe.yaml", "classes.txt", "checkpoint.pt", "metrics.json",
                                                      "train.log"}
        assert load_recipe(child / "recipe.yaml").fold == k
        _, info = load_member(child)
        assert info.name == f"tiny.fold{k}" and info.fold == k
        metrics = json.loads((child / "metrics.json").read_text())
        assert metrics["fold"] == k and metrics["val_images"] == int((folds.fold == k).sum())
    log = (out / "train.log").read_text()
    assert "fold 0: training tiny.fold0" in log and "fold 1: done in" in log and "val MAP@5" in log

    # a fold member is exactly what a single-fold run of the same recipe trains
    single = train(tiny_recipe(learnable, stages=ONE_EPOCH, fold=1), out=tmp_path / "single", progress=False)
    assert_same_weights(params(out / "fold1"), params(single))


def test_every_fold_resume_skips_the_finished_folds(learnable, tiny_recipe, tmp_path):
    recipe = tiny_recipe(learnable, fold="all", stages=[{"epochs": 2, "lr": 0.003}])
    out = tmp_path / "oof"

    def kill(stage, epoch, step):
        if epoch == 1 and (out / "fold1" / "checkpoint.pt").is_file():  # the second epoch of fold 1
            raise Interrupt

    with pytest.raises(Interrupt):
        train(recipe, out=out, progress=False, on_step=kill)
    assert torch.load(out / "fold1" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    finished = (out / "fold0" / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(KitError, match=r"oof: already holds a checkpoint; use --resume to continue it or --force"):
        train(recipe, out=out, progress=False)

    train(recipe, out=out, progress=False, resume=True)
    assert (out / "fold0" / "checkpoint.pt").stat().st_mtime_ns == finished  # not trained again
    assert torch.load(out / "fold1" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert "resuming after epoch 1" in (out / "fold1" / "train.log").read_text()
    log = (out / "train.log").read_text()
    assert "fold 0: already trained" in log and "fold 1: resuming tiny.fold1" in log

    train(recipe, out=out, progress=False, force=True)
    assert (out / "fold0" / "checkpoint.pt").stat().st_mtime_ns > finished
    assert "already trained" not in (out / "train.log").read_text()  # --force starts the log over too


def test_folds_side_by_side_train_what_one_at_a_time_trains(learnable, tiny_recipe, tmp_path):
    """jobs=2: the folds in two processes at once, one thread each: each fold member is exactly what a
    one-thread single-fold run trains."""
    recipe = tiny_recipe(learnable, fold="all", stages=ONE_EPOCH)
    both = train(recipe, out=tmp_path / "both", progress=False, jobs=2)
    for k in (0, 1):
        single = train(tiny_recipe(learnable, stages=ONE_EPOCH, fold=k), out=tmp_path / f"single{k}", progress=False,
                       threads=1)
        assert_same_weights(params(both / f"fold{k}"), params(single))
    log = (both / "train.log").read_text()
    assert "2 fold(s) to train, 2 at a time" in log and "fold 0: done" in log and "fold 1: done" in log


def test_every_fold_needs_folds_and_an_unused_directory(new_competition, learnable, tiny_recipe, tmp_path):
    data = new_competition(folds=0)
    with pytest.raises(KitError, match=r"folds.csv: not found; fold: all trains one member per fold"):
        train(tiny_recipe(data, fold="all"), out=tmp_path / "oof", progress=False)
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(KitError, match=r"single: holds a single-fold member \(checkpoint.pt\)"):
        train(tiny_recipe(learnable, fold="all"), out=tmp_path / "single", progress=False, force=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the worker processes")
def test_killing_train_py_stops_its_side_by_side_trainings(learnable, tiny_recipe, tmp_path):
    """kill -9 of `train.py --folds --jobs 2`: its two training processes exit within seconds, not at
    the end of their epochs (nobody would collect them)."""
    import signal
    import subprocess
    import sys
    import time

    recipe_file = tmp_path / "long.yaml"
    recipe_file.write_text(dump_recipe(tiny_recipe(learnable, stages=[{"epochs": 200, "lr": 0.001}])))
    out = tmp_path / "oof"
    proc = subprocess.Popen([sys.executable, "scripts/train.py", str(recipe_file), "--folds", "--jobs", "2", "--out",
                             str(out), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not all((out / f"fold{k}" / "train.log").is_file() for k in (0, 1)):  # both trainings started
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    workers = [pid for pid in _children(proc.pid) if "spawn_main" in (Path("/proc") / str(pid) / "cmdline").read_text()]
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    assert not (out / "fold0" / "checkpoint.pt").is_file() or torch.load(
        out / "fold0" / "checkpoint.pt", weights_only=True)["epoch"] < 200  # stopped, not finished


def test_training_into_a_log_writes_lines_not_frames(learnable, tiny_recipe, tmp_path, capfd):
    """train.py with its output redirected (not a terminal): per-epoch lines, no carriage-return frames."""
    train(tiny_recipe(learnable, stages=[{"epochs": 1, "lr": 0.003}]), out=tmp_path / "m", progress=True)
    captured = capfd.readouterr()
    assert "\r" not in captured.out + captured.err
    assert "epoch 1 (stage 1.1)" in captured.out


def test_a_missing_fold_or_backbone_names_its_file(learnable, tiny_recipe, tmp_path):
    """Issue 13: `fold 7 does not exist` and an unknown backbone named no file. Now the fold's error
    names folds.csv, and the backbone's the recipe, checked before the data is read."""
    import subprocess
    import sys

    from faults import one_error_line

    def train_py(recipe_file):
        return subprocess.run([sys.executable, "scripts/train.py", str(recipe_file), "--out", str(tmp_path / "out"),
                               "--quiet"], cwd=ROOT, capture_output=True, text=True)

    fold = tmp_path / "fold7.yaml"
    fold.write_text(dump_recipe(tiny_recipe(learnable, fold=7)))
    err = one_error_line(train_py(fold))
    assert f"{learnable / 'folds.csv'}: the recipe's fold 7 does not exist; it has folds [0, 1" in err
    backbone = tmp_path / "backbone.yaml"
    backbone.write_text(dump_recipe(tiny_recipe(learnable, model={"backbone": "resnet1B"})))
    err = one_error_line(train_py(backbone))
    assert f"{backbone}: model.backbone 'resnet1B' is not a timm model; did you mean resnet18" in err
    assert not (tmp_path / "out").exists()


def test_the_head_learns_at_its_own_rate(learnable, tiny_recipe, tmp_path):
    """optim.head_lr: the neck and classifier at 10x the schedule's rate, the backbone at 1x."""
    recipe = tiny_recipe(learnable, optim={"head_lr": 10.0}, stages=[{"epochs": 1, "lr": 0.002, "schedule": "constant"}])
    out = train(recipe, out=tmp_path / "m", progress=False)
    groups = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    assert [g["lr"] for g in groups] == pytest.approx([0.002, 0.02])
    from kit.train.model import build_model

    model = build_model(recipe, num_classes=8)
    assert len(groups[1]["params"]) == len(list(model.head.parameters()))


def test_the_species_head_trains_beside_the_identities(new_competition, tiny_recipe, tmp_path):
    """head.species_weight: a species classifier on the embedding, trained, checkpointed, reloaded; the
    exported network is the identity head's alone. A competition without species says so."""
    from kit.export.member import export_member
    from kit.export.runtime import open_session

    data = new_competition(layout="happywhale", species=("beluga", "humpback_whale"))
    recipe = tiny_recipe(data, head={"species_weight": 1.0}, optim={"head_lr": 10.0})
    out = train(recipe, out=tmp_path / "m", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["epochs"][-1]["val"]["species_accuracy"] <= 1
    assert "species " in (out / "train.log").read_text()
    groups = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    model, info = load_member(out)
    assert info.species == ("beluga", "humpback_whale") and model.species_head.out_features == 2
    assert len(groups[1]["params"]) == len(list(model.head.parameters())) + 2  # the species head at the head's rate
    export_member(out, progress=False, log=lambda line: None)
    assert [o.name for o in open_session(out / "model.onnx").get_outputs()] == ["logits", "embedding"]

    plain = new_competition()  # the 2019 layout: no species column
    with pytest.raises(KitError, match=r"train.csv has no species column; set it to 0"):
        train(tiny_recipe(plain, head={"species_weight": 1.0}), out=tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()


def test_a_checkpoint_on_a_full_disk_is_one_named_error(full_disk, tmp_path):
    """torch.save's own writer made a full disk a 30-line RuntimeError traceback; the file is written
    by Python now, and the error names it. The previous checkpoint stays whole."""
    from types import SimpleNamespace

    from kit.errors import KitError
    from kit.train.checkpoint import save_checkpoint

    disk = full_disk(tmp_path / "disk", size="8m")
    filler = disk / "filler.bin"
    filler.unlink()  # room for a first checkpoint
    model, plain = torch.nn.Linear(256, 256), SimpleNamespace(to_dict=dict)
    save_checkpoint(disk / "checkpoint.pt", model, plain, ["a"], plain, epoch=1)
    before = (disk / "checkpoint.pt").read_bytes()
    with open(filler, "wb", buffering=0) as f:  # the rest of the disk, taken
        try:
            while f.write(b"\0" * 65536):
                pass
        except OSError:
            pass
    with pytest.raises(KitError, match=r"checkpoint\.pt.*No space left on device"):
        save_checkpoint(disk / "checkpoint.pt", model, plain, ["a"], plain, epoch=2)
    assert (disk / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == ["checkpoint.pt", "filler.bin"]
