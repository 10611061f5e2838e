"""prepare.py --init: starter recipes fitted to the data train and blend with no file edited; members
train by time, from pretrained weights wherever a file or a cached hub copy is at hand (offline)."""
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kit.data.prepare import prepare
from kit.errors import KitError
from kit.post.files import blend_files
from kit.pretrained import Weights
from kit.starter import FAMILIES, MemberPlan, budget_line, init_workdir, survey

pytestmark = pytest.mark.slow  # seconds a test (training, exporting, whole scripts): the full suite's, not the inner loop's

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape", [
    dict(size=(40, 120), grey=True, boxes=True),  # wide, greyscale, boxes
    dict(size=(64, 64), grey=False, boxes=False),  # square, colour, no boxes
], ids=["grey-wide-boxes", "colour-square-photos"])
def test_init_writes_recipes_that_train_export_and_blend_unedited(new_competition, tmp_path, monkeypatch, shape):
    from kit.export.member import export_member
    from kit.post import pipeline
    from kit.train.loop import train
    from kit.train.recipe import load_recipe

    data = new_competition(**shape)
    prepare(data, n_folds=2, echo=lambda line: None)
    work = tmp_path / "work"
    written = init_workdir(data, work, minutes=0.05, pretrained="none", echo=lambda line: None)
    assert {p.relative_to(work).as_posix() for p in written} == {
        "models/resnet.yaml", "models/senet.yaml", "models/inception.yaml", f"blends/{data.name}.yaml", "README.md"}

    s = survey(data)
    recipe = load_recipe(work / "models" / "resnet.yaml")
    h, w = recipe.input.size
    assert recipe.data == str(data.resolve()) and recipe.input.boxes is shape["boxes"]
    assert recipe.input.colour == ("grey" if shape["grey"] else "rgb")
    assert (w > h) == (shape["size"][1] > shape["size"][0]) and h <= shape["size"][0] + 8
    assert recipe.stages[0].minutes == 0.05 and recipe.stages[0].epochs is None  # by time, not a guessed count
    assert recipe.augment.flip == ("none" if s.flip.choice == "twin" else s.flip.choice)  # twin: a GPU's choice
    assert abs(s.val_unknown_share - 2 / 6) < 1e-9  # fold 0: 4 identities' images + 2 unknown
    blend_raw = yaml.safe_load((work / "blends" / f"{data.name}.yaml").read_text())
    assert blend_raw["steps"]["new_whale"] == {"fit": "threshold"}
    assert f"K={ROOT}" in (work / "README.md").read_text()

    monkeypatch.chdir(work)  # the working directory, as its README.md says
    for family in ("resnet", "senet", "inception"):
        r = load_recipe(Path("models") / f"{family}.yaml")
        train(dataclasses.replace(r, stages=(dataclasses.replace(r.stages[0], epochs=1, minutes=None),)), progress=False)
        export_member(Path("models") / family, progress=False, log=lambda line: None)
    run = blend_files(Path("blends") / f"{data.name}.yaml", echo=lambda line: None)
    assert Path(run.summary["submission"]).is_file()


def test_init_never_overwrites_and_never_writes_into_the_kit(new_competition, tmp_path):
    data = new_competition()
    prepare(data, n_folds=2, echo=lambda line: None)
    with pytest.raises(KitError, match="inside the kit's own repository"):
        init_workdir(data, ROOT / "work", pretrained="none", echo=lambda line: None)
    (tmp_path / "w" / "models").mkdir(parents=True)
    (tmp_path / "w" / "models" / "senet.yaml").write_text("mine\n")
    with pytest.raises(KitError, match="senet.yaml: already exists"):
        init_workdir(data, tmp_path / "w", pretrained="none", echo=lambda line: None)
    assert (tmp_path / "w" / "models" / "senet.yaml").read_text() == "mine\n"
    assert not (tmp_path / "w" / "models" / "resnet.yaml").exists()
    with pytest.raises(KitError, match="--pretrained /nowhere: no such file or folder"):
        init_workdir(data, tmp_path / "w2", pretrained="/nowhere", echo=lambda line: None)


def test_the_script_prepares_then_inits(new_competition, tmp_path):
    data = new_competition(folds=0)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(data), "--init",
                          str(tmp_path / "w"), "--minutes", "0.05", "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (data / "folds.csv").is_file() and (tmp_path / "w" / "models" / "resnet.yaml").is_file()
    assert "models/inception.yaml: inception_next_atto at" in out.stdout
    # auto, offline (the tests' HF_HUB_OFFLINE) with nothing cached: from scratch, and the recipe says why
    assert "the hub is out of reach" in (tmp_path / "w" / "models" / "resnet.yaml").read_text()


