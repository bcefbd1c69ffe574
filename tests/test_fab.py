"""FAB / FAB-T: checked against the official FAB of AutoAttack and the attack contract.

The official implementation is ``FABAttack_PT`` of the ``pyautoattack`` 0.2.0 package (CI:
``pip install --no-deps pyautoattack==0.2.0``; it imports as ``autoattack`` from GitHub and as
``pyautoattack`` from PyPI). What matters is that ours is NOT WEAKER: on models trained here
on the digits (a small CNN and an MLP), its robust accuracy must not exceed the official's by
more than two standard errors of the point-level difference (sign test on the points where
the two disagree), nor, per class and averaged over three training seeds, by more than 2
points. Both run in float32 with the same settings (``targeted=True`` with 9 target classes
and 1 restart, as AutoAttack's standard suite runs FAB-T) and fewer steps than the default
100, for speed.
"""
from __future__ import annotations

import copy
import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

import robustfair as rf
from robustfair.attacks import build_attack
from robustfair.attacks._search import Search
from robustfair.attacks._random import PointRandom
from robustfair.attacks.fab import _project_l2, _project_linf, _random_start
from robustfair.errors import AttackError
from robustfair.models import build_model

from digits_model import train_mlp, train_small_cnn
from one_line import one_line_error

STEPS = 20       # both implementations, every comparison
EPS = {"linf": 0.1, "l2": 0.5}  # robust accuracy 20-50% on these models (at L2 1.0 it is ~0)
NUM_CLASSES = 10


def _official_fab():
    """The official FAB class, or skip the test with the reason."""
    for module in ("autoattack.fab_pt", "pyautoattack.fab_pt"):
        try:
            return importlib.import_module(module).FABAttack_PT
        except ImportError:
            continue
    pytest.skip("the official FAB does not import (pip install --no-deps pyautoattack==0.2.0)")


@pytest.fixture(scope="module")
def digits():
    ds = rf.load_dataset("digits")
    return ds, ds.test.x.float() / 255, ds.test.y


_MODELS: dict[tuple[str, int], nn.Module] = {}


def _model(ds, arch: str, seed: int) -> nn.Module:
    """The CNN (3 epochs) or MLP (10 epochs) trained from ``seed``, cached for the module."""
    if (arch, seed) not in _MODELS:
        train = train_small_cnn if arch == "cnn" else train_mlp
        _MODELS[arch, seed] = train(ds, epochs=3 if arch == "cnn" else 10, seed=seed)
    return _MODELS[arch, seed]


@pytest.fixture(scope="module")
def cnn(digits):
    return _model(digits[0], "cnn", 0)


def _robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def _official_robust(model, x, y, norm, eps, *, targeted=True, restarts=1):
    """Robust points under the official FAB (FAB-T as AutoAttack's standard suite sets it)."""
    official = _official_fab()(model, norm={"linf": "Linf", "l2": "L2"}[norm],
                               n_restarts=restarts, n_iter=STEPS, eps=eps, seed=0,
                               targeted=targeted, n_target_classes=9, device=x.device)
    x_adv = official.perturb(x, y)
    assert float(_size(x_adv - x, norm).max()) <= eps + 1e-5
    return _robust(model, x_adv, y)


