"""The blend recipe: loaded once into dataclasses, every bad key or value a one-line KitError."""
import pytest
import yaml

from kit.config import read_yaml
from kit.errors import KitError
from kit.post.recipe import (BlendRecipe, Calibration, load_recipe, recipe_from_dict, save_recipe)

GOOD = """
name: final
data: data/small
fold: 0
members:
  - model: models/resnet18_tiny
    view: logit
    weight: 1.0
    calibration: {method: softmax, temperature: 1.5}
  - model: models/resnet18_tiny
    view: cosine
    weight: 0.5
    calibration: {method: affine, scale: 8, shift: -3}
  - model: models/effnet_tiny
    view: logit
    weight: 1.0
  - submission: teammate.csv
    val_submission: teammate_val.csv
    weight: 0.5
steps:
  leak: {max_distance: 0}
  new_whale: {threshold: 0.5}
  balance: {margin: 0.3, min_count: 2, enabled: false}
pseudo: {threshold: 0.96}
output: submissions
"""


def load_text(tmp_path, text) -> BlendRecipe:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path)


def test_good_recipe(tmp_path):
    r = load_text(tmp_path, GOOD)
    assert r.name == "final" and r.fold == 0 and len(r.members) == 4
    assert r.members[0].calibration == Calibration("softmax", (("temperature", 1.5),))
    assert r.members[2].calibration.method == "auto" and r.members[2].weight == 1.0
    assert r.members[3].submission == "teammate.csv" and not r.members[3].scored
    assert r.steps.active("leak").max_distance == 0
    assert r.steps.active("balance") is None and r.steps.balance.margin == 0.3
    assert str(r.submission_path) == "submissions/final.csv"
    assert str(r.pseudo_path) == "submissions/final.pseudo.csv"


def test_defaults_and_omitted_steps(tmp_path):
    r = load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit}]\n")
    assert r.fold == 0 and r.output == "submissions" and r.pseudo.threshold == 0.96
    assert all(r.steps.active(s) is None for s in ("leak", "new_whale", "balance"))


def test_dump_and_load_round_trip(tmp_path):
    r = load_text(tmp_path, GOOD)
    out = save_recipe(r, tmp_path / "blends" / "final.tuned.yaml")
    assert load_recipe(out) == r
    assert yaml.safe_load(out.read_text())["steps"]["balance"]["enabled"] is False
    assert recipe_from_dict(r.to_dict()) == r


def test_with_params(tmp_path):
    r = load_text(tmp_path, GOOD)
    t = r.with_params({"members.0.weight": 0.7, "members.0.calibration.temperature": 2.0,
                       "members.2.calibration.temperature": 3.0, "steps.leak.max_distance": 2,
                       "steps.balance.margin": 0.1, "steps.balance.min_count": 3})
    assert t.members[0].weight == 0.7 and t.members[0].calibration.params.temperature == 2.0
    assert t.members[2].calibration == Calibration("auto", (("temperature", 3.0),))
    assert t.steps.leak.max_distance == 2 and t.steps.balance.margin == 0.1 and t.steps.balance.min_count == 3
    assert r.members[0].weight == 1.0  # the original is untouched
    # threshold and proportion replace each other
    p = r.with_params({"steps.new_whale.proportion": 0.276})
    assert p.steps.new_whale.proportion == 0.276 and p.steps.new_whale.threshold is None
    assert p.with_params({"steps.new_whale.threshold": 0.4}).steps.new_whale.proportion is None
    assert r.with_params(name="final_tuned").name == "final_tuned"
    # an omitted step can be switched on
    bare = load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit}]\n")
    assert bare.with_params({"steps.balance.margin": 0.2}).steps.active("balance").margin == 0.2
    # bad paths and values are KitErrors too
    with pytest.raises(KitError, match="members.9.weight"):
        r.with_params({"members.9.weight": 1.0})
    with pytest.raises(KitError, match="temperature.*> 0"):
        r.with_params({"members.0.calibration.temperature": 0.0})
    with pytest.raises(KitError, match="did you mean 'new_whale'"):
        r.with_params({"steps.new_whal.threshold": 0.3})


