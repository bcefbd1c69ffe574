"""Square Attack: checked against the official one of AutoAttack and the attack contract.

The official implementation (``SquareAttack`` of the ``pyautoattack`` 0.2.0 package, the
AutoAttack authors' code) runs beside ours on a small CNN trained on scikit-learn's digits
and on the same CNN behind an input quantiser (``round(8 x) / 8``), whose input gradient is
zero everywhere: gradient attacks see nothing there, Square must still break it. What must
hold: ours is not weaker, overall (per seed, by a sign test on the points where the two
disagree) and per class (robust accuracy averaged over 3 seeds), with the same budget of 300
queries for both (the schedule of p is rescaled to it). On these 8×8 images ours is clearly
stronger (robust accuracy 0.23 vs 0.43 at L-inf 0.1 on the CNN): AutoAttack's never moves a
square onto the last row or column and spends queries on proposals that change nothing. A
version of ours that keeps worse proposals instead of better ones fails these tests.
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

import robustfair as rf
from robustfair.attacks import Square, build_attack, list_attacks
from robustfair.attacks import square
from robustfair.attacks._random import DrawBlock, PointRandom
from robustfair.attacks.square import _bump, _l2_init, _l2_step, _linf_init, _linf_step, p_selection
from robustfair.errors import AttackError
from robustfair.models import attack_view

from digits_model import train_small_cnn

NUM_CLASSES = 10


def _official_square():
    """The official SquareAttack class, or None (the package installs as ``pyautoattack``;
    a source checkout of AutoAttack imports as ``autoattack``)."""
    for module in ("pyautoattack.square", "autoattack.square"):
        try:
            return importlib.import_module(module).SquareAttack
        except ImportError:
            continue
    return None


OfficialSquare = _official_square()
needs_official = pytest.mark.skipif(
    OfficialSquare is None,
    reason="official AutoAttack not importable: pip install --no-deps pyautoattack==0.2.0")


class Quantised(nn.Module):
    """``inner`` on inputs rounded to multiples of ``1 / k``: every input gradient is zero."""

    def __init__(self, inner: nn.Module, k: int) -> None:
        super().__init__()
        self.inner, self.k = inner, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * self.k) / self.k)


class Counting(nn.Module):
    """Wraps a model; counts the rows of every forward pass and refuses to run with autograd on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "Square must not build an autograd graph"
        self.sizes.append(len(x))
        return self.inner(x)


@pytest.fixture(scope="module")
def digits():
    ds = rf.load_dataset("digits")
    return ds, ds.test.x.float() / 255, ds.test.y


@pytest.fixture(scope="module")
def net(digits):
    return train_small_cnn(digits[0], epochs=4)


@pytest.fixture(scope="module")
def models(net, digits):
    # BatchNorm folded into the convolutions (as the audit runs a model): the same function,
    # about a third cheaper per forward pass
    fast = attack_view(net, digits[1][:2])
    return {"cnn": fast, "quantised": Quantised(fast, 8).eval()}


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def _assert_valid(res, model, x, y, eps, norm, target=None):
    """In the ball and the box; ``pred`` is the model's; ``success`` is exactly the goal."""
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float((size - torch.as_tensor(eps).flatten()).max()) <= 1e-5
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred)
    goal = pred != y if target is None else pred == target
    assert torch.equal(res.success, goal)


# ------------------------------------------------------------------- the rules themselves

def test_p_selection_halves_on_the_official_schedule():
    # on a 10,000-query budget p halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
    for k, t in enumerate(halvings):
        assert p_selection(t, 10000, 0.8) == 0.8 / 2 ** k
        assert p_selection(t + 1, 10000, 0.8) == 0.8 / 2 ** (k + 1)
    assert p_selection(0, 10000, 0.5) == 0.5
    assert p_selection(9999, 10000, 0.8) == 0.8 / 512
    # other budgets are rescaled to 10,000: 5 of 5,000 is 10 of 10,000, 6 is 12
    assert p_selection(5, 5000, 0.8) == 0.8 and p_selection(6, 5000, 0.8) == 0.4
    assert p_selection(499, 500, 0.8) == 0.8 / 512


def _mid_grey(n=4, c=3, h=10, w=9):
    """Images at 0.5 everywhere: the box clips no perturbation of size <= 0.5."""
    return torch.full((n, c, h, w), 0.5, dtype=torch.float64)