def _sign_test(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[int, int, float]:
    """(points robust under ours only, under theirs only, z = (a - b) / sqrt(a + b))."""
    a, b = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    return a, b, (a - b) / math.sqrt(a + b) if a + b else 0.0


def _per_class(robust: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([float(robust[y == c].double().mean()) for c in range(NUM_CLASSES)])


# ---------------------------------------------------------------- the projections

def _random_problems(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    t[:, : d // 4] = (t[:, : d // 4] > 0.5).double()  # some coordinates on a box face
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[torch.rand(n, d, generator=g) < 0.2] = 0.0  # and some with no gradient
    # offsets from tiny (no coordinate hits the box) to large (the box stops the move)
    scale = torch.logspace(-3, 1, n, dtype=torch.float64) * w.abs().sum(1) / math.sqrt(d)
    b = (w * t).sum(1) + torch.randn(n, generator=g, dtype=torch.float64) * scale
    return t, w, b


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projections_are_the_smallest_move_to_the_hyperplane_in_the_box(norm):
    """Checked against scipy's solver of the same problem (independent of AutoAttack)."""
    optimize = pytest.importorskip("scipy.optimize")
    project = _project_linf if norm == "linf" else _project_l2
    t, w, b = _random_problems(40, 5, seed=1)
    d = project(t, w, b)
    x = t + d
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    reached = 0
    for i in range(len(t)):
        ti, wi, bi = t[i].numpy(), w[i].numpy(), float(b[i])
        bounds = list(zip(-ti, 1.0 - ti))
        # can the box reach the hyperplane at all? (the extreme values of <w, x> over the box)
        lo, hi = float(np.minimum(0, wi).sum()), float(np.maximum(0, wi).sum())
        if not lo <= bi <= hi:  # it cannot: every coordinate goes to the face toward it
            towards = np.sign(bi - ti @ wi) * np.sign(wi)
            want = np.where(towards > 0, 1.0 - ti, np.where(towards < 0, -ti, 0.0))
            assert np.allclose(d[i].numpy(), want)
            continue
        reached += 1
        assert abs(float(wi @ (ti + d[i].numpy())) - bi) < 1e-9
        if norm == "linf":  # min s subject to |d_j| <= s, <w, d> = b - <w, t>, d in the box
            res = optimize.linprog(np.r_[np.zeros(5), 1.0],
                                   A_ub=np.r_[np.c_[np.eye(5), -np.ones(5)],
                                              np.c_[-np.eye(5), -np.ones(5)]],
                                   b_ub=np.zeros(10), A_eq=np.r_[wi, 0.0][None],
                                   b_eq=[bi - ti @ wi], bounds=bounds + [(0, None)])
            best = res.fun
            ours = float(d[i].abs().max())
        else:
            r = bi - ti @ wi  # min |d|^2 subject to <w, d> = r, d in the box
            res = optimize.minimize(lambda v: v @ v, np.zeros(5), jac=lambda v: 2 * v,
                                    method="SLSQP", bounds=optimize.Bounds(-ti, 1.0 - ti),
                                    constraints=[optimize.LinearConstraint(wi[None], r, r)],
                                    options={"ftol": 1e-15})
            best = math.sqrt(res.fun)
            ours = float(d[i].norm())
        assert res.success
        assert ours <= best + 1e-6
    assert 10 < reached < len(t)  # both cases were tried


@pytest.mark.slow  # against the official AutoAttack
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projections_match_the_official_ones(norm):
    official = pytest.importorskip("pyautoattack.fab_projections") if importlib.util.find_spec(
        "autoattack") is None else importlib.import_module("autoattack.fab_projections")
    theirs = official.projection_linf if norm == "linf" else official.projection_l2
    ours = _project_linf if norm == "linf" else _project_l2
    for d in (2, 64, 3072):
        t, w, b = _random_problems(100, d, seed=d)
        assert torch.allclose(ours(t, w, b), theirs(t.clone(), w.clone(), b.clone()), atol=1e-10)


# ---------------------------------------------------------------- against the official FAB

_RESULTS: dict[tuple[str, str, int], tuple[torch.Tensor, torch.Tensor]] = {}
POINTS = 200  # the first 200 test digits


def _robust_both(ds, x, y, arch: str, norm: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust points under our FAB-T and the official one on the model ``arch`` from ``seed``
    (cached: the per-class test reuses the seed-0 runs of the overall one)."""
    if (arch, norm, seed) not in _RESULTS:
        model, eps = _model(ds, arch, seed), EPS[norm]
        theirs = _official_robust(model, x, y, norm, eps)
        res = build_attack("fab-t", eps=eps, norm=norm, steps=STEPS).perturb(model, x, y)
        _RESULTS[arch, norm, seed] = ~res.success, theirs
    return _RESULTS[arch, norm, seed]


@pytest.mark.slow  # against the official AutoAttack
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_fab_t_not_weaker_than_official(digits, arch, norm):
    ds, x, y = digits
    ours, theirs = _robust_both(ds, x[:POINTS], y[:POINTS], arch, norm, 0)
    assert 0.05 < float(theirs.double().mean()) < 0.9  # something to find, something left
    a, b, z = _sign_test(ours, theirs)
    print(f"\nfab-t {arch} {norm} eps={EPS[norm]}: robust ours {float(ours.double().mean()):.4f} "
          f"official {float(theirs.double().mean()):.4f}; robust under ours only {a}, "
          f"official only {b} (z = {z:.2f})")
    assert z <= 2.0


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_fab_t_per_class_not_weaker_than_official_over_three_seeds(digits, arch, norm):
    ds, x, y = digits
    x, y = x[:POINTS], y[:POINTS]
    gaps, a_all, b_all, overall = [], 0, 0, []
    for seed in (0, 1, 2):  # three trained models
        ours, theirs = _robust_both(ds, x, y, arch, norm, seed)
        overall.append(f"{float(ours.double().mean()):.3f}/{float(theirs.double().mean()):.3f}")
        gaps.append(_per_class(ours, y) - _per_class(theirs, y))
        a, b, _ = _sign_test(ours, theirs)
        a_all, b_all = a_all + a, b_all + b
    gap = np.mean(gaps, axis=0)
    print(f"\nfab-t {arch} {norm} eps={EPS[norm]}, 3 seeds: robust ours/official "
          f"{', '.join(overall)}; per-class robust accuracy, ours - "
          f"official, mean over seeds: max {gap.max():+.4f}, min {gap.min():+.4f}; robust under "
          f"ours only {a_all}, official only {b_all}")
    assert gap.max() <= 0.02
    assert a_all - b_all <= 2.0 * math.sqrt(a_all + b_all)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_fab_not_weaker_than_official(digits, cnn, norm):
    _, x, y = digits
    x, y, eps = x[:POINTS], y[:POINTS], EPS[norm]
    theirs = _official_robust(cnn, x, y, norm, eps, targeted=False, restarts=2)
    ours = ~build_attack("fab", eps=eps, norm=norm, steps=STEPS, restarts=2).perturb(
        cnn, x, y).success
    assert 0.05 < float(theirs.double().mean()) < 0.9
    a, b, z = _sign_test(ours, theirs)
    print(f"\nfab {norm} eps={eps}: robust ours {float(ours.double().mean()):.4f} official "
          f"{float(theirs.double().mean()):.4f}; ours only {a}, official only {b}")
    assert z <= 2.0


# ---------------------------------------------------------------- the contract

class _Rows(nn.Module):
    """Wraps a model and counts the rows of every forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.inner(x)


@pytest.mark.parametrize("name", ["fab-t", "fab"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_in_ball_and_box_and_success_is_misclassification(digits, cnn, name, norm):
    _, x, y = digits
    x, y, eps = x[:120], y[:120], EPS[norm]
    res = build_attack(name, eps=eps, norm=norm, steps=10).perturb(cnn, x, y)
    assert float(_size(res.x_adv - x, norm).max()) <= eps + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        pred = cnn(res.x_adv).argmax(1)
    assert torch.equal(res.pred, pred)
    assert torch.equal(res.success, pred != y)
    assert bool(res.success.any()) and bool((~res.success).any())
    assert torch.equal(res.x_adv[~res.success], x[~res.success])  # robust: the clean image


def test_clean_misclassified_points_come_back_unchanged(digits, cnn):
    _, x, y = digits
    with torch.no_grad():
        wrong = cnn(x).argmax(1) != y
    assert bool(wrong.any())
    res = build_attack("fab-t", eps=0.05, steps=5).perturb(cnn, x[:200], y[:200])
    assert bool(res.success[wrong[:200]].all())
    assert torch.equal(res.x_adv[wrong[:200]], x[:200][wrong[:200]])


def test_per_sample_eps(digits, cnn):
    _, x, y = digits
    x, y = x[:100], y[:100]
    eps = torch.tensor([0.0, 0.15]).repeat(50)  # 0 pins the even points to their clean image
    res = build_attack("fab-t", eps=eps, steps=10).perturb(cnn, x, y)
    assert torch.equal(res.x_adv[0::2], x[0::2])
    assert float((res.x_adv - x).abs().amax()) <= 0.15 + 1e-7
    assert bool(res.success[1::2].any())


def test_early_exit_broken_points_leave_steps_and_target_classes(digits, cnn):
    _, x, y = digits
    x, y, steps = x[:60], y[:60], 8
    with torch.no_grad():
        correct = int((cnn(x).argmax(1) == y).sum())

    def rows(eps: float, top_k: int) -> tuple[int, torch.Tensor]:
        model = _Rows(cnn)
        res = build_attack("fab-t", eps=eps, steps=steps, top_k=top_k).perturb(model, x, y)
        return model.rows - len(x), res.success  # less the clean pass

    # eps 0: nobody is ever broken, so every point runs every step toward all 9 classes
    rows_zero, _ = rows(0.0, 9)
    assert rows_zero >= 9 * (steps + 1) * correct
    # a large eps: each point is broken within its first steps, and its nine runs (one per
    # class, run at once) all leave with it: a fraction of the full budget
    rows_big, broken = rows(0.3, 9)
    assert bool(broken.all())
    assert rows_big < rows_zero / 5
    # nine classes at once: a point's runs move in step and stop at its first success, so no
    # point costs more than nine times its run toward the first class alone (no padding on
    # the CPU), and every point that run breaks is broken
    rows_one, broken_one = rows(0.1, 1)
    rows_nine, broken_nine = rows(0.1, 9)
    left = int((~broken_one).sum())
    assert 0 < left < correct and bool((broken_nine | ~broken_one).all())
    assert rows_nine <= 9 * rows_one


def test_each_points_search_is_its_own_batch_size_and_clean_logits(digits, cnn):
    """In pieces of 16 points, or given the clean logits, the same points fall (float64)."""
    _, x, y = digits
    model = copy.deepcopy(cnn).double()
    x, y = x[:64].double(), y[:64]
    attack = build_attack("fab-t", eps=0.1, steps=8)
    whole = attack.perturb(model, x, y)
    with torch.no_grad():
        logits = model(x)
    pieces = attack.perturb(model, x, y, batch_size=16, clean_logits=logits)
    assert bool(whole.success.any()) and bool((~whole.success).any())
    assert torch.equal(pieces.success, whole.success)
    assert torch.allclose(pieces.x_adv, whole.x_adv, atol=1e-9)


def test_reproducible_with_a_seed(digits, cnn):
    _, x, y = digits
    x, y = x[:80], y[:80]
    attack = build_attack("fab", eps=0.1, steps=5, restarts=3, seed=4)  # random restarts
    a, b = attack.perturb(cnn, x, y), attack.perturb(cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    # restarts start eps/2 from x0 in a direction drawn from the attack's own generator
    x0, eps = torch.full((4, 64), 0.5), torch.full((4, 1), 0.2)
    draws = [_random_start(x0, eps, norm, PointRandom(s, torch.arange(4)).at(None, "fab"))
             for norm in ("linf", "l2") for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.allclose((draws[0] - x0).abs().amax(1), torch.tensor(0.1))
    assert torch.allclose((draws[3] - x0).norm(dim=1), torch.tensor(0.1))


def test_works_under_no_grad_inference_mode_and_amp(digits, cnn):
    _, x, y = digits
    x, y = x[:60], y[:60]
    ref = build_attack("fab-t", eps=0.1, steps=5).perturb(cnn, x, y)
    with torch.no_grad():
        assert torch.equal(build_attack("fab-t", eps=0.1, steps=5).perturb(cnn, x, y).x_adv,
                           ref.x_adv)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(build_attack("fab-t", eps=0.1, steps=5).perturb(cnn, xi, yi).x_adv,
                           ref.x_adv)
    assert bool(ref.success.any())
    # amp (bfloat16 on CPU): a success must hold in full precision
    amp = build_attack("fab-t", eps=0.1, steps=5, amp=True).perturb(cnn, x, y)
    with torch.no_grad():
        assert torch.equal(amp.success, cnn(amp.x_adv).argmax(1) != y)
    assert float((amp.x_adv - x).abs().amax()) <= 0.1 + 1e-7


def test_settings_are_autoattacks_and_fewer_classes_use_all_others():
    s = build_attack("fab-t", eps=8 / 255).settings()
    assert {k: s[k] for k in ["attack", "norm", "targeted", "steps", "restarts", "top_k",
                              "alpha_max", "eta", "beta", "seed"]} == {
        "attack": "fab-t", "norm": "linf", "targeted": False, "steps": 100, "restarts": 1,
        "top_k": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9, "seed": 0}
    assert "loss" not in s and "top_k" not in build_attack("fab", eps=0.1).settings()
    # 4 classes: the 3 others, best first
    model = build_model("mlp", num_classes=4, in_channels=1, image_size=8, hidden=[16]).eval()
    x = torch.rand(6, 1, 8, 8)
    search = Search(model, x, torch.zeros(6, dtype=torch.long), None, loss="ce", amp=False)
    targets = build_attack("fab-t", eps=0.1)._targets(search)
    ranked = search.clean_logits.argsort(dim=1, descending=True)
    assert len(targets) == 3 and torch.equal(torch.stack(targets, 1), ranked[:, 1:])


def test_bad_settings_are_one_line_errors(digits, cnn):
    _, x, y = digits
    x, y = x[:8], y[:8]
    assert "steps" in one_line_error(lambda: build_attack("fab-t", eps=0.1, steps=0))
    assert "restarts" in one_line_error(lambda: build_attack("fab", eps=0.1, restarts=0))
    assert "top_k" in one_line_error(lambda: build_attack("fab-t", eps=0.1, top_k=0))
    assert "alpha_max" in one_line_error(lambda: build_attack("fab-t", eps=0.1, alpha_max=1.5))
    assert "beta" in one_line_error(lambda: build_attack("fab-t", eps=0.1, beta=0.0))
    assert "eta" in one_line_error(lambda: build_attack("fab-t", eps=0.1, eta=0.5))
    assert "eta" in one_line_error(lambda: build_attack("fab-t", eps=0.1, eta=float("inf")))
    assert "norm" in one_line_error(lambda: build_attack("fab-t", eps=0.1, norm="l1"))
    assert "non-negative" in one_line_error(lambda: build_attack("fab-t", eps=-1.0))
    assert "has no option(s) loss" in one_line_error(lambda: build_attack("fab-t", eps=0.1, loss="ce"))
    assert "untargeted" in one_line_error(
        lambda: build_attack("fab-t", eps=0.1).perturb(cnn, x, y, target=y))
    two = build_model("mlp", num_classes=2, in_channels=1, image_size=8, hidden=[8]).eval()
    assert "3 classes" in one_line_error(
        lambda: build_attack("fab-t", eps=0.1).perturb(two, x, y % 2))
    assert build_attack("fab", eps=0.1, steps=2).perturb(two, x, y % 2).x_adv.shape == x.shape
