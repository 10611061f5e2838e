"""new_whale per group (species): hand-made rankings, the recipe's keys and their tuning names."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from kit.errors import KitError
from kit.post.recipe import recipe_from_dict
from kit.post.steps.new_whale_groups import NewWhaleGroups

Params = NewWhaleGroups.Params

# label codes: 0 a, 1 b (species x), 2 c (species y), 3 the unknown label
LABELS = ["a", "b", "c", "new_whale"]
TRAIN = pd.DataFrame({"image": ["1", "2", "3", "4"], "label": ["a", "b", "c", "new_whale"],
                      "species": ["x", "x", "y", "z"]})


def _inputs(train=TRAIN):
    return SimpleNamespace(competition=SimpleNamespace(train=train, root=Path("comp")), labels=LABELS, unknown_code=3,
                           plugin_cache={})


def _state(top, scores, vote=None, at=None):
    n = len(top)
    return SimpleNamespace(top=np.array(top, np.int64), scores=np.array(scores, np.float32),
                           vote=np.zeros(n, np.float32) if vote is None else np.array(vote, np.float32),
                           new_whale_at=np.full(n, -1, np.int64) if at is None else np.array(at, np.int64),
                           fixed=np.zeros(n, np.bool_))


def test_each_group_gets_its_own_threshold():
    # images 0, 1: top-1 of species x; image 2: of species y; image 3: top-1 empty (no group)
    state = _state([[0, 1, 2], [1, 0, 2], [2, 0, 1], [-1, -1, -1]],
                   [[0.7, 0.5, 0.1], [0.4, 0.3, 0.2], [0.7, 0.5, 0.1], [-np.inf] * 3], at=[9, 9, 9, 9])
    NewWhaleGroups.apply(state, Params(thresholds={"x": 0.45}), _inputs())
    # x: before the first score below 0.45; y is not named: the new_whale step's placement (9) stays
    assert state.new_whale_at.tolist() == [2, 0, 9, 9]
    assert state.fixed.tolist() == [True, True, False, False]  # the new_whale threshold no longer moves x's


def test_a_share_per_group_counts_the_vote():
    state = _state([[0, 1], [0, 1], [1, 0], [0, 1]], [[0.9, 0.1], [0.5, 0.1], [0.3, 0.2], [0.7, 0.1]],
                   vote=[0.0, 0.0, 0.0, 0.8])  # image 3: the vote puts the unknown label first (0.8 >= 0.7)
    NewWhaleGroups.apply(state, Params(shares={"x": 0.5}), _inputs())
    # 4 images of species x, half first: image 3 by the vote, and the least confident of the rest (image 2)
    assert state.new_whale_at.tolist()[2] == 0 and state.new_whale_at.tolist()[3] == 0
    assert (state.new_whale_at == 0).sum() == 2


def test_the_groups_are_read_from_the_competition():
    with pytest.raises(KitError, match=r"comp/train.csv has no 'species' column"):
        NewWhaleGroups.apply(_state([[0]], [[0.5]]), Params(thresholds={"x": 0.5}), _inputs(TRAIN.drop(columns="species")))
    with pytest.raises(KitError, match=r"group 'w' is no species of comp/train.csv \(its groups: x, y, z\)"):
        NewWhaleGroups.apply(_state([[0]], [[0.5]]), Params(thresholds={"w": 0.5}), _inputs())


def _recipe(tmp_path, step):
    raw = {"name": "g", "data": str(tmp_path), "members": [{"submission": "a.csv"}],
           "steps": {"new_whale": {"threshold": 0.5}, "new_whale_groups": step}}
    return recipe_from_dict(raw, "blends/g.yaml")


def test_its_keys_and_their_tuning_names(tmp_path):
    r = _recipe(tmp_path, {"thresholds": {"beluga": 0.3, "humpback_whale": 0.6}})
    assert r.steps.new_whale_groups == Params(thresholds={"beluga": 0.3, "humpback_whale": 0.6})
    params = r.tunable_params()
    assert params["steps.new_whale_groups.thresholds.beluga"] == 0.3
    assert r.with_params({"steps.new_whale_groups.thresholds.beluga": 0.4}).steps.new_whale_groups.thresholds["beluga"] == 0.4
    assert recipe_from_dict(r.to_dict(), r.source) == r
    with pytest.raises(KitError, match="needs thresholds or shares"):
        _recipe(tmp_path, {})
    with pytest.raises(KitError, match="give one of thresholds, shares, not more"):
        _recipe(tmp_path, {"thresholds": {"a": 0.5}, "shares": {"a": 0.5}})
    with pytest.raises(KitError, match=r"steps.new_whale_groups.shares.a = 1.5 is out of range; expected in \[0, 1\]"):
        _recipe(tmp_path, {"shares": {"a": 1.5}})
    with pytest.raises(KitError, match=r"steps.new_whale_groups.thresholds.a = 'high' must be a number"):
        _recipe(tmp_path, {"thresholds": {"a": "high"}})


def test_in_the_pipeline_one_threshold_for_every_group_is_the_new_whale_step(project):
    from kit.post.pipeline import run
    from kit.post.inputs import prepare
    from kit.post.recipe import load_recipe
    from kit.tune.space import search_space

    train_csv = project["comp"].root / "train.csv"
    train = pd.read_csv(train_csv)
    odd = {label: i % 2 for i, label in enumerate(sorted(set(train["Id"])))}
    train["species"] = ["beluga" if odd[label] else "humpback_whale" for label in train["Id"]]
    train.to_csv(train_csv, index=False)
    base = load_recipe(project["recipe"]).with_params({"steps.new_whale.threshold": 0.5})
    inputs = prepare(base, "val")
    plain = run(base, inputs)
    same = run(base.with_params({"steps.new_whale_groups.thresholds": {"beluga": 0.5, "humpback_whale": 0.5}}), inputs)
    assert np.array_equal(same.top5, plain.top5) and "+ new_whale_groups" in same.score_by_step
    apart = run(base.with_params({"steps.new_whale_groups.thresholds": {"beluga": 0.0}}), inputs)
    species = dict(zip(train["Id"], train["species"]))
    beluga = np.array([species.get(inputs.labels[c]) == "beluga" for c in plain.top_codes[:, 0]])
    changed = (apart.top5 != plain.top5).any(axis=1)
    assert changed.any() and not changed[~beluga].any()  # only images whose top-1 is a beluga move
    # the threshold search's table (tune.py's objective) agrees with the pipeline: beluga images stay where
    # their own threshold put them, whatever the new_whale threshold
    from kit.post.pipeline import position_table

    table = position_table(base.with_params({"steps.new_whale_groups.thresholds": {"beluga": 0.3}}), inputs)
    for t in (0.0, 0.2, 0.45, 0.7, 1.0):
        at_t = base.with_params({"steps.new_whale.threshold": t, "steps.new_whale_groups.thresholds": {"beluga": 0.3}})
        assert np.allclose(table.marks_at(t), run(at_t, inputs).marks, atol=1e-12), t
    grouped = base.with_params({"steps.new_whale_groups.thresholds": {"beluga": 0.5}, "tune": {"free": ["steps.*"]}})
    space = {p.name: (p.low, p.high) for p in search_space(grouped)}
    assert space["steps.new_whale_groups.thresholds.beluga"] == (0.0, 1.0)