def _save_backbone(backbone: str, path: Path) -> dict:
    """A weight file as a user would have it: timm's model with its classifier, saved by torch or
    safetensors; returns the state dict."""
    import timm

    torch.manual_seed(7)
    state = timm.create_model(backbone, pretrained=False).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state


def _loaded_backbone_equals(recipe_path: Path, state: dict) -> bool:
    from kit.train.model import create_backbone
    from kit.train.recipe import load_recipe

    backbone = create_backbone(load_recipe(recipe_path)).state_dict()
    shared = [k for k in backbone if k in state and backbone[k].shape == state[k].shape and backbone[k].is_floating_point()]
    return len(shared) > 10 and all(torch.equal(backbone[k], state[k]) for k in shared)


def test_a_weight_file_loads_offline_for_every_starter_family(new_competition, tmp_path):
    data = new_competition()
    prepare(data, n_folds=2, echo=lambda line: None)
    folder = tmp_path / "weights"
    # one bare file, one file with timm's tag, one Hugging Face download (a folder with model.safetensors)
    files = {"resnet": folder / "resnet10t.pth", "senet": folder / "legacy_seresnet18.in1k.safetensors",
             "inception": folder / "inception_next_atto.sail_in1k" / "model.safetensors"}
    states = {family: _save_backbone(FAMILIES[family].cpu, path) for family, path in files.items()}
    work = tmp_path / "w"
    init_workdir(data, work, minutes=1, pretrained=str(folder), echo=lambda line: None)
    for family, path in files.items():
        raw = yaml.safe_load((work / "models" / f"{family}.yaml").read_text())
        assert raw["model"]["backbone"] == FAMILIES[family].cpu and raw["model"]["pretrained_file"] == str(path)
        assert raw["optim"]["head_lr"] == 10 and "kwargs" not in raw["model"]  # full width, fine-tuned
        assert _loaded_backbone_equals(work / "models" / f"{family}.yaml", states[family])
    # a folder without the file: that family from scratch, saying why
    (folder / "resnet10t.pth").unlink()
    init_workdir(data, tmp_path / "w2", minutes=1, pretrained=str(folder), echo=lambda line: None)
    text = (tmp_path / "w2" / "models" / "resnet.yaml").read_text()
    assert "from scratch: no weight file for resnet10t in" in text and "backbone: resnet18" in text


def test_auto_takes_cached_hub_weights_offline(new_competition, tmp_path):
    """`--pretrained auto` with timm's weights in the local caches (Hugging Face's and torch's), no
    network: the recipes say `pretrained: true`, and training loads those very weights."""
    from huggingface_hub import constants  # noqa: F401  (the cache layout below is its own)

    data = new_competition()
    prepare(data, n_folds=2, echo=lambda line: None)
    hf, torch_home = tmp_path / "hf", tmp_path / "torch"
    states = {}
    for family in FAMILIES:
        backbone = FAMILIES[family].cpu
        import timm

        cfg = timm.models.get_pretrained_cfg(backbone)
        if cfg.hf_hub_id:
            repo = hf / "hub" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
            (repo / "refs").mkdir(parents=True)
            (repo / "refs" / "main").write_text("0" * 40)
            states[family] = _save_backbone(backbone, repo / "snapshots" / ("0" * 40) / "model.safetensors")
        else:
            states[family] = _save_backbone(backbone, torch_home / "hub" / "checkpoints" / os.path.basename(cfg.url))
    env = {**os.environ, "HF_HOME": str(hf), "TORCH_HOME": str(torch_home), "HF_HUB_OFFLINE": "1"}
    work = tmp_path / "w"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(data), "--init", str(work),
                          "--minutes", "1", "--quiet"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    for family in FAMILIES:
        raw = yaml.safe_load((work / "models" / f"{family}.yaml").read_text())
        assert raw["model"]["pretrained"] is True and raw["model"]["backbone"] == FAMILIES[family].cpu
        assert "found in the local cache" in (work / "models" / f"{family}.yaml").read_text()
    check = (f"import sys, torch; sys.path.insert(0, {str(ROOT)!r}); from kit.train.model import create_backbone; "
             f"from kit.train.recipe import load_recipe; "
             f"[torch.save(create_backbone(load_recipe('{work}/models/' + f + '.yaml')).state_dict(), '{tmp_path}/' + f + '.pt') "
             f"for f in {list(FAMILIES)!r}]")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env)
    assert loaded.returncode == 0, loaded.stderr
    for family in FAMILIES:
        got = torch.load(tmp_path / f"{family}.pt", weights_only=True)
        shared = [k for k in got if k in states[family] and got[k].shape == states[family][k].shape]
        assert len(shared) > 10 and all(torch.equal(got[k], states[family][k]) for k in shared)


