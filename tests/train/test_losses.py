"""Every head learns on a tiny batch; flipped twins are labelled K + k and never pushed apart."""
import pytest
import torch

from kit.train.heads import Criterion
from kit.train.losses import arcface_loss, sigmoid_loss, softmax_loss, triplet_loss, twin_mask
from kit.train.model import build_model
from kit.train.recipe import HeadCfg


def fit(recipe, x, target, steps=25, lr=3e-3):
    torch.manual_seed(0)
    model = build_model(recipe, num_classes=4)
    model.train()
    criterion = Criterion(recipe.head, model(x)[0].shape[1], recipe.flip_twins)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    weight = torch.ones(len(target))
    losses = []
    for _ in range(steps):
        logits, emb = model(x)
        loss = criterion(logits, emb, target, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("head", [
    {"type": "softmax"},
    {"type": "arcface", "scale": 16.0, "margin": 0.3},
    {"type": "sigmoid", "hard_negatives": 2},
    {"type": "softmax", "triplet_weight": 1.0},
])
def test_each_head_loss_decreases_on_a_tiny_batch(head, tiny_recipe):
    recipe = tiny_recipe("unused", head=head)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 64, generator=g)
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, -1 if head["type"] == "sigmoid" else 3])
    losses = fit(recipe, x, target)
    assert losses[-1] < 0.5 * losses[0], losses


def test_twin_mask_marks_the_other_half():
    target = torch.tensor([0, 4, 2, -1])  # K = 4: 4 is the flipped twin of 0
    mask = twin_mask(target, 8, flip_twins=True)
    assert mask.sum(1).tolist() == [1, 1, 1, 0]
    assert mask[0, 4] and mask[1, 0] and mask[2, 6]
    assert not twin_mask(target, 8, flip_twins=False).any()


@pytest.mark.parametrize("loss_fn", [softmax_loss, arcface_loss, sigmoid_loss])
def test_no_gradient_flows_to_the_twin(loss_fn):
    cfg = HeadCfg(scale=8.0, margin=0.3, hard_negatives=7)
    K = 4
    logits = (torch.randn(3, 2 * K) * 2).clamp(-7.9, 7.9).requires_grad_()
    target = torch.tensor([1, 1 + K, 3])
    mask = twin_mask(target, 2 * K, flip_twins=True)
    loss_fn(logits, target, torch.ones(3), mask, cfg).backward()
    assert (logits.grad[mask] == 0).all()  # the twins get nothing
    assert (logits.grad[~mask].abs() > 0).sum() >= 3 * (2 * K - 2)  # every other column does (top-k: all here)


def test_weights_and_unknown_rows():
    cfg = HeadCfg()
    logits = torch.randn(4, 5, requires_grad=True)
    target = torch.tensor([0, 1, -1, 2])
    none = torch.zeros(4, 5, dtype=torch.bool)
    # softmax ignores unknown rows and zero-weight rows (a bad image): row 2 and row 3 get no gradient
    softmax_loss(logits, target, torch.tensor([1.0, 1.0, 1.0, 0.0]), none, cfg).backward()
    assert logits.grad[2:].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0
    # the sigmoid loss trains on unknown rows: negatives for every identity
    logits.grad = None
    sigmoid_loss(logits, target, torch.ones(4), none, HeadCfg(hard_negatives=5)).backward()
    assert (logits.grad[2] > 0).sum() == 4  # its 4 hardest negatives (k = 5, capped at K - 1)


def test_arcface_margin_only_in_training_loss():
    cfg = HeadCfg(scale=10.0, margin=0.5)
    cosine = torch.tensor([[0.9, 0.1]])
    none = torch.zeros(1, 2, dtype=torch.bool)
    with_margin = arcface_loss(cosine * 10, torch.tensor([0]), torch.ones(1), none, cfg)
    without = softmax_loss(cosine * 10, torch.tensor([0]), torch.ones(1), none, cfg)
    assert with_margin > without  # the margin makes the target harder


def test_triplet_needs_a_positive():
    emb = torch.randn(4, 8, requires_grad=True)
    assert float(triplet_loss(emb, torch.tensor([0, 1, 2, -1]), torch.ones(4), 0.3).detach()) == 0.0
    loss = triplet_loss(emb, torch.tensor([0, 0, 1, -1]), torch.ones(4), 0.3)
    loss.backward()
    assert emb.grad is not None
