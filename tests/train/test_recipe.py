"""Recipes are validated once, at load: every mistake names the file, the key and what is allowed."""
import pytest
import yaml

from kit.errors import KitError
from kit.train.recipe import Recipe, dump_recipe, load_recipe, recipe_from_dict


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_name_from_the_file(tmp_path):
    recipe = load_recipe(write(tmp_path, "fold: 1\nhead: {type: arcface}\n", "my_member.yaml"))
    assert recipe.name == "my_member" and recipe.fold == 1 and recipe.head.type == "arcface"
    assert recipe.head.scale == 64.0 and recipe.head.margin == 0.5  # ArcFace defaults
    assert recipe.input.size == (256, 512) and len(recipe.stages) == 1


def test_unknown_key_says_did_you_mean_and_lists_the_valid_ones(tmp_path):
    path = write(tmp_path, "head:\n  type: arcface\n  scael: 30\n")
    with pytest.raises(KitError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert str(path) in msg and "'head.scael'" in msg and "did you mean 'scale'" in msg
    assert "embedding_dim" in msg and "margin" in msg  # the valid keys of head


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(KitError, match=r"unknown key 'stage' \(did you mean 'stages'\?\)"):
        load_recipe(write(tmp_path, "stage: []\n"))


@pytest.mark.parametrize("text, match", [
    ("head: {type: arcfase}", r"head.type = 'arcfase' is not allowed; expected arcface or softmax or sigmoid; did you mean 'arcface'"),
    ("stages: [{epochs: ten}]", r"stages\[0\].epochs = 'ten' must be an integer"),
    ("stages: [{epochs: 0}]", r"stages\[0\].epochs = 0 is out of range"),
    ("stages: [{freeze: bakbone}]", r"stages\[0\].freeze = 'bakbone' is not allowed.*did you mean 'backbone'"),
    ("stages: []", r"stages is empty"),
    ("input: {size: [64]}", r"input.size = \[64\] must be a list of 2 integers"),
    ("input: {mean: [0.5, 0.5]}", r"input.mean = \[0.5, 0.5\] is not allowed"),
    ("sampling: {batch_size: 1}", r"sampling.batch_size = 1 is out of range; expected an integer >= 2"),
    ("model: resnet18", r"model must be a mapping"),
    ("head: {dropout: true}", r"head.dropout = True must be a number"),
    ("- a list", r"the recipe must be a mapping"),
    ("head: {type: [unclosed", r"not valid YAML"),
])
def test_bad_values(tmp_path, text, match):
    with pytest.raises(KitError, match=match):
        load_recipe(write(tmp_path, text + "\n"))


def test_missing_file(tmp_path):
    with pytest.raises(KitError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_exponents_and_unions(tmp_path):
    r = load_recipe(write(tmp_path, "stages: [{lr: 1e-3, freeze: 2}, {freeze: backbone}]\n"
                                    "input: {boxes: false, mean: model, std: [0.2, 0.2, 0.2]}\n"))
    assert r.stages[0].lr == 0.001 and r.stages[0].freeze == 2 and r.stages[1].freeze == "backbone"
    assert r.input.boxes is False and r.input.mean == "model" and r.input.std == (0.2, 0.2, 0.2)


def test_dump_is_complete_and_round_trips():
    recipe = recipe_from_dict({"name": "x", "head": {"type": "sigmoid"}, "augment": {"flip": "twin"}})
    data = yaml.safe_load(dump_recipe(recipe))
    assert set(data) == {f for f in Recipe.__dataclass_fields__}  # every key explicit
    assert recipe_from_dict(data) == recipe
    assert recipe.flip_twins and recipe.train_unknown and not recipe.use_pairs


def test_shipped_recipes_load():
    from pathlib import Path

    recipes = sorted(Path(__file__).resolve().parents[2].joinpath("models").glob("*.yaml"))
    assert recipes, "models/*.yaml"
    for path in recipes:
        load_recipe(path)


def test_fold_is_an_integer_or_all(tmp_path):
    assert load_recipe(write(tmp_path, "fold: all\n")).fold == "all"  # one member per fold
    assert load_recipe(write(tmp_path, "fold: -1\n")).fold == -1
    assert yaml.safe_load(dump_recipe(recipe_from_dict({"fold": "all"})))["fold"] == "all"  # the parent's recipe.yaml
    for text, match in [
        ("fold: al", r"fold = 'al' is not allowed; expected an integer or all; did you mean 'all'\?"),
        ("fold: every", r"fold = 'every' is not allowed; expected an integer or all$"),
        ("fold: -2", r"fold = -2 is not allowed; expected an integer >= -1 \(-1: no held-out fold\) or all"),
        ("fold: [0, 1]", r"fold = \[0, 1\] is not allowed"),
        ("fold: true", r"fold = True is not allowed"),
    ]:
        with pytest.raises(KitError, match=match) as e:
            load_recipe(write(tmp_path, text + "\n"))
        assert "\n" not in str(e.value)