def test_a_budget_too_short_to_learn_says_so_with_what_would_do():
    def plan(kind: str, epochs: float) -> MemberPlan:
        weights = Weights("file" if kind == "pretrained" else "none", "", None)
        return MemberPlan("resnet", "resnet18", weights, (96, 192), False, speed=30.0, epochs=epochs)

    assert budget_line([plan("scratch", 12), plan("pretrained", 3)], 4) is None
    line = budget_line([plan("scratch", 12), plan("scratch", 5)], 4)
    assert line.startswith("warning: 4 minutes buy ~5.0 epoch(s) of models/resnet.yaml at 96 x 192")
    assert "fewer than the 10 a scratch member needs" in line and "--minutes 8" in line
    assert "size: [64, 128]" in line and "train 1 member(s) with the 8 minutes of all 2" in line
    hopeless = budget_line([plan("scratch", 0.3), plan("scratch", 12)], 0.1)  # 33x short: more time only
    assert "--minutes 4" in hopeless and "member(s)" not in hopeless and "size:" not in hopeless


def test_the_generated_readme_names_the_checkout_that_ran_init(new_competition, tmp_path):
    """Another checkout's scripts, run with this checkout's venv: its own kit runs, and its README
    names it (a venv installs one checkout's kit; the scripts put their own first)."""
    data = new_competition()
    prepare(data, n_folds=2, echo=lambda line: None)
    other = tmp_path / "other-checkout"
    for part in ("kit", "scripts"):
        shutil.copytree(ROOT / part, other / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", other / "pyproject.toml")
    out = subprocess.run([sys.executable, str(other / "scripts" / "prepare.py"), str(data), "--init",
                          str(tmp_path / "w"), "--minutes", "0.05", "--pretrained", "none", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"K={other}" in (tmp_path / "w" / "README.md").read_text()


def test_the_measured_flip_becomes_the_member_s_choice():
    from kit.data.mirror import FlipMeasure
    from kit.starter import flip_choice

    def plan(gpu: bool) -> MemberPlan:
        return MemberPlan("resnet", "resnet50" if gpu else "resnet18", Weights("none", ""), (64, 128), gpu)

    same, twin = FlipMeasure("same", 0.9, 0.8, 1.0, 9.0, 100), FlipMeasure("twin", 0.1, 0.0, 0.2, 9.0, 100)
    unsure = FlipMeasure("none", 0.5, 0.3, 0.7, 9.0, 100)
    assert [flip_choice(plan(g), same) for g in (False, True)] == ["same", "same"]  # a free augmentation
    assert [flip_choice(plan(g), twin) for g in (False, True)] == ["none", "twin"]  # new animals: a GPU's budget
    assert [flip_choice(plan(g), unsure) for g in (False, True)] == ["none", "none"]


def test_a_timm_that_cannot_use_the_hub_is_said_not_crashed(monkeypatch):
    """timm 1.0.13 beside huggingface_hub >= 1.0 finds no hub: auto trains from scratch and says why;
    hub is one clear line."""
    from timm.models import _hub

    from kit.pretrained import resolve_weights

    monkeypatch.setattr(_hub, "has_hf_hub", lambda necessary=False: False)
    w = resolve_weights("resnet10t.c3_in1k", "auto", echo=lambda line: None)
    assert w.source == "none" and "cannot use huggingface_hub" in w.why and "pip install -U timm" in w.why
    with pytest.raises(KitError, match="--pretrained hub: resnet10t.c3_in1k's weights are on the Hugging Face hub"):
        resolve_weights("resnet10t.c3_in1k", "hub", echo=lambda line: None)
    assert resolve_weights("legacy_seresnet18.in1k", "auto", echo=lambda line: None).why.startswith("from scratch: no hub")


def test_large_enough_crops_get_a_local_matcher_blend(new_competition, tmp_path):
    data = new_competition(size=(128, 256), boxes=False)  # 128 x 256 photos: enough for a matcher
    prepare(data, n_folds=2, echo=lambda line: None)
    lines = []
    written = init_workdir(data, tmp_path / "w", minutes=0.05, pretrained="none", echo=lines.append)
    local = tmp_path / "w" / "blends" / f"{data.name}-local.yaml"
    assert local in written
    raw = yaml.safe_load(local.read_text())
    assert raw["members"][-1] == {"model": "models/local", "view": "local"} and raw["name"] == f"{data.name}-local"
    readme = (tmp_path / "w" / "README.md").read_text()
    assert f"scripts/match.py blends/{data.name}.yaml" in readme and f"submissions/{data.name}-local_tuned.csv" in readme
    assert any("a local matcher (the crops are ~181 px a side" in line for line in lines)
