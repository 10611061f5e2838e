"""prepare.py --init: starter recipes fitted to the data train and blend with no file edited."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kit.data.prepare import prepare
from kit.errors import KitError
from kit.starter import init_workdir, survey

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
    written = init_workdir(data, work, minutes=0.05, echo=lambda line: None)
    assert {p.relative_to(work).as_posix() for p in written} == {
        "models/resnet.yaml", "models/senet.yaml", "models/inception.yaml", f"blends/{data.name}.yaml", "README.md"}

    s = survey(data)
    recipe = load_recipe(work / "models" / "resnet.yaml")
    h, w = recipe.input.size
    assert recipe.data == str(data.resolve()) and recipe.input.boxes is shape["boxes"]
    assert recipe.input.colour == ("grey" if shape["grey"] else "rgb")
    assert (w > h) == (shape["size"][1] > shape["size"][0]) and h <= shape["size"][0] + 8
    assert abs(s.val_unknown_share - 2 / 6) < 1e-9  # fold 0: 4 identities' images + 2 unknown
    blend_raw = yaml.safe_load((work / "blends" / f"{data.name}.yaml").read_text())
    assert blend_raw["steps"]["new_whale"] == {"proportion": round(s.val_unknown_share, 3)}

    monkeypatch.chdir(work)  # the working directory, as its README.md says
    for family in ("resnet", "senet", "inception"):
        r = load_recipe(Path("models") / f"{family}.yaml")
        train(dataclasses.replace(r, stages=(dataclasses.replace(r.stages[0], epochs=1),)), progress=False)
        export_member(Path("models") / family, progress=False, log=lambda line: None)
    run = pipeline.blend_files(Path("blends") / f"{data.name}.yaml", echo=lambda line: None)
    assert Path(run.summary["submission"]).is_file()


def test_init_never_overwrites_and_never_writes_into_the_kit(new_competition, tmp_path):
    data = new_competition()
    prepare(data, n_folds=2, echo=lambda line: None)
    with pytest.raises(KitError, match="inside the kit's own repository"):
        init_workdir(data, ROOT / "work", echo=lambda line: None)
    (tmp_path / "w" / "models").mkdir(parents=True)
    (tmp_path / "w" / "models" / "senet.yaml").write_text("mine\n")
    with pytest.raises(KitError, match="senet.yaml: already exists"):
        init_workdir(data, tmp_path / "w", echo=lambda line: None)
    assert (tmp_path / "w" / "models" / "senet.yaml").read_text() == "mine\n"
    assert not (tmp_path / "w" / "models" / "resnet.yaml").exists()


def test_the_script_prepares_then_inits(new_competition, tmp_path):
    data = new_competition(folds=0)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), str(data), "--init",
                          str(tmp_path / "w"), "--minutes", "0.05", "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (data / "folds.csv").is_file() and (tmp_path / "w" / "models" / "resnet.yaml").is_file()
    assert "models/inception.yaml: inception_next_atto at" in out.stdout
