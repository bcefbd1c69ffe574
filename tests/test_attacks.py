"""Attacks: checked against torchattacks 3.5.1, direct computations and the contract in attacks/_base.py.

One small BatchNorm CNN is trained on scikit-learn's digits (8×8, [0, 1]) once per module.
Comparisons with torchattacks run on a float64 copy of it, so that the only difference between
the two implementations is the algorithm (ours drops fooled points from the batch; float64
keeps that from changing the other points' trajectories through rounding).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustfair.attacks import ATTACKS, Attack, build_attack, list_attacks
from robustfair.attacks.apgd import checkpoints
from robustfair.attacks.losses import cw_margin, dlr, dlr_targeted, objective
from robustfair.errors import AttackError
from one_line import one_line_error

torchattacks = pytest.importorskip("torchattacks")

NUM_CLASSES = 10


def _cnn(num_classes: int = NUM_CLASSES) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, num_classes),
    )


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)  # N×1×8×8 in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x, y, perm[:1200], perm[1200:]


@pytest.fixture(scope="module")
def model(digits):
    """The CNN after 250 Adam steps on 1200 digits (≈97% held-out accuracy), in eval mode."""
    x, y, train_idx, _ = digits
    torch.manual_seed(0)
    net = _cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        b = train_idx[torch.randint(0, len(train_idx), (64,), generator=g)]
        loss = F.cross_entropy(net(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def model64(model):
    return copy.deepcopy(model).double().eval()


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def _per_class_robust(fooled: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.0 - fooled[y == c].double().mean() for c in range(NUM_CLASSES)])


def _assert_at_least_as_strong(ours, theirs_fooled, y, *, max_class_gap=0.01):
    """Every point torchattacks fools we fool too; per-class robust accuracy within 1 point."""
    missed = theirs_fooled & ~ours.success
    assert int(missed.sum()) == 0, f"{int(missed.sum())} points fooled by torchattacks only"
    gap = (_per_class_robust(theirs_fooled, y) - _per_class_robust(ours.success, y)).abs().max()
    assert float(gap) <= max_class_gap


# ---------------------------------------------------------------- against torchattacks

@pytest.mark.slow  # against torchattacks
def test_pgd_linf_matches_torchattacks(model64, digits):
    x, y, _, _ = digits
    x, eps = x.double(), 0.15
    theirs = torchattacks.PGD(model64, eps=eps, alpha=eps / 4, steps=10, random_start=False)(x, y)
    ours = build_attack("pgd", eps=eps, steps=10, alpha=eps / 4, random_start=False).perturb(
        model64, x, y)
    theirs_fooled = _fooled(model64, theirs, y)
    assert 0.05 < float(theirs_fooled.double().mean()) < 0.95  # a test with something to find
    _assert_at_least_as_strong(ours, theirs_fooled, y)


@pytest.mark.slow  # against torchattacks
def test_pgd_l2_matches_torchattacks(model64, digits):
    x, y, _, _ = digits
    x, eps = x.double(), 0.5
    theirs = torchattacks.PGDL2(model64, eps=eps, alpha=0.15, steps=10, random_start=False)(x, y)
    ours = build_attack("pgd", eps=eps, norm="l2", steps=10, alpha=0.15,
                        random_start=False).perturb(model64, x, y)
    theirs_fooled = _fooled(model64, theirs, y)
    assert 0.05 < float(theirs_fooled.double().mean()) < 0.95
    _assert_at_least_as_strong(ours, theirs_fooled, y)


@pytest.mark.slow  # against torchattacks
def test_fgsm_matches_torchattacks(model64, digits):
    x, y, _, _ = digits
    x, eps = x.double(), 0.1
    theirs_fooled = _fooled(model64, torchattacks.FGSM(model64, eps=eps)(x, y), y)
    ours = build_attack("fgsm", eps=eps).perturb(model64, x, y)
    assert 0.05 < float(theirs_fooled.double().mean()) < 0.95
    # One step from the same point: exactly the same points fall.
    assert torch.equal(ours.success, theirs_fooled)


@pytest.mark.slow  # against torchattacks
def test_apgd_ce_at_least_as_strong_as_pgd100_and_torchattacks(model, digits):
    x, y, _, test_idx = digits
    x, y, eps = x[test_idx[:400]], y[test_idx[:400]], 0.15
    apgd = build_attack("apgd-ce", eps=eps, steps=100).perturb(model, x, y)
    pgd = build_attack("pgd", eps=eps, steps=100).perturb(model, x, y)
    theirs = torchattacks.APGD(model, eps=eps, steps=100, loss="ce", n_restarts=1, seed=0)(x, y)
    rob_apgd = 1.0 - float(apgd.success.double().mean())
    rob_pgd = 1.0 - float(pgd.success.double().mean())
    rob_theirs = 1.0 - float(_fooled(model, theirs, y).double().mean())
    assert 0.02 < rob_apgd < 0.9
    assert rob_apgd <= rob_pgd
    assert rob_apgd <= rob_theirs + 0.01


@pytest.mark.slow  # against torchattacks
def test_untargeted_apgd_t_is_autoattacks_and_as_strong_as_torchattacks(model, digits):
    # AutoAttack's APGD-T: the targeted DLR loss toward each of the 9 runner-up classes in
    # turn, any misclassification counts. torchattacks' APGDT is the same algorithm.
    x, y, _, test_idx = digits
    x, y, eps = x[test_idx[:400]], y[test_idx[:400]], 0.15
    ours = build_attack("apgd-t", eps=eps, steps=30, targeted=False)
    assert ours.settings()["top_k"] == 9 and not ours.targeted
    res = ours.perturb(model, x, y)
    theirs = torchattacks.APGDT(model, eps=eps, steps=30, n_restarts=1, n_classes=10, seed=0)(x, y)
    rob_ours = 1.0 - float(res.success.double().mean())
    rob_theirs = 1.0 - float(_fooled(model, theirs, y).double().mean())
    assert 0.02 < rob_ours < 0.9
    assert rob_ours <= rob_theirs + 0.01
    # its successes are misclassifications, not necessarily the runner-up class
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert bool((pred[res.success] != y[res.success]).all())
    # more target classes never find fewer adversarial examples (the first runs are the same)
    one = build_attack("apgd-t", eps=eps, steps=30, targeted=False, top_k=1).perturb(model, x, y)
    assert bool((res.success | ~one.success).all())
    assert int(res.success.sum()) > int(one.success.sum())


# ---------------------------------------------------------------- losses and schedule

def test_losses_match_direct_formulas():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (64,), generator=g)
    t = (y + 1 + torch.randint(0, 6, (64,), generator=g)) % 7
    for i in range(64):
        row = z[i].tolist()
        s = sorted(row, reverse=True)
        others = [v for j, v in enumerate(row) if j != y[i]]
        assert cw_margin(z, y)[i].item() == pytest.approx(max(others) - row[y[i]])
        assert dlr(z, y)[i].item() == pytest.approx(-(row[y[i]] - max(others)) / (s[0] - s[2]))
        want_t = -(row[y[i]] - row[t[i]]) / (s[0] - 0.5 * (s[2] + s[3]))
        assert dlr_targeted(z, y, t)[i].item() == pytest.approx(want_t)
    # DLR is invariant to a shift and a positive rescaling of the logits.
    assert torch.allclose(dlr(3.0 * z + 5.0, y), dlr(z, y))
    # Targeted objectives grow as the target gains on the rest.
    assert torch.allclose(objective("ce", z, y, t), -F.cross_entropy(z, t, reduction="none"))
    assert torch.allclose(objective("cw", z, y, t), -cw_margin(z, t))


def test_apgd_checkpoints_follow_the_paper_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = p_j * N_iter.
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    assert checkpoints(100) == [round(v * 100) for v in p[1:]]
    assert all(c <= 7 for c in checkpoints(7)) and checkpoints(1) == [1]


# ---------------------------------------------------------------- contract

# Every registered attack runs the contract tests below: a newly registered one is tested
# with no new test code (its budget cut to a quick run by the options it has).
REGISTERED = list_attacks()


def _quick(name: str, **settings) -> "Attack":
    options = ATTACKS.options(name)
    budget = {k: v for k, v in {"steps": 10, "n_queries": 100}.items() if k in options}
    return build_attack(name, **budget, **settings)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.6)])
@pytest.mark.parametrize("name", REGISTERED)
def test_perturbation_within_eps_and_box_and_consistent(model64, digits, name, norm, eps):
    x, y, _, test_idx = digits
    x, y = x[test_idx[:150]].double(), y[test_idx[:150]]
    res = _quick(name, eps=eps, norm=norm).perturb(model64, x, y)
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-9
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        pred = model64(res.x_adv).argmax(1)
    assert torch.equal(res.pred, pred)
    assert torch.equal(res.success, pred != y)
    assert bool(res.success.any())
    # Points left robust are handed back unperturbed.
    assert torch.equal(res.x_adv[~res.success], x[~res.success])


class _GradientSpy(nn.Module):
    """Records, per pass, whether the input could carry a gradient back to the attack."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.grad_passes, self.passes = net, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        self.grad_passes += int(x.requires_grad and torch.is_grad_enabled())
        return self.net(x)


