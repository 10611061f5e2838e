"""The README's demo table is the demo's own output format: what `scripts/demo.py --readme` writes,
with the rows the demo's blend recipe produces."""
import dataclasses
from pathlib import Path

import pytest

from kit.demo import (DEMO_BLEND, README_BEGIN, README_END, DemoResult, format_table, parse_readme_tables,
                      readme_block, update_readme)
from kit.errors import KitError
from kit.post import pipeline
from kit.post.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def fabricated(seed: int = 0) -> DemoResult:
    recipe = load_recipe(ROOT / DEMO_BLEND)
    fits = pipeline.fitted_key(recipe) is not None  # a threshold or share fitted: then untuned = threshold only
    rows = ["trivial: new_whale alone"] + [f"member {m.name} (own threshold)" for m in recipe.members] + [
        "blend, untuned recipe", *([] if fits else ["blend, threshold only"]), "blend, tuned by Optuna"]
    sizes = {"held-out val": 101, "test": 628}
    table = {"sizes": sizes, "rows": [{"what": r, "held-out val": 0.3 + i / 100, "test": 0.25 + i / 50} for i, r in enumerate(rows)],
             "claims": [{"better": rows[-1], "worse": rows[1], "part": "test", "value": 0.05, "low": 0.02, "high": 0.08, "n": 628}]}
    return DemoResult(table, {"competition": 30.0, "train": 400.0}, [], "kept the untuned values", seed)


def test_the_readme_holds_the_demo_table_in_the_demo_s_format():
    text = (ROOT / "README.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1
    tables = parse_readme_tables(text)
    block = text[text.index(README_BEGIN):text.index(README_END)]
    assert len(tables) >= 1 and len(tables) == block.count("python scripts/demo.py --seed")
    expected = [r["what"] for r in fabricated().table["rows"]]
    for table, printed in zip(tables, block.split("```")[1::2]):
        assert format_table(table) == printed.strip("\n")  # formatted again: the very same text
        assert [r["what"] for r in table["rows"]] == expected  # the rows blends/demo.yaml makes
        assert list(table["sizes"]) == ["held-out val", "test"]


def test_update_readme_round_trip(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{README_BEGIN}\nold\n{README_END}\nafter\n")
    results = [fabricated(seed=0), fabricated(seed=1)]
    update_readme(readme, results)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith("after\n")
    assert readme_block(results) in text and "--seed 1" in text and "430 s in all" in text
    back = parse_readme_tables(text)
    assert len(back) == 2 and back[1]["sizes"] == results[1].table["sizes"]
    assert [(r["what"], round(r["test"], 4)) for r in back[1]["rows"]] == [
        (r["what"], round(r["test"], 4)) for r in results[1].table["rows"]]
    assert "[+0.0200, +0.0800], significant" in text
    (tmp_path / "plain.md").write_text("no block\n")
    with pytest.raises(KitError, match="plain.md: no <!-- demo-table:begin -->"):
        update_readme(tmp_path / "plain.md", results)


def test_the_demo_never_reports_one_competition_as_another(tmp_path, monkeypatch):
    """data/small made with seed 0, `demo.py --seed 1` without --force: one line, nothing trained."""
    import json

    from kit.demo import run_demo

    monkeypatch.chdir(tmp_path)
    (tmp_path / "blends").mkdir()
    (tmp_path / "blends" / "demo.yaml").write_text((ROOT / DEMO_BLEND).read_text())
    data = tmp_path / "data" / "small"
    data.mkdir(parents=True)
    (data / "train.csv").write_text("Image,Id\n")
    (data / "synthetic.json").write_text(json.dumps({"size": "small", "seed": 0}))
    with pytest.raises(KitError, match=r"data/small: holds synthetic small seed 0, not small seed 1; add --force"):
        run_demo("data/small", seed=1, echo=lambda line: None)
    assert not (tmp_path / "models").exists()


def test_the_demo_on_another_directory_gets_its_own_blend_recipe(tmp_path, monkeypatch):
    """demo.py --data DIR: blends/demo-<DIR>.yaml points at DIR (and names the outputs after it) and
    at members of its own, models/<name>-<DIR>, so the first demo's are never overwritten; members
    trained on another competition are not reused."""
    import yaml

    from kit.demo import _trained, demo_blend_for, member_dir
    from kit.post.recipe import load_recipe
    from kit.train.recipe import load_recipe as load_train_recipe

    monkeypatch.chdir(tmp_path)
    (tmp_path / "blends").mkdir()
    (tmp_path / "blends" / "demo.yaml").write_text((ROOT / DEMO_BLEND).read_text())
    assert demo_blend_for(Path("data/small")) == DEMO_BLEND
    (tmp_path / "elsewhere" / "faces").mkdir(parents=True)
    (tmp_path / "elsewhere" / "faces" / "train.csv").write_text("Image,Id\n")  # the 2019 layout: MAP@5
    path = demo_blend_for(Path("elsewhere/faces"))
    assert path == Path("blends/demo-faces.yaml")
    mine, theirs = load_recipe(path), load_recipe(DEMO_BLEND)
    assert (mine.data, mine.name) == ("elsewhere/faces", "demo-faces")
    assert [m.model for m in mine.members] == [f"{m.model}-faces" for m in theirs.members]
    assert [m.view for m in mine.members] == [m.view for m in theirs.members]
    assert mine.metric == theirs.metric == "map5" and mine.steps.new_whale == theirs.steps.new_whale
    # AnimalCLEF's layout: scored by its own metric, the unknown label by a threshold fitted exactly to it
    (tmp_path / "clef").mkdir()
    (tmp_path / "clef" / "metadata.csv").write_text("image_id,identity,path,split,dataset\n")
    clef = load_recipe(demo_blend_for(Path("clef")))
    assert clef.metric == "animalclef" and clef.steps.new_whale.fit == "threshold"
    assert member_dir("resnet18_tiny", Path("elsewhere/faces")) == Path("models/resnet18_tiny-faces")
    assert member_dir("resnet18_tiny", Path("data/small")) == Path("models/resnet18_tiny")
    member = tmp_path / "models" / "resnet18_tiny"
    member.mkdir(parents=True)
    recipe = load_train_recipe(ROOT / "models" / "resnet18_tiny.yaml")
    (member / "checkpoint.pt").write_bytes(b"")
    (member / "metrics.json").write_text('{"epochs": [' + ", ".join(["{}"] * 12) + "]}")
    (member / "recipe.yaml").write_text(yaml.safe_dump({"data": "data/small"}))
    assert _trained(member, recipe)
    assert not _trained(member, dataclasses.replace(recipe, data="elsewhere/faces"))