def test_linf_init_is_vertical_stripes_and_step_one_square():
    x, eps = _mid_grey(), torch.full((4, 1, 1, 1), 0.1, dtype=torch.float64)
    g = PointRandom(0, torch.arange(len(x))).at(None, "test")
    x0 = _linf_init(x, eps, g)
    delta = x0 - x
    assert torch.allclose(delta.abs(), eps.expand_as(delta))
    assert torch.equal(delta, delta[:, :, :1].expand_as(delta))  # constant along each column
    s = 4  # p * h * w = 16 pixels
    for it in range(20):
        x1 = _linf_step(x, x0, eps, 16 / 90, PointRandom(0, torch.arange(4)).at(None, "step", it))
        changed = (x1 != x0).any(1)  # N×H×W
        for i in range(4):
            rows, cols = changed[i].nonzero(as_tuple=True)
            assert len(rows) > 0  # signs are drawn again until the square changes something
            assert rows.max() - rows.min() < s and cols.max() - cols.min() < s
        assert torch.allclose((x1 - x).abs(), eps.expand_as(x))  # still on the ball's corners
        x0 = x1


def test_l2_init_and_step_spend_the_whole_budget(monkeypatch):
    x, eps = _mid_grey(), torch.full((4, 1, 1, 1), 0.5, dtype=torch.float64)
    g = PointRandom(0, torch.arange(len(x))).at(None, "test")
    x0 = _l2_init(x, eps, g)
    assert torch.allclose((x0 - x).flatten(1).norm(dim=1), eps.flatten())
    # the two windows (side 3 at p = 9 / 90): first at (0, 0), second at (5, 5)
    corners = iter([(0, 0), (5, 5)])

    def fixed(draws, s, h, w, tag):
        top, left = next(corners)
        return torch.full((len(draws),), top), torch.full((len(draws),), left)

    monkeypatch.setattr(square, "_corners", fixed)
    x_small = x + (x0 - x) * 0.4  # 40% of the budget used: the step may spend the rest
    x1 = _l2_step(x, x_small, eps, 9 / 90, g)
    delta = x1 - x
    assert torch.allclose(delta.flatten(1).norm(dim=1), eps.flatten())
    assert torch.equal(delta[:, :, 5:8, 5:8], torch.zeros_like(delta[:, :, 5:8, 5:8]))
    # outside both windows the perturbation keeps its shape, rescaled
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[:, :, :3, :3] = outside[:, :, 5:8, 5:8] = False
    old = (x_small - x)[outside].view(4, -1)
    new = delta[outside].view(4, -1)
    ratio = new.norm(dim=1) / old.norm(dim=1)
    assert torch.allclose(new, old * ratio[:, None])


@pytest.mark.slow  # against the official AutoAttack
@needs_official
def test_l2_bump_is_the_official_one():
    official = OfficialSquare(lambda t: t, norm="L2", eps=1.0, device="cpu")
    for s in range(1, 16):
        theirs = official.eta(s)  # transposed at random, as ours may be
        ours = _bump(s, torch.zeros(1))
        assert torch.allclose(ours, theirs, atol=1e-6) or torch.allclose(ours.T, theirs, atol=1e-6)
        assert abs(float(ours.norm()) - 1.0) < 1e-5


# -------------------------------------------------------------- against the official one

def _not_weaker(model, x, y, norm, eps, n_queries=300, seeds=(0, 1, 2)):
    """Run ours and the official Square per seed; return per-seed counts and per-class figures."""
    robust_ours, robust_theirs, lines = [], [], []
    for seed in seeds:
        ours = Square(eps, norm=norm, n_queries=n_queries, seed=seed).perturb(model, x, y)
        _assert_valid(ours, model, x, y, eps, norm)
        official = OfficialSquare(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps,
                                  n_queries=n_queries, seed=seed, device=x.device)
        theirs = _fooled(model, official.perturb(x, y), y)
        only_theirs = int((theirs & ~ours.success).sum())
        only_ours = int((ours.success & ~theirs).sum())
        # Sign test on the points where the two disagree: were both equally strong, the
        # difference would have mean 0 and standard deviation sqrt(only_theirs + only_ours).
        assert only_theirs - only_ours <= 2 * math.sqrt(only_theirs + only_ours), (
            f"seed {seed}: {only_theirs} points fooled by the official Square only, "
            f"{only_ours} by ours only")
        robust_ours.append(torch.stack([1 - ours.success[y == c].double().mean()
                                        for c in range(NUM_CLASSES)]))
        robust_theirs.append(torch.stack([1 - theirs[y == c].double().mean()
                                          for c in range(NUM_CLASSES)]))
        lines.append(f"seed {seed}: robust {1 - ours.success.double().mean():.3f} (ours) vs "
                     f"{1 - theirs.double().mean():.3f}; only ours {only_ours}, only theirs "
                     f"{only_theirs}")
    gap = torch.stack(robust_ours).mean(0) - torch.stack(robust_theirs).mean(0)
    print("\n".join(lines), f"\nper-class robust gap (ours - theirs), 3-seed mean: "
          f"max {float(gap.max()):+.3f}")
    assert float(gap.max()) <= 0.02, f"per-class robust accuracy above the official by {gap.tolist()}"


