"""load_image is the member's one preprocessing; epoch plans are deterministic and shardable."""

import numpy as np
import pytest
import torch
from PIL import Image

from kit.data.competition import load_competition
from kit.data.crops import CropSpec, open_crops
from kit.train.data import BadImage, Feeder, read_extra, build_tables, load_image, make_plan, rank_batches
from kit.train.model import member_info


def info_for(recipe, classes=("a",), use_boxes=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
    return member_info(recipe, list(classes), mean, std, use_boxes)


def test_load_image_crops_resizes_and_normalises(tmp_path, tiny_recipe):
    im = np.zeros((100, 200, 3), np.uint8)
    im[20:60, 50:150] = (255, 0, 0)  # the "fluke": a red box
    Image.fromarray(im).save(tmp_path / "a.png")
    info = info_for(tiny_recipe("x", input={"box_margin": 0.0}))
    x = load_image(tmp_path / "a.png", (50, 20, 150, 60), info)
    assert x.shape == (3, 32, 64) and x.dtype == np.float32
    inner = x[:, 1:-1, 1:-1]  # the outermost pixels' filter reaches the photo around the box, as resizing it would
    assert np.allclose(inner[0], (1 - 0.5) / 0.25) and np.allclose(inner[1], (0 - 0.5) / 0.25)  # all red: cropped
    whole = load_image(tmp_path / "a.png", None, info)  # no box: the whole photo
    assert whole[1].min() < -1.9 and whole[0].min() < -1.9
    margin = load_image(tmp_path / "a.png", (50, 20, 150, 60), info_for(tiny_recipe("x", input={"box_margin": 0.2})))
    assert margin[0].min() < -1.9  # the margin brings in some black
    no_boxes = load_image(tmp_path / "a.png", (50, 20, 150, 60), info_for(tiny_recipe("x"), use_boxes=False))
    assert np.array_equal(no_boxes, whole)


def test_greyscale_gives_three_equal_channels(tmp_path, tiny_recipe):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(np.full((40, 80), 77, np.uint8)).save(tmp_path / "g.png")  # a single-channel file
    grey = load_image(tmp_path / "c.png", None, info_for(tiny_recipe("x", input={"colour": "grey"})))
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    rgb = load_image(tmp_path / "g.png", None, info_for(tiny_recipe("x")))
    assert rgb.shape == (3, 32, 64) and np.allclose(rgb, (77 / 255 - 0.5) / 0.25, atol=1e-6)


def test_bad_image_raises_bad_image(tmp_path, tiny_recipe):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(BadImage, match="bad.jpg: cannot read image"):
        load_image(tmp_path / "bad.jpg", None, info_for(tiny_recipe("x")))
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(BadImage):
        load_image(tmp_path / "cut.jpg", None, info_for(tiny_recipe("x")))


def tables(learnable, recipe):
    comp = load_competition(learnable)
    return build_tables(recipe, comp, learnable)


def test_tables_follow_the_fold(learnable, tiny_recipe):
    recipe = tiny_recipe(learnable)
    train, val, classes = tables(learnable, recipe)
    assert classes == sorted(set(train.labels) - {"new_whale"})
    assert not set(train.names) & set(val.names) and len(train) + len(val) == 38
    assert (val.targets >= 0).sum() == 4 and (val.targets < 0).sum() == 2  # 4 ids + 2 new_whale held out
    assert all(box == (4, 4, 92, 44) for box in train.boxes)


def test_extra_train_pseudo_labels(tmp_path, learnable, tiny_recipe):
    (tmp_path / "pseudo.csv").write_text("Image,Id\nte0000.jpg,w_0000\nte0001.jpg,new_whale\n")
    recipe = tiny_recipe(learnable, extra_train=str(tmp_path / "pseudo.csv"))
    train, _, classes = tables(learnable, recipe)
    assert train.paths[-2] == learnable / "test" / "te0000.jpg"
    assert train.targets[-2] == classes.index("w_0000") and train.targets[-1] == -1
    (tmp_path / "bad.csv").write_text("Image,Id\ntr0000.jpg,w_0000\n")
    with pytest.raises(Exception, match="not a test image"):
        tables(learnable, tiny_recipe(learnable, extra_train=str(tmp_path / "bad.csv")))
    # an identity of train.csv that this member's fold does not train on: left out, with a warning
    (tmp_path / "held.csv").write_text("Image,Id\nte0000.jpg,w_0000\nte0001.jpg,w_0001\n")
    with pytest.warns(UserWarning, match="1 pseudo-label.* the fold holds out left out"):
        kept = read_extra(tmp_path / "held.csv", load_competition(learnable), set(classes) - {"w_0001"})
    assert kept["image"].tolist() == ["te0000.jpg"]
    (tmp_path / "bad2.csv").write_text("Image,Id\nte0000.jpg,w_nobody\n")
    with pytest.raises(Exception, match="'w_nobody' is not an identity"):
        tables(learnable, tiny_recipe(learnable, extra_train=str(tmp_path / "bad2.csv")))


def feeder_for(learnable, recipe, classes, train, mean=(0.5,) * 3, std=(0.25,) * 3):
    info = member_info(recipe, classes, mean, std, True)
    return Feeder(open_crops(load_competition(learnable), CropSpec.of(info)), train, info, torch.device("cpu")), info


def test_without_augmentation_a_training_sample_is_load_image(learnable, tiny_recipe):
    recipe = tiny_recipe(learnable)
    train, _, classes = tables(learnable, recipe)
    feeder, info = feeder_for(learnable, recipe, classes, train)
    plan = make_plan(train, recipe, recipe.stages[0], (0, 0))
    batch = next(feeder.train(plan, rank_batches(len(plan), 8, 0, 1, 1), recipe, len(classes)))
    rows = plan.rows[:8]
    assert batch.ok.all() and batch.target.tolist() == train.targets[rows].tolist()
    for x, row in zip(batch.x, rows):  # the identity warp samples pixel centres: float rounding only
        assert np.allclose(x.numpy(), load_image(train.paths[row], train.boxes[row], info), atol=1e-4)
    plain = next(feeder.plain(4))  # validation: the table in order, exactly load_image
    for x, row in zip(plain.x, range(4)):
        assert np.array_equal(x.numpy(), load_image(train.paths[row], train.boxes[row], info))


def test_flip_twins_label_k_plus_K_and_mirror_the_image(learnable, tiny_recipe):
    recipe = tiny_recipe(learnable, augment={"flip": "twin"}, sampling={"unknown": True})
    train, _, classes = tables(learnable, recipe)
    K = len(classes)
    feeder, info = feeder_for(learnable, recipe, classes, train)
    plan = make_plan(train, recipe, recipe.stages[0], (0, 0))
    assert plan.flips.any() and (~plan.flips).any()
    batches = rank_batches(len(plan), 8, 0, 1, 1)
    for positions, batch in zip(batches, feeder.train(plan, batches, recipe, K)):
        for pos, x, target in zip(positions, batch.x, batch.target.tolist()):
            row = plan.rows[pos]
            truth = train.targets[row]
            if truth < 0:
                assert target == -1  # a flipped unknown whale is still unknown
            else:
                assert target == truth + (K if plan.flips[pos] else 0)
            if plan.flips[pos]:
                assert np.allclose(x.numpy(), load_image(train.paths[row], train.boxes[row], info)[:, :, ::-1], atol=1e-4)
    same = tiny_recipe(learnable, augment={"flip": "same"}, sampling={"unknown": True})
    assert all((b.target < K).all() for b in feeder.train(plan, batches, same, K))  # flip: same keeps the identity


def test_plan_is_deterministic_filters_and_oversamples(learnable, tiny_recipe):
    recipe = tiny_recipe(learnable, sampling={"min_per_id": 5, "batch_size": 2})
    train, _, _ = tables(learnable, recipe)
    a = make_plan(train, recipe, recipe.stages[0], (0, 3))
    b = make_plan(train, recipe, recipe.stages[0], (0, 3))
    c = make_plan(train, recipe, recipe.stages[0], (0, 4))
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.seeds, b.seeds)
    assert not np.array_equal(a.rows, c.rows)
    counts = np.bincount(train.targets[a.rows])
    assert counts.min() >= 5  # every identity at least min_per_id times
    assert (train.targets[a.rows] >= 0).all()  # softmax: no unknown rows
    # a stage on identities with >= 4 images keeps only those
    stage = recipe.stages[0].__class__(min_images=4)
    per_id = np.bincount(train.targets[train.targets >= 0])
    kept = set(train.targets[make_plan(train, recipe, stage, (0, 0)).rows])
    assert kept == set(np.flatnonzero(per_id >= 4))


