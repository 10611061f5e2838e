"""bench.py train: a row per recipe, real loop against model alone; a failing recipe is a row, not the end."""
import yaml

from kit.bench.train import bench_train, format_row
from kit.train.recipe import dump_recipe


def test_a_failing_recipe_is_a_row_and_the_table_goes_on(learnable, tiny_recipe, tmp_path):
    good = tiny_recipe(learnable, sampling={"min_per_id": 8})
    (tmp_path / "good.yaml").write_text(dump_recipe(good))
    bad = yaml.safe_load(dump_recipe(good))
    bad["model"]["backbone"] = "resnet81"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    lines = []
    rows = bench_train(learnable, [tmp_path / "bad.yaml", tmp_path / "good.yaml"], seconds=0.5, steps=5,
                       print_fn=lines.append)
    assert [r["recipe"] for r in rows] == ["bad", "good"]
    assert "resnet81" in rows[0]["error"] and "failed: KitError" in lines[-2]
    assert rows[1]["loop"] > 0 and rows[1]["model"] > 0 and rows[1]["steps"] == 5
    assert rows[1]["ratio"] == rows[1]["loop"] / rows[1]["model"]
    assert "%" in format_row(rows[1]) and rows[1]["gpu_util"] is None  # no GPU here