@needs_official
@pytest.mark.slow
@pytest.mark.parametrize("model_name,norm,eps", [
    ("cnn", "linf", 0.1), ("cnn", "l2", 0.8),
    ("quantised", "linf", 0.1), ("quantised", "l2", 0.8),
])
def test_not_weaker_than_official_square(models, digits, model_name, norm, eps):
    _, x, y = digits
    _not_weaker(models[model_name], x, y, norm, eps)


def test_breaks_a_model_with_zero_input_gradients(models, digits):
    _, x, y = digits
    model = models["quantised"]
    x_grad = x[:64].clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x_grad), y[:64]).backward()
    assert float(x_grad.grad.abs().max()) == 0.0  # a gradient attack has nothing to follow
    res = Square(0.15, n_queries=200).perturb(model, x, y)
    _assert_valid(res, model, x, y, 0.15, "linf")
    clean_robust = 1 - float(_fooled(model, x, y).double().mean())
    assert clean_robust > 0.9 and float(res.success.double().mean()) > 0.9


# --------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 2, 3), (3, 5, 7), (2, 9, 4), (3, 32, 32)])
def test_any_image_size_stays_in_ball_and_box(shape, norm):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 3)).eval()
    x = torch.rand(12, *shape)
    x[:3] = x[:3].round()  # pixels on the box's faces
    y = torch.randint(0, 3, (12,))
    eps = torch.linspace(0.0, 0.5 if norm == "linf" else 2.0, 12)  # per sample, one of them 0
    res = Square(eps, norm=norm, n_queries=60, seed=3).perturb(model, x, y)
    _assert_valid(res, model, x, y, eps, norm)
    assert torch.equal(res.x_adv[0], x[0])  # eps 0
    assert torch.equal(res.x_adv[~res.success], x[~res.success])


def test_misclassified_points_are_returned_unchanged(net, digits):
    _, x, y = digits
    x, y = x[:200], y[:200]
    wrong = _fooled(net, x, y)
    assert wrong.any() and not wrong.all()
    for norm, eps in [("linf", 0.2), ("l2", 1.5)]:
        res = Square(eps, norm=norm, n_queries=50).perturb(net, x, y)
        assert torch.equal(res.x_adv[wrong], x[wrong])
        assert res.success[wrong].all()


def test_early_exit_fooled_points_stop_costing_queries(net, digits):
    _, x, y = digits
    x, y = x[:100], y[:100]
    n_queries = 200
    correct = int((~_fooled(net, x, y)).sum())
    # eps 0 fools nobody: every correct point is queried n_queries + 1 times, plus the clean
    # pass; no padding on the CPU
    model = Counting(net)
    Square(0.0, n_queries=n_queries).perturb(model, x, y)
    rows = sum(model.sizes) - len(x)
    assert rows == correct * (n_queries + 1)
    # a large eps fools nearly every point within a few queries: they leave the batch
    model = Counting(net)
    res = Square(0.3, n_queries=n_queries).perturb(model, x, y)
    assert float(res.success.double().mean()) > 0.95
    assert sum(model.sizes) < 0.1 * n_queries * len(x)


def test_batch_size_caps_every_pass(net, digits):
    _, x, y = digits
    x, y = x[:100], y[:100]
    model = Counting(net)
    with torch.no_grad():
        logits = net(x)
    res = Square(0.1, n_queries=30).perturb(model, x, y, clean_logits=logits, batch_size=16)
    assert max(model.sizes) <= 16
    _assert_valid(res, net, x, y, 0.1, "linf")


def test_seeded_runs_are_reproducible(net, digits):
    _, x, y = digits
    x, y = x[:80], y[:80]
    for norm, eps in [("linf", 0.08), ("l2", 0.6)]:
        a = Square(eps, norm=norm, n_queries=60, seed=5).perturb(net, x, y)
        b = Square(eps, norm=norm, n_queries=60, seed=5).perturb(net, x, y)
        c = Square(eps, norm=norm, n_queries=60, seed=6).perturb(net, x, y)
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
        assert not torch.equal(a.x_adv, c.x_adv)


def test_a_second_restart_only_adds_successes(net, digits):
    # same seed: the first restart is the same run, the second attacks the points it left
    _, x, y = digits
    x, y = x[:120], y[:120]
    one = Square(0.07, n_queries=40, seed=2).perturb(net, x, y)
    two = Square(0.07, n_queries=40, restarts=2, seed=2).perturb(net, x, y)
    assert (two.success | ~one.success).all()
    assert torch.equal(two.x_adv[one.success], one.x_adv[one.success])
    assert int(two.success.sum()) > int(one.success.sum())


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.5)])
def test_targeted_reaches_the_target(net, digits, norm, eps):
    _, x, y = digits
    x, y = x[:100], y[:100]
    target = (y + 1) % NUM_CLASSES
    attack = Square(eps, norm=norm, n_queries=200, targeted=True)
    assert attack.settings()["loss"] == "ce"  # the official code's targeted loss
    res = attack.perturb(net, x, y, target=target)
    _assert_valid(res, net, x, y, eps, norm, target=target)
    assert float(res.success.double().mean()) > 0.5
    with pytest.raises(AttackError, match="targeted"):
        attack.perturb(net, x, y)