def test_pairs_share_identity_and_flip(learnable, tiny_recipe):
    recipe = tiny_recipe(learnable, head={"triplet_weight": 1.0}, augment={"flip": "twin"}, sampling={"batch_size": 4})
    train, _, _ = tables(learnable, recipe)
    plan = make_plan(train, recipe, recipe.stages[0], (0, 0))
    assert len(plan) % 4 == 0
    t = train.targets[plan.rows].reshape(-1, 2)
    assert (t[:, 0] == t[:, 1]).all()
    assert (plan.flips.reshape(-1, 2)[:, 0] == plan.flips.reshape(-1, 2)[:, 1]).all()


def test_rank_batches_shard_each_global_batch():
    single = rank_batches(16, 8, rank=0, world=1, accumulate=2)
    r0 = rank_batches(16, 8, rank=0, world=2, accumulate=1)
    r1 = rank_batches(16, 8, rank=1, world=2, accumulate=1)
    assert single == [list(range(0, 4)), list(range(4, 8)), list(range(8, 12)), list(range(12, 16))]
    assert r0 == [single[0], single[2]] and r1 == [single[1], single[3]]


def test_for_a_species_head_every_row_carries_its_species_and_a_pseudo_label_its_identitys(new_competition, tiny_recipe, tmp_path):
    data = new_competition(layout="happywhale", species=("beluga", "humpback_whale"))
    (tmp_path / "pseudo.csv").write_text("Image,Id\nte0000.jpg,w_0001\nte0001.jpg,new_individual\n")
    train, val, _ = tables(data, tiny_recipe(data, extra_train=str(tmp_path / "pseudo.csv"), head={"species_weight": 1.0}))
    assert train.species_names == ["beluga", "humpback_whale"]
    frame = load_competition(data).train.set_index("image")["species"]
    for table in (train, val):
        own = [train.species_names.index(frame[n]) for n in table.names if n in frame.index]
        assert table.species[: len(own)].tolist() == own
    assert train.species[-2:].tolist() == [1, -1]  # w_0001 is a humpback; an unknown's species is not known
    plain, _, _ = tables(data, tiny_recipe(data))  # no species head: no species read
    assert plain.species is None and plain.species_names == []