def test_tunable_params_round_trip(tmp_path):
    r = load_text(tmp_path, GOOD)
    params = r.tunable_params()
    assert params == {
        "members.0.weight": 1.0, "members.0.calibration.temperature": 1.5,
        "members.1.weight": 0.5, "members.1.calibration.scale": 8.0, "members.1.calibration.shift": -3.0,
        "members.2.weight": 1.0, "members.2.calibration.temperature": 1.0,
        "members.3.weight": 0.5,
        "steps.leak.max_distance": 0, "steps.new_whale.threshold": 0.5,
        "steps.balance.margin": 0.3, "steps.balance.min_count": 2,
    }
    changed = r.with_params({k: v * 2 for k, v in params.items()})
    assert changed.tunable_params() == {k: v * 2 for k, v in params.items()}


@pytest.mark.parametrize("edit, message", [
    # unknown or misspelled keys, at every level: the key, the file, the valid keys
    (lambda d: d.update(memebers=d["members"]), r"unknown key 'memebers' \(did you mean 'members'\?\); valid keys: name, data"),
    (lambda d: d["members"][0].update(wieght=1), r"unknown key 'members\[0\]\.wieght' \(did you mean 'weight'\?\)"),
    (lambda d: d["members"][0]["calibration"].update(temprature=2), r"'members\[0\]\.calibration\.temprature'"),
    (lambda d: d["steps"].update(new_whal={"threshold": 0.5}), r"'steps\.new_whal' \(did you mean 'new_whale'\?\); valid keys in steps: leak, new_whale, new_whale_groups, balance"),
    (lambda d: d["steps"]["leak"].update(max_dist=1), r"'steps\.leak\.max_dist' \(did you mean 'max_distance'\?\)"),
    (lambda d: d["pseudo"].update(treshold=0.9), r"'pseudo\.treshold' \(did you mean 'threshold'\?\)"),
    (lambda d: d["members"][3].update(view="logit"), r"members\[3\]\.view is not a key of a top-5 CSV member; its keys: submission, val_submission"),
    # missing or wrong values
    (lambda d: d.pop("data"), r"missing key 'data'"),
    (lambda d: d.update(members=[]), r"members = \[\] is not allowed; expected a non-empty list"),
    (lambda d: d["members"][0].pop("view"), r"members\[0\]\.view is missing: which of the member's prediction sets"),
    (lambda d: d["members"][0].update(view="embedding"), r"members\[0\]\.view = 'embedding' is not allowed; expected logit or cosine or knn or local"),
    (lambda d: d["members"][0].update(submission="x.csv"), r"members\[0\]: give exactly one of"),
    (lambda d: d["members"][0].update(weight=-1), r"members\[0\]\.weight = -1 is out of range; expected a number >= 0"),
    (lambda d: d["members"][0].update(weight="heavy"), r"weight = 'heavy' must be a number"),
    (lambda d: d["members"][0]["calibration"].update(method="isotonic"), r"method is 'isotonic'; expected one of auto"),
    (lambda d: d["members"][0]["calibration"].update(scale=2), r"calibration\.scale does not apply to method softmax"),
    (lambda d: d["members"][0]["calibration"].update(temperature=0), r"calibration.temperature = 0 is out of range; expected a number > 0"),
    (lambda d: d["members"].append(dict(d["members"][0])), r"members\[4\] repeats members\[0\]"),
    (lambda d: [m.update(weight=0) for m in d["members"]], r"weights sum to 0"),
    (lambda d: d["steps"]["new_whale"].update(proportion=0.3), r"give one of threshold, proportion, fit, model, not more"),
    (lambda d: d["steps"]["new_whale"].update(threshold=None, proportion=1.5), r"proportion = 1.5 is out of range; expected a number in \[0, 1\]"),
    (lambda d: d["steps"]["leak"].update(max_distance=1.5), r"max_distance = 1.5 must be an integer"),
    (lambda d: d["steps"]["balance"].update(enabled="yes"), r"enabled = 'yes' must be true or false"),
    (lambda d: d.update(fold="zero"), r"fold = 'zero' is not allowed; expected an integer or all"),
    (lambda d: d.update(pseudo={"threshold": 0.9, "precision": 0.9}), r"pseudo: give threshold or precision, not both"),
    (lambda d: d.update(pseudo={"precision": 0}), r"pseudo.precision = 0 is out of range; expected a number in \(0, 1\]"),
    (lambda d: d.update(pseudo={"precison": 0.9}), r"precison"),
    (lambda d: d.update(name="my final"), r"name = 'my final' is not allowed; expected a usable file name"),
    (lambda d: d.update(steps=[1, 2]), r"steps must be a mapping"),
    (lambda d: d.update(output="../../elsewhere"), r"output = '../../elsewhere' is not allowed; expected a folder under the one blend.py runs in"),
    (lambda d: d.update(output="subs/../.."), r"output = 'subs/../..' is not allowed; expected a folder"),
])
def test_bad_recipes(tmp_path, edit, message):
    d = yaml.safe_load(GOOD)
    edit(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(KitError, match=message) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unreadable_recipes(tmp_path):
    with pytest.raises(KitError, match="not found"):
        load_recipe(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(KitError, match=r"broken.yaml: not valid YAML at line"):
        load_recipe(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(KitError, match="the recipe must be a mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_a_key_given_twice_is_refused_and_merge_keys_still_work(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `steps:` dropped the first without a word."""
    twice = GOOD + "steps:\n  balance: {margin: 0.3, min_count: 2}\n"
    (tmp_path / "twice.yaml").write_text(twice)
    with pytest.raises(KitError, match=r"twice.yaml: not valid YAML at line \d+ \(key 'steps' is given twice\)"):
        load_recipe(tmp_path / "twice.yaml")
    (tmp_path / "merged.yaml").write_text("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  c: 3\n")
    assert read_yaml(tmp_path / "merged.yaml", "recipe") == {"a": {"b": 1, "c": 2}, "d": {"b": 1, "c": 3}}


def test_weights_all_or_none_and_rank_weights(tmp_path):
    auto = load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit}, {submission: s.csv}]\n")
    assert auto.auto_weights and all(m.weight is None for m in auto.members)
    assert "weight" not in auto.to_dict()["members"][0] and recipe_from_dict(auto.to_dict()) == auto
    with pytest.raises(KitError, match=r"members\[1\] has no weight but others do: give every member a weight, or none"):
        load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit, weight: 1}, {submission: s.csv}]\n")
    r = load_text(tmp_path, "name: x\ndata: d\nmembers: [{submission: s.csv, rank_weights: [1, 0.6, 0.3]}]\n")
    assert r.members[0].rank_weights == (1.0, 0.6, 0.3, 0.0, 0.0)
    assert load_recipe(save_recipe(r, tmp_path / "again.yaml")) == r
    for bad in ("[1, 2, 3, 4, 5, 6]", "[-1]", "one", "[]"):
        with pytest.raises(KitError, match=r"members\[0\].rank_weights( = .* is not allowed; expected| must be) a list"):
            load_text(tmp_path, f"name: x\ndata: d\nmembers: [{{submission: s.csv, rank_weights: {bad}}}]\n")
    with pytest.raises(KitError, match=r"members\[0\].rank_weights is not a key of a trained member; its keys: model, view"):
        load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit, rank_weights: [1]}]\n")