@pytest.mark.slow  # against the official AutoAttack
@needs_official
def test_targeted_not_weaker_than_official(net, digits):
    _, x, y = digits
    x, y = x[:150], y[:150]
    target = (y + 3) % NUM_CLASSES
    ours = Square(0.12, n_queries=200, targeted=True).perturb(net, x, y, target=target)
    official = OfficialSquare(net, norm="Linf", eps=0.12, n_queries=200, seed=0,
                              targeted=True, device=x.device)
    with torch.no_grad():
        theirs = net(official.perturb(x, target)).argmax(1) == target
    only_theirs = int((theirs & ~ours.success).sum())
    only_ours = int((ours.success & ~theirs).sum())
    assert only_theirs - only_ours <= 2 * math.sqrt(only_theirs + only_ours)


def test_registered_with_every_deciding_setting():
    assert "square" in list_attacks()
    attack = build_attack("square", eps=0.1, norm="l2", n_queries=100, p_init=0.3, restarts=2)
    assert isinstance(attack, Square)
    settings = attack.settings()
    assert settings["attack"] == "square"
    assert {k: settings[k] for k in ("eps", "norm", "n_queries", "p_init", "restarts", "loss",
                                      "targeted", "seed")} == {
        "eps": 0.1, "norm": "l2", "n_queries": 100, "p_init": 0.3, "restarts": 2, "loss": "cw",
        "targeted": False, "seed": 0}
    assert Square(0.1).settings()["n_queries"] == 5000 and Square(0.1).p_init == 0.8


@pytest.mark.parametrize("settings,match", [
    ({"n_queries": 0}, "n_queries"),
    ({"n_queries": 2.5}, "n_queries"),
    ({"p_init": 0.0}, "p_init"),
    ({"p_init": 1.5}, "p_init"),
    ({"p_init": -0.2}, "p_init"),
    ({"norm": "l1"}, "norm"),
    ({"restarts": 0}, "restarts"),
    ({"loss": "hinge"}, "loss"),
    ({"seed": "x"}, "seed"),
    ({"targeted": 1}, "targeted"),
    ({"eps": -0.1}, "eps"),
])
def test_bad_settings_are_one_line_errors(settings, match):
    with pytest.raises(AttackError, match=match) as err:
        build_attack("square", **{"eps": 0.1, **settings})
    assert "\n" not in str(err.value)


def test_bad_batch_size_is_a_one_line_error(net, digits):
    _, x, y = digits
    with pytest.raises(AttackError, match="batch_size") as err:
        Square(0.1).perturb(net, x[:4], y[:4], batch_size=0)
    assert "\n" not in str(err.value)


def test_draws_made_a_block_at_a_time_are_the_per_iteration_draws():
    rng = PointRandom(3, torch.tensor([7, 2, 40, 11]))
    block = DrawBlock(rng.at(None, "square", 0, torch.arange(20, 30)))[torch.tensor([3, 0, 2])]
    for place in (0, 4, 9):
        block.place = place
        alone = rng.at(torch.tensor([3, 0, 2]), "square", 0, 20 + place)
        like = torch.zeros(1)
        assert torch.equal(block.integers((), 5, "top"), alone.integers((), 5, "top"))
        assert torch.equal(block.signs((3, 1, 1), "signs", like),
                           alone.signs((3, 1, 1), "signs", like))
        assert torch.equal(block.uniform((2,), "u"), alone.uniform((2,), "u"))
        assert torch.equal(block.normal((2,), "n"), alone.normal((2,), "n"))


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_results_do_not_depend_on_the_draw_block(net, digits, monkeypatch, norm, eps):
    """Blocks of 100 iterations (ending early where the square's size changes), with fooled
    points leaving mid-block, give exactly what drawing at every iteration alone gives."""
    _, x, y = digits
    x, y = x[:60], y[:60]
    attack = Square(eps=eps, norm=norm, n_queries=300)
    blocks = attack.perturb(net, x, y, batch_size=25)
    monkeypatch.setattr(square, "_BLOCK", 1)
    alone = attack.perturb(net, x, y, batch_size=25)
    assert 0 < int(blocks.success.sum()) < len(x)  # points leave mid-block, some stay
    assert torch.equal(blocks.x_adv, alone.x_adv) and torch.equal(blocks.success, alone.success)
