"""The member table from a recipe: `member_table_for` is the demo's way of making it, and
`scripts/blend.py RECIPE --members` prints it as the demo does."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kit.errors import KitError
from kit.post import pipeline
from kit.post.compare import format_claims, format_table, holdout_split
from kit.post.inputs import prepare
from kit.post.recipe import load_recipe
from kit.tune.members import load_tuned, member_table, member_table_for, tuned_beside

ROOT = Path(__file__).resolve().parents[2]


def blend_script(*args):
    return subprocess.run([sys.executable, "scripts/blend.py", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def edit(path, change):
    d = yaml.safe_load(path.read_text())
    change(d)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def demo_way(recipe, tuned=None):
    """kit/demo.py's stage 6 as it was written before member_table_for existed."""
    val, test = prepare(recipe, "val"), prepare(recipe, "test")
    tune_idx, hold_idx = holdout_split(val.truth, val.unknown_code, recipe.tune.holdout, recipe.tune.seed)
    return member_table(pipeline.with_weights(recipe, val, tune_idx), val, test, tune_idx, hold_idx, tuned)


def same_table(a, b):
    assert a.sizes == b.sizes
    assert [r.what for r in a.rows] == [r.what for r in b.rows]
    for ra, rb in zip(a.rows, b.rows):
        assert ra.marks.keys() == rb.marks.keys() and all(np.array_equal(ra.marks[p], rb.marks[p]) for p in ra.marks)
    assert [(c.better, c.worse, c.part, c.gain) for c in a.claims] == [(c.better, c.worse, c.part, c.gain) for c in b.claims]


@pytest.mark.parametrize("weights", ["given", "auto"])
def test_the_table_is_the_demo_s(project, weights):
    """Row for row, the same per-image AP arrays and claims as the demo's own calls, with automatic
    weights (resolved on the tuning part) and with a tuned recipe."""
    path = project["recipe"]
    if weights == "auto":
        edit(path, lambda d: [m.pop("weight") for m in d["members"]])
    recipe = load_recipe(path)
    mine = member_table_for(path)
    same_table(mine, demo_way(recipe))
    assert "blend, tuned by Optuna" not in [r.what for r in mine.rows]

    tuned = pipeline.with_weights(recipe, prepare(recipe, "val")).with_params(
        {"members.0.weight": 0.2, "steps.new_whale.threshold": 0.4}, name="final_tuned")
    mine = member_table_for(recipe, tuned)
    same_table(mine, demo_way(recipe, tuned))
    assert [r.what for r in mine.rows][-1] == "blend, tuned by Optuna"


def test_blend_members_prints_the_table(project):
    root = project["root"]
    out = blend_script(project["recipe"], "--members", "--no-report")
    assert out.returncode == 0, out.stderr
    assert "+ balance" in out.stdout and (root / "blends" / "submissions" / "final.csv").is_file()  # the blend as ever
    table = member_table_for(project["recipe"]).to_dict()
    rows = [r["what"] for r in table["rows"]]
    assert rows == ["trivial: new_whale alone", "member a/logit (own threshold)", "member b/logit (own threshold)",
                    "member c/cosine (own threshold)", "blend, untuned recipe", "blend, threshold only"]
    assert list(table["sizes"]) == ["held-out val", "test"] and table["claims"]
    assert {c["better"] for c in table["claims"]} == {"blend, untuned recipe"}  # no tuned recipe: the one submitted
    claims = "\n".join(format_claims(table))
    assert f"\n\n{format_table(table)}\n\n{claims}\n" in out.stdout  # printed as the demo prints it
    assert "tuned row: none (" in out.stdout and "final.tuned.yaml not found" in out.stdout


def test_holdout_zero_is_one_line_and_writes_nothing(project):
    root = project["root"]
    path = edit(project["recipe"], lambda d: d.update(tune={"holdout": 0}))
    with pytest.raises(KitError, match=r"needs a held-out part .*set tune.holdout"):
        member_table_for(path)
    out = blend_script(path, "--members")
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: ") and "tune.holdout" in out.stderr
    assert not (root / "blends" / "submissions").exists()


def test_the_tuned_row_comes_from_this_recipe_only(project, tmp_path):
    from kit.tune.study import tune

    path = project["recipe"]
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    s = tune(path, 3, storage=storage, progress=False)
    tuned, note = tuned_beside(path)
    assert tuned == s.tuned and "tuned from" in note
    same_table(member_table_for(path, tuned), demo_way(load_recipe(path), s.tuned))  # the demo passes summary.tuned

    out = blend_script(path, "--members", "--no-report")
    assert out.returncode == 0, out.stderr
    assert "blend, tuned by Optuna  " in out.stdout and "blend, tuned by Optuna - blend, untuned recipe, test:" in out.stdout

    # tuned with another split seed: its trials saw part of this held-out part, so no tuned row
    tune(path, 3, storage=storage, seed=5, progress=False)
    tuned, note = tuned_beside(path)
    assert tuned is None and "another --seed" in note and "--tuned" in note
    tuned, note = load_tuned(s.tuned_path, path)  # named by the user: included, with the warning
    assert tuned is not None and "--tuned; " in note and "another --seed" in note

    # the recipe edited since tuning: no tuned row
    tune(path, 3, storage=storage, progress=False)
    edit(path, lambda d: d["steps"]["balance"].update(margin=0.2))
    tuned, note = tuned_beside(path)
    assert tuned is None and "edited since" in note

    # a tuned recipe of other members is refused, before the blend runs
    other = tmp_path / "other.tuned.yaml"
    other.write_text(s.tuned_path.read_text())
    edit(other, lambda d: d["members"].pop())
    with pytest.raises(KitError, match="not a tuning of .*: its members differ"):
        load_tuned(other, path)
    out = blend_script(path, "--members", "--tuned", other)
    assert out.returncode == 2 and "its members differ" in out.stderr and out.stdout == ""