def test_fold_all_and_the_tune_section(tmp_path):
    r = load_text(tmp_path, "name: x\ndata: d\nfold: all\nmembers: [{model: m, view: logit}]\n"
                            "tune: {free: ['steps.*'], parts: 4}\n")
    assert r.fold == "all" and r.val_split == "oof" and r.tune.free == ("steps.*",) and r.tune.parts == 4
    assert recipe_from_dict(r.to_dict()) == r
    with pytest.raises(KitError, match=r"tune.parts = 0 is out of range; expected an integer in \[1, 20\]"):
        load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit}]\ntune: {parts: 0}\n")
    with pytest.raises(KitError, match=r"tune.free must be a list"):
        load_text(tmp_path, "name: x\ndata: d\nmembers: [{model: m, view: logit}]\ntune: {free: steps}\n")
    note = save_recipe(r, tmp_path / "n.yaml", note=["tuned on 70 images", "not significant"])
    assert note.read_text().startswith("# tuned on 70 images\n# not significant\n") and load_recipe(note) == r


def test_new_whale_without_a_value_takes_validation_s_unknown_share(project, tmp_path):
    """A share transfers between member sets; with neither threshold nor proportion, the step takes
    the unknown label's share of the validation fold (issue: 0.5 meant 0% to 66% across blends).
    The recipe is parsed without reading the data; the share is filled where the data is loaded."""
    import pandas as pd

    from kit.post.inputs import prepare
    from kit.post.evaluation import evaluate
    from kit.post.fits import with_data_defaults

    d = yaml.safe_load(project["recipe"].read_text())
    d["steps"]["new_whale"] = {}
    path = tmp_path / "share.yaml"
    path.write_text(yaml.safe_dump(d))
    folds = pd.read_csv(f"{d['data']}/folds.csv")
    fold0 = folds[folds["fold"] == 0]
    parsed = load_recipe(path)
    assert parsed.steps.new_whale.threshold is None and parsed.steps.new_whale.proportion is None
    nw = with_data_defaults(parsed, prepare(parsed, "val")).steps.new_whale
    assert nw.threshold is None and nw.proportion == round((fold0["Id"] == "new_whale").mean(), 4)
    assert evaluate(path, diagnostics=False).recipe.steps.new_whale.proportion == nw.proportion
    d["fold"] = -1
    path.write_text(yaml.safe_dump(d))
    load_recipe(path)  # parsing reads no data
    with pytest.raises(KitError, match=r"neither threshold nor proportion, so it would take validation's unknown share, "
                                       r"but there is no validation split; give one \(fold is -1"):
        evaluate(path)


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    """Issue 13: a Latin-1 recipe gave a UnicodeDecodeError traceback (blend, tune and train alike)."""
    from kit.train.recipe import load_recipe as load_train_recipe

    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\ndata: data/small\n".encode("latin-1"))
    for load in (load_recipe, load_train_recipe):
        with pytest.raises(KitError, match=r"latin1.yaml: not UTF-8 text \(byte 9: invalid continuation byte\); save the"):
            load(path)


