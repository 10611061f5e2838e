"""WhaleNet's outputs follow the contract; stage freezing really freezes."""
from pathlib import Path

import pytest
import torch

from kit.errors import KitError
from kit.train.model import apply_freeze, build_model, trainable_flags
from kit.train.recipe import load_recipe


@pytest.mark.parametrize("head, twins, width", [("softmax", "none", 5), ("arcface", "twin", 10), ("sigmoid", "twin", 10)])
def test_forward_returns_logits_and_embedding(tiny_recipe, head, twins, width):
    recipe = tiny_recipe("x", head={"type": head, "embedding_dim": 12}, augment={"flip": twins})
    model = build_model(recipe, num_classes=5).eval()
    logits, embedding = model(torch.randn(3, 3, 32, 64))
    assert logits.shape == (3, width) and embedding.shape == (3, 12)
    assert logits.dtype == embedding.dtype == torch.float32
    if head == "arcface":  # s * cosine, no margin: within [-s, s]
        assert logits.abs().max() <= recipe.head.scale + 1e-4


def test_unknown_backbone_is_a_kit_error(tiny_recipe):
    with pytest.raises(KitError, match=r"'resnet81' is not a timm model; did you mean .*resnet18"):
        build_model(tiny_recipe("x", model={"backbone": "resnet81", "kwargs": {}}), 3)


def test_missing_pretrained_file(tiny_recipe, tmp_path):
    with pytest.raises(KitError, match="pretrained_file .* not found"):
        build_model(tiny_recipe("x", model={"pretrained_file": str(tmp_path / "w.pth")}), 3)


def test_pretrained_file_loads_through_timm(tiny_recipe, tmp_path):
    import timm

    recipe = tiny_recipe("x")
    source = timm.create_model("resnet18", num_classes=1000, **recipe.model.kwargs)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = build_model(tiny_recipe("x", model={"pretrained_file": str(tmp_path / "w.pth")}), 3)
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)


def test_freeze_options(tiny_recipe):
    model = build_model(tiny_recipe("x"), 4)
    flags = trainable_flags(model, "backbone")
    assert not any(v for k, v in flags.items() if k.startswith("backbone.")) and all(v for k, v in flags.items() if k.startswith("head."))
    last1 = trainable_flags(model, 1)  # resnet stages: act1, layer1..layer4 -> only layer4 trains
    assert all(last1[k] == (k.startswith("backbone.layer4") or k.startswith("head.")) for k in last1)
    last2 = trainable_flags(model, 2)
    assert last2["backbone.layer3.0.conv1.weight"] and not last2["backbone.layer2.0.conv1.weight"]
    assert all(trainable_flags(model, 99).values()) and all(trainable_flags(model, "none").values())


def test_frozen_parameters_and_their_statistics_do_not_change(tiny_recipe):
    torch.manual_seed(0)
    model = build_model(tiny_recipe("x"), 4)
    apply_freeze(model, 1)  # all but layer4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        logits, _ = model(torch.randn(8, 3, 32, 64))
        logits.logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    for key in before:
        frozen = key.startswith("backbone.") and not key.startswith("backbone.layer4")
        if frozen:
            assert torch.equal(before[key], after[key]), key  # weights and BN running stats
    assert not torch.equal(before["backbone.layer4.0.conv1.weight"], after["backbone.layer4.0.conv1.weight"])
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])


def test_arcface_cosines_stay_float32_under_bf16_autocast(tiny_recipe):
    model = build_model(tiny_recipe("x", head={"type": "arcface"}), num_classes=5).eval()
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        plain, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed, _ = model(x)
    assert mixed.dtype == torch.float32
    assert torch.allclose(plain, mixed, atol=0.05 * 64)  # the backbone ran in bf16; the cosines did not


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_build_and_run(path):
    recipe = load_recipe(path)
    model = build_model(recipe, num_classes=7, pretrained=False).eval()
    with torch.no_grad():
        logits, embedding = model(torch.randn(1, 3, *recipe.input.size))
    assert logits.shape == (1, 14 if recipe.flip_twins else 7) and embedding.shape == (1, recipe.head.embedding_dim)