def test_animalclef_tables_read_the_sub_folder_files_through_the_crop_cache(new_competition, tiny_recipe, tmp_path):
    """AnimalCLEF's images lie at metadata.csv's paths (images/<dataset>/<split>/...): the tables point
    there, and the feeder finds each row in the crop cache by that path."""
    data = new_competition(layout="animalclef")
    comp = load_competition(data)
    (tmp_path / "pseudo.csv").write_text(f"Image,Id\n{comp.test_images[0]},w_0000\n")
    recipe = tiny_recipe(data, extra_train=str(tmp_path / "pseudo.csv"))
    train, val, classes = build_tables(recipe, comp, data)
    assert all(p.is_file() and p.parent.name == "database" for p in train.paths[:-1] + val.paths)
    assert train.paths[-1] == data / comp.paths[comp.test_images[0]] and train.keys[-1] == comp.paths[comp.test_images[0]]
    assert train.keys[0].startswith("images/") and set(classes) <= set(comp.known_labels)
    assert (val.targets < 0).any()  # identities seen once, held out: new to the fold, as new individuals are to the test
    feeder, info = feeder_for(data, recipe, classes, val)
    plain = next(feeder.plain(4))
    for x, row in zip(plain.x, range(len(plain.ok))):
        assert np.array_equal(x.numpy(), load_image(val.paths[row], val.boxes[row], info))