def test_typed_edits_keep_what_the_dict_round_trip_kept(tmp_path):
    """with_params walks the dataclasses (issue 26); each behaviour the old dict round trip had, kept."""
    r = load_text(tmp_path, GOOD)
    # a calibration's method set: its values kept and checked against the new method; one value set: key order kept
    assert r.with_params({"members.0.calibration.method": "softmax"}).members[0].calibration == r.members[0].calibration
    with pytest.raises(KitError, match=r"calibration\.temperature does not apply to method affine"):
        r.with_params({"members.0.calibration.method": "affine"})
    affine = r.with_params({"members.1.calibration.scale": 3.0}).members[1].calibration
    assert [k for k, _ in affine.values] == ["scale", "shift"] == [k for k, _ in r.members[1].calibration.values]
    # a key under one of a step's exclusive keys replaces the others; two of them cannot stand together
    model = r.with_params({"steps.new_whale.model.bias": 1.0}).steps.new_whale
    assert model.model == {"bias": 1.0} and model.threshold is None
    # a whole section, then a key of it: validated once, at the end (not when the section alone is set)
    groups = {"steps.new_whale_groups": {"by": "species"}, "steps.new_whale_groups.shares.a": 0.2}
    assert r.with_params(groups).steps.new_whale_groups.shares == {"a": 0.2}
    with pytest.raises(KitError, match=r"r\.yaml: steps\.new_whale_groups: needs thresholds or shares"):
        r.with_params({"steps.new_whale_groups.by": "species"})
    with pytest.raises(KitError, match=r"no item '-1'"):
        r.with_params({"members.-1.weight": 1.0})
    # `key:` left empty in a hand-written recipe is the key left out
    empty = load_text(tmp_path, "name: x\ndata: d\nfold:\nmembers: [{model: m, view: logit, weight:}]\n"
                                "tune: {free: , pin: , ranges: }\npseudo: {threshold: }\n")
    assert empty.fold == 0 and empty.tune.free == () and empty.pseudo.threshold == 0.96


def test_an_empty_new_whale_is_searched_and_filled_wherever_a_recipe_is_fitted(project, tmp_path):
    """new_whale: {} takes validation's share where the data is loaded: the tuner still searches it
    (its space is built before the data), and every fit on validation fills it first."""
    from kit.post.fits import resolve
    from kit.post.inputs import prepare
    from kit.tune.space import search_space

    d = yaml.safe_load(project["recipe"].read_text())
    d["steps"]["new_whale"] = {}
    path = tmp_path / "share.yaml"
    path.write_text(yaml.safe_dump(d))
    recipe = load_recipe(path)
    assert "steps.new_whale.proportion" in [p.name for p in search_space(recipe)]
    filled = resolve(recipe, prepare(recipe, "val"))
    assert filled.steps.new_whale.proportion is not None and filled.steps.new_whale.threshold is None
