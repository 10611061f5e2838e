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
    model = build_model(recipe, num_classes=7, pretrained=False, num_species=3).eval()
    with torch.no_grad():
        logits, embedding, *species = model(torch.randn(1, 3, *recipe.input.size), species=recipe.head.species_weight > 0)
    assert logits.shape == (1, 14 if recipe.flip_twins else 7) and embedding.shape == (1, recipe.head.embedding_dim)
    assert [s.shape for s in species] == ([(1, 3)] if recipe.head.species_weight > 0 else [])


@pytest.mark.parametrize("backbone", ["resnet18", "seresnet18", "inception_next_atto", "inception_v3", "seresnext26d_32x4d"])
def test_feature_width_comes_from_the_network_not_its_attributes(backbone):
    """Every family the recipes use: the head's input is what the backbone really pools."""
    import timm

    from kit.train.model import feature_width, pooled_features

    net = timm.create_model(backbone, pretrained=False, num_classes=0)
    width = feature_width(net, (80, 96))
    assert pooled_features(net.eval(), torch.zeros(2, 3, 80, 96)).shape == (2, width)


def test_inception_next_as_timm_1_0_29_built_it():
    """timm 1.0.29 left InceptionNeXt's MLP head with an F x 0 classifier after num_classes=0, so
    `backbone(x)` had 0 features while `head_hidden_size` said 960 (the first-step crash on a GPU
    image). pre_logits features and reset_classifier(0) are right on either release."""
    import timm
    from torch import nn

    from kit.train.model import feature_width, pooled_features

    net = timm.create_model("inception_next_atto", pretrained=False, num_classes=0).eval()
    net.head.fc2 = nn.Linear(net.head.num_features, 0)  # as 1.0.29 did
    x = torch.zeros(1, 3, 64, 64)
    assert net(x).shape[-1] == 0
    assert feature_width(net, (64, 64)) == pooled_features(net, x).shape[-1] == net.head.num_features
    net.reset_classifier(0)  # what create_backbone does: the same parameters on every release
    assert not [k for k in net.state_dict() if k.startswith("head.fc2")]


def test_gem_against_a_slow_reference_and_on_two_stages(tiny_recipe):
    from kit.train.model import GeM

    torch.manual_seed(0)
    maps = torch.rand(2, 3, 4, 5) + 0.1
    backbone = type("B", (), {"forward_features": lambda self, x: maps})()
    for p in (1.0, 3.0):
        got = GeM(p)(backbone, None)
        slow = torch.tensor([[float((maps[b, c] ** p).mean() ** (1 / p)) for c in range(3)] for b in range(2)])
        torch.testing.assert_close(got, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(GeM(1.0)(backbone, None), maps.mean(dim=(2, 3)))  # p = 1: average pooling
    one = build_model(tiny_recipe("x", model={"pool": "gem"}), num_classes=5)
    two = build_model(tiny_recipe("x", model={"pool": "gem", "pool_stages": 2}), num_classes=5)
    width = lambda m: m.head.neck.bn_in.num_features  # noqa: E731
    assert width(two) == width(one) + width(one) // 2  # resnet: the last stage, and the one before at half its width
    assert "pool.p" in dict(two.named_parameters()) and two(torch.randn(2, 3, 32, 64))[0].shape == (2, 5)
    with pytest.raises(KitError, match="model.pool_stages 2 pools several stages with GeM; set model.pool: gem"):
        tiny_recipe("x", model={"pool_stages": 2})


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran on loading",))


def test_a_checkpoint_holding_python_objects_is_refused_without_torch_s_advice(tmp_path, capsys):
    """The refusal repeated torch's advice, to load it with weights_only=False: running its code."""
    from kit.errors import KitError
    from kit.train.model import read_checkpoint

    torch.save({"model": {}, "x": _RunsCode()}, tmp_path / "checkpoint.pt")
    with pytest.raises(KitError) as e:
        read_checkpoint(tmp_path / "checkpoint.pt")
    assert "refused: it holds Python objects" in str(e.value) and "weights_only" not in str(e.value)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert "this ran on loading" not in capsys.readouterr().out
    (tmp_path / "cut.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:40])
    with pytest.raises(KitError, match=r"cut.pt: not a readable checkpoint \("):
        read_checkpoint(tmp_path / "cut.pt")


def test_a_head_registers_against_its_torch_free_facts():
    """Recipes read a head's facts (kit/train/head_facts.py) without importing torch; a head class
    without facts, or one that contradicts them, is refused when it registers."""
    import subprocess
    import sys

    from kit.train.head_facts import FACTS
    from kit.train.heads import HEADS, SoftmaxHead

    code = "import sys; from kit.train.recipe import recipe_from_dict; recipe_from_dict({'head': {'type': 'sigmoid'}}); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert {name: (h.activation, h.learns_unknown) for name, h in HEADS.items()} == \
        {name: (f.activation, f.learns_unknown) for name, f in FACTS.items()}

    class Unknown(SoftmaxHead):
        name = "unknown-head"

    class Liar(SoftmaxHead):
        name = "sigmoid"  # sigmoid's facts: activation sigmoid, learns the unknown

    with pytest.raises(ValueError, match="register its facts first"):
        HEADS.register(Unknown)
    with pytest.raises(ValueError, match="differ from its facts"):
        HEADS.register(Liar)
