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


def _slow_arcface(cosines, targets, margins, s):
    """Per row, by hand: cross-entropy of s * cos with cos(theta + m_target) on the target column."""
    import math

    total = 0.0
    for cos, t in zip(cosines.tolist(), targets.tolist()):
        m = margins[t]
        theta = math.acos(min(max(cos[t], -1 + 1e-7), 1 - 1e-7))
        target = math.cos(theta + m) if theta + m < math.pi else cos[t] - math.sin(math.pi - m) * m
        z = [s * (target if j == t else c) for j, c in enumerate(cos)]
        top = max(z)
        total += -(z[t] - top - math.log(sum(math.exp(v - top) for v in z)))
    return total / len(targets)


def test_dynamic_margins_against_a_slow_reference():
    from kit.train.losses import dynamic_margins

    cfg = HeadCfg(scale=16.0, margin=0.05, margin_a=0.5, margin_lambda=0.25)
    counts = [1, 2, 16, 81]
    margins = dynamic_margins(counts, cfg)
    assert margins.tolist() == pytest.approx([0.55, 0.5 * 2 ** -0.25 + 0.05, 0.3, 0.5 / 3 + 0.05], rel=1e-6)
    assert dynamic_margins(counts, HeadCfg(margin_a=0.0)) is None  # one margin: the plain path
    g = torch.Generator().manual_seed(0)
    cosines = torch.rand(12, 4, generator=g) * 2 - 1
    targets = torch.tensor([0, 1, 2, 3] * 3)
    none = torch.zeros(12, 4, dtype=torch.bool)
    got = arcface_loss(cosines * cfg.scale, targets, torch.ones(12), none, cfg, margins=torch.from_numpy(margins))
    assert float(got) == pytest.approx(_slow_arcface(cosines, targets, margins.tolist(), cfg.scale), rel=1e-5)
    # one margin for every column gives what the fixed-margin path gives
    same = torch.full((4,), cfg.margin)
    assert float(arcface_loss(cosines * 16, targets, torch.ones(12), none, cfg, margins=same)) == pytest.approx(
        float(arcface_loss(cosines * 16, targets, torch.ones(12), none, cfg)), rel=1e-6)


def test_subcenter_arcface_scores_the_nearest_subcentre(tiny_recipe):
    recipe = tiny_recipe("x", head={"type": "arcface", "subcenters": 3, "scale": 8.0, "embedding_dim": 16})
    torch.manual_seed(0)
    model = build_model(recipe, num_classes=5).eval()
    head = model.head
    assert head.weight.shape == (15, 16)
    x = torch.randn(4, 3, *recipe.input.size)
    logits, emb = model(x)
    e = torch.nn.functional.normalize(emb, dim=1)
    w = torch.nn.functional.normalize(head.weight, dim=1)
    for i in range(4):
        for c in range(5):
            best = max(float(e[i] @ w[c * 3 + j]) for j in range(3))
            assert float(logits[i, c]) == pytest.approx(8.0 * best, abs=1e-5)


def test_subcenter_arcface_with_dynamic_margins_learns(tiny_recipe):
    recipe = tiny_recipe("x", head={"type": "arcface", "subcenters": 2, "margin_a": 0.3, "scale": 16.0,
                                    "embedding_dim": 32})
    torch.manual_seed(1)
    x = torch.randn(8, 3, *recipe.input.size)
    target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    torch.manual_seed(0)
    model = build_model(recipe, num_classes=4)
    model.train()
    criterion = Criterion(recipe.head, 4, False, counts=[5, 1, 1, 20])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = None
    for _ in range(25):
        loss = criterion(*model(x), target, torch.ones(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        last = float(loss.detach())
    assert last < first * 0.7


def test_the_species_loss_is_its_weight_times_cross_entropy_over_rows_with_a_species():
    cfg = HeadCfg(species_weight=0.3)
    g = torch.Generator().manual_seed(0)
    logits, species_logits = torch.randn(4, 5, generator=g), torch.randn(4, 3, generator=g)
    target, species = torch.tensor([0, 1, 2, 3]), torch.tensor([2, -1, 0, 1])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the last row: a bad image
    criterion = Criterion(cfg, 5, flip_twins=False)
    extra = criterion(logits, None, target, weight, species_logits, species) - criterion(logits, None, target, weight)
    rows = [0, 2]  # with a species, and not a bad image
    expected = torch.nn.functional.cross_entropy(species_logits[rows], species[rows])
    assert float(extra) == pytest.approx(0.3 * float(expected), rel=1e-5)