@pytest.mark.parametrize("name", REGISTERED)
def test_uses_gradient_says_whether_the_attack_asks_for_gradients(model64, digits, name):
    # the sanity checks read ``uses_gradient`` to tell black-box breaks (gradient masking)
    x, y, _, test_idx = digits
    spy = _GradientSpy(model64).eval()
    attack = _quick(name, eps=0.05)
    attack.perturb(spy, x[test_idx[:40]].double(), y[test_idx[:40]])
    assert spy.passes > 0
    assert (spy.grad_passes > 0) == type(attack).uses_gradient


@pytest.mark.parametrize("name", REGISTERED)
def test_each_points_result_is_its_own_whatever_its_batch(model64, digits, name):
    # per-point random streams (attacks/_random.py): the points attacked among others, in
    # small passes, or alone with their own index, end the same (sharded audits rely on it)
    x, y, _, test_idx = digits
    x, y = x[test_idx[:60]].double(), y[test_idx[:60]]
    attack = _quick(name, eps=0.1)
    whole = attack.perturb(model64, x, y)
    part = slice(1, None, 3)
    alone = attack.perturb(model64, x[part], y[part], batch_size=7,
                           index=torch.arange(len(x))[part])
    assert torch.equal(alone.success, whole.success[part])
    assert torch.allclose(alone.x_adv, whole.x_adv[part], atol=1e-9)


def test_train_mode_and_batchnorm_stats_restored(model, digits):
    x, y, _, test_idx = digits
    net = copy.deepcopy(model).train()
    net[1].eval()  # a caller's mixed modes come back exactly as they were
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    for name in ["fgsm", "pgd", "apgd-ce"]:
        build_attack(name, eps=0.1).perturb(net, x[test_idx[:64]], y[test_idx[:64]])
    assert net.training and not net[1].training and net[4].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert all(p.grad is None for p in net.parameters())  # no parameter gradients


@pytest.mark.parametrize("name,settings", [
    ("pgd", {"steps": 20}), ("cw", {"steps": 20}), ("fgsm", {}), ("apgd-t", {"steps": 30}),
])
def test_targeted_attacks_reach_the_target(model64, digits, name, settings):
    x, y, _, test_idx = digits
    x, y = x[test_idx[:200]].double(), y[test_idx[:200]]
    target = (y + 1 + torch.arange(len(y)) % 9) % NUM_CLASSES  # never the true class
    res = build_attack(name, eps=0.15, targeted=True, **settings).perturb(model64, x, y, target=target)
    with torch.no_grad():
        pred = model64(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert float(res.success.double().mean()) > 1.0 / NUM_CLASSES


def test_per_sample_eps(model64, digits):
    x, y, _, test_idx = digits
    x, y = x[test_idx[:100]].double(), y[test_idx[:100]]
    eps = torch.tensor([0.0, 0.15], dtype=torch.float64).repeat(50)  # 0 for even points
    for name in ["pgd", "apgd-ce", "fgsm"]:
        res = build_attack(name, eps=eps).perturb(model64, x, y)
        assert torch.equal(res.x_adv[0::2], x[0::2])
        assert float((res.x_adv - x).abs().amax()) <= 0.15 + 1e-12
        assert bool(res.success[1::2].any())
    with pytest.raises(AttackError, match="per-sample eps"):
        build_attack("pgd", eps=torch.full((3,), 0.1)).perturb(model64, x, y)


def test_restarts_never_lose_an_earlier_success(model64, digits):
    x, y, _, test_idx = digits
    x, y = x[test_idx[:200]].double(), y[test_idx[:200]]
    one = build_attack("pgd", eps=0.08, steps=5, restarts=1, seed=3).perturb(model64, x, y)
    three = build_attack("pgd", eps=0.08, steps=5, restarts=3, seed=3).perturb(model64, x, y)
    assert bool((three.success | ~one.success).all())
    # The first restart is the same run, so its (first) adversarial examples are kept as is.
    assert torch.equal(three.x_adv[one.success], one.x_adv[one.success])
    assert int(three.success.sum()) > int(one.success.sum())


def test_already_misclassified_points_are_returned_unperturbed(model64, digits):
    x, y, _, test_idx = digits
    x, y = x[test_idx].double(), y[test_idx]
    with torch.no_grad():
        wrong = model64(x).argmax(1) != y
    assert bool(wrong.any())
    for name in ["pgd", "apgd-ce", "fgsm", "apgd-dlr"]:
        res = build_attack(name, eps=0.02, **({} if name == "fgsm" else {"steps": 5})).perturb(
            model64, x, y)
        assert bool(res.success[wrong].all())
        assert torch.equal(res.x_adv[wrong], x[wrong])


def test_dropping_fooled_points_does_not_change_the_others(model64, digits):
    """Each point's search is its own: the same points attacked in another batch end the same."""
    x, y, _, test_idx = digits
    x, y = x[test_idx[:150]].double(), y[test_idx[:150]]
    attack = build_attack("pgd", eps=0.1, steps=10, random_start=False)
    full = attack.perturb(model64, x, y)
    part = attack.perturb(model64, x[1::3], y[1::3])
    assert bool(full.success.any()) and bool((~full.success).any())
    assert torch.equal(part.success, full.success[1::3])
    assert torch.equal(part.x_adv, full.x_adv[1::3])


def test_reproducible_and_settings(model, digits):
    x, y, _, test_idx = digits
    x, y = x[test_idx[:100]], y[test_idx[:100]]
    a = build_attack("apgd-ce", eps=0.1, steps=20, seed=5).perturb(model, x, y)
    b = build_attack("apgd-ce", eps=0.1, steps=20, seed=5).perturb(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    s = build_attack("pgd", eps=0.1, steps=7).settings()
    assert s["alpha"] == pytest.approx(0.025)
    assert {k: s[k] for k in ["attack", "steps", "restarts", "random_start", "loss", "seed"]} == {
        "attack": "pgd", "steps": 7, "restarts": 1, "random_start": True, "loss": "ce", "seed": 0}
    assert build_attack("cw", eps=0.1).settings()["loss"] == "cw"
    t = build_attack("apgd-t", eps=0.1).settings()  # AutoAttack's APGD-T, as in the CLI
    assert (t["targeted"], t["loss"], t["steps"], t["rho"], t["top_k"]) == (False, "dlr", 100, 0.75, 9)


def test_works_under_no_grad_inference_mode_and_amp(model, digits):
    x, y, _, test_idx = digits
    x, y = x[test_idx[:100]], y[test_idx[:100]]
    ref = build_attack("pgd", eps=0.1, steps=5).perturb(model, x, y)
    with torch.no_grad():
        assert torch.equal(build_attack("pgd", eps=0.1, steps=5).perturb(model, x, y).x_adv,
                           ref.x_adv)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(build_attack("pgd", eps=0.1, steps=5).perturb(model, xi, yi).x_adv,
                           ref.x_adv)
    amp = build_attack("pgd", eps=0.1, steps=5, amp=True).perturb(model, x, y)
    with torch.no_grad():
        assert torch.equal(amp.success, model(amp.x_adv).argmax(1) != y)  # confirmed in fp32
    assert bool(amp.success.any())


def test_errors_are_one_line_attack_errors(model, digits):
    x, y, _, _ = digits
    x, y = x[:8], y[:8]
    assert "unknown attack" in one_line_error(lambda: build_attack("nope", eps=0.1))
    assert "pgd" in one_line_error(lambda: build_attack("nope", eps=0.1))
    assert "non-negative" in one_line_error(lambda: build_attack("pgd", eps=-0.1))
    assert "targeted" in one_line_error(
        lambda: build_attack("pgd", eps=0.1, targeted=True).perturb(model, x, y))
    assert "target" in one_line_error(
        lambda: build_attack("apgd-t", eps=0.1, targeted=True).perturb(model, x, y))
    assert "untargeted" in one_line_error(
        lambda: build_attack("apgd-t", eps=0.1).perturb(model, x, y, target=(y + 1) % 10))
    assert "batch_size" in one_line_error(
        lambda: build_attack("pgd", eps=0.1).perturb(model, x, y, batch_size=0))
    assert "seed" in one_line_error(
        lambda: build_attack("pgd", eps=0.1).perturb(model, x, y, seed="1"))
    assert "loss" in one_line_error(lambda: build_attack("pgd", eps=0.1, loss="mse"))
    assert "steps" in one_line_error(lambda: build_attack("apgd", eps=0.1, steps=0))
    assert "alpha" in one_line_error(lambda: build_attack("pgd", eps=0.1, alpha=-1.0))
    assert "random_start" in one_line_error(
        lambda: build_attack("pgd", eps=0.1, restarts=2, random_start=False))
    assert "has no option(s) loss" in one_line_error(lambda: build_attack("apgd-ce", eps=0.1, loss="dlr"))
    assert "target classes" in one_line_error(
        lambda: build_attack("pgd", eps=0.1, targeted=True).perturb(model, x, y, target=torch.full((8,), 12)))
    two = _cnn(num_classes=2).eval()
    y2 = y % 2
    assert "3 classes" in one_line_error(
        lambda: build_attack("apgd-dlr", eps=0.1).perturb(two, x, y2))
    three = _cnn(num_classes=3).eval()
    assert "4 classes" in one_line_error(
        lambda: build_attack("apgd-t", eps=0.1, targeted=True).perturb(three, x, y % 3, target=(y + 1) % 3))
    assert {"fgsm", "pgd", "cw", "apgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t",
            "square", "autoattack"} <= set(list_attacks())


def test_target_of_wrong_length_is_aone_line_error():
    from robustfair.errors import AttackError
    from robustfair.models import build_model

    model = build_model("mlp", num_classes=3, in_channels=1, image_size=8)
    attack = build_attack("pgd", eps=0.1, steps=2, targeted=True)
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(AttackError, match="one class per point"):
        attack.perturb(model, x, y, target=torch.tensor([1, 2]))


def test_eval_mode_restores_each_modules_own_mode_nested_and_after_errors():
    from robustfair.attacks import eval_mode

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Sequential(nn.BatchNorm1d(2)))
    model[1].eval()  # a mix: the dropout alone in eval mode
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
        with eval_mode(model):  # nested, as an attack inside an evaluation
            assert not any(m.training for m in model.modules())
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("an attack failed")
    assert [m.training for m in model.modules()] == before
    model.eval()
    with eval_mode(model):
        pass
    assert not any(m.training for m in model.modules())
