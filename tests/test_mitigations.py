"""Mechanism tests of the class-gap mitigations: each checks what the method does to weights,
margins, radii or the loss on a constructed case, against a direct computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustfair.errors import ConfigError
from robustfair.training import checkpoint as ckpt
from robustfair.training.mitigations import (EpochStats, MitigationContext, MitigationStack,
                                             build_mitigation, list_mitigations)
from robustfair.training.objectives import OBJECTIVES
from robustfair.training.objectives._base import with_offsets

K = 4
NAMES = ["cat", "dog", "owl", "eel"]


def ctx(beta=None, **kw) -> MitigationContext:
    base = dict(num_classes=K, classes=NAMES, eps=0.2, objective="pgd_at", epochs=10, seed=3)
    base.update(kw)
    # as the trainer builds it: the objective says whether its robust term is beta-weighted
    base.setdefault("beta_weighted", OBJECTIVES.get(base["objective"]).beta_weighted)
    c = MitigationContext(**base)
    if beta is not None:  # the run's TRADES beta, read with getattr (see _common.trades_beta)
        c.beta = beta
    return c


def stats(robust, clean=None, counts=None, epoch=1) -> EpochStats:
    robust = torch.tensor(robust, dtype=torch.float32)
    clean = torch.ones_like(robust) if clean is None else torch.tensor(clean, dtype=torch.float32)
    counts = torch.full((len(robust),), 10) if counts is None else torch.tensor(counts)
    return EpochStats(epoch, clean, robust, 1 - clean, clean - robust, counts)


def built(name, c=None, **options):
    m = build_mitigation(name, **options)
    m.setup(c or ctx())
    return m


def roundtrip(m, name, c=None, **options):
    """The state through the trainer's checkpoint format (tensors split out), into a fresh one."""
    tensors, tree = ckpt.split_tensors(m.state_dict(), "m")
    fresh = built(name, c, **options)
    fresh.load_state_dict(ckpt.join_tensors(tree, {k: v.clone() for k, v in tensors.items()}))
    return fresh


def test_registry_lists_every_mitigation():
    assert {"adaptive_weight", "resample", "focal", "cb_loss", "ldam", "logit_adjust",
            "class_eps", "frl", "cfa", "fat", "dafa", "targeted_at",
            "class_weight"} <= set(list_mitigations())


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="no option"):
        build_mitigation("ldam", margin=3)
    with pytest.raises(ConfigError, match="no option"):
        build_mitigation("fat", lamda=3)


# ----------------------------------------------------------------------------- adaptive weights
def test_adaptive_weight_moves_plus_minus_step():
    m = built("adaptive_weight")
    assert m.class_weights().tolist() == [1, 1, 1, 1]
    m.end_epoch(stats([0.2, 0.5, 0.7, 0.6]))  # mean 0.5: classes 0 and 1 are at or below
    assert m.class_weights().tolist() == pytest.approx([1.05, 1.05, 0.95, 0.95])
    m.end_epoch(stats([0.9, 0.1, 0.1, 0.1]))  # mean 0.3: only class 0 is above
    assert m.class_weights().tolist() == pytest.approx([1.0, 1.1, 1.0, 1.0])


def test_adaptive_weight_by_clean_and_floor_and_absent_class():
    m = built("adaptive_weight", by="clean", step=0.4, floor=0.1)
    # robust says class 3 is worst, clean says class 0 is: "by=clean" must follow clean
    m.end_epoch(stats([0.9, 0.9, 0.9, 0.1], clean=[0.1, 0.9, 0.9, 0.9]))
    assert m.class_weights().tolist() == pytest.approx([1.4, 0.6, 0.6, 0.6])
    m.end_epoch(stats([0.9] * 4, clean=[0.1, 0.9, 0.9, 0.9]))
    m.end_epoch(stats([0.9] * 4, clean=[0.1, 0.9, 0.9, 0.9]))
    assert m.class_weights().tolist() == pytest.approx([2.2, 0.1, 0.1, 0.1])  # floored
    m.end_epoch(stats([0.9] * 4, clean=[0.1, 0.9, 0.9, 0.9], counts=[10, 10, 10, 0]))
    assert m.class_weights()[3].item() == pytest.approx(0.1)  # absent: untouched


def test_adaptive_weight_state_round_trip():
    m = built("adaptive_weight")
    m.end_epoch(stats([0.1, 0.5, 0.9, 0.9]))
    again = roundtrip(m, "adaptive_weight")
    assert torch.equal(again.class_weights(), m.class_weights())
    for s in (m, again):
        s.end_epoch(stats([0.9, 0.1, 0.9, 0.9]))
    assert torch.equal(again.class_weights(), m.class_weights())


# ----------------------------------------------------------------------------- resampling
def test_resample_balances_class_probabilities():
    counts = torch.tensor([10, 40, 100, 50])
    m = built("resample", ctx(class_counts=counts))
    w = m.sample_weights()
    per_class_mass = counts * w  # probability of drawing class c ∝ n_c · s_c
    assert (per_class_mass / per_class_mass.sum()).tolist() == pytest.approx([0.25] * 4)
    # the trainer draws with torch.multinomial(s[y]); the empirical class shares agree
    y = torch.repeat_interleave(torch.arange(K), counts)
    g = torch.Generator().manual_seed(0)
    draws = y[torch.multinomial(w[y], 40_000, replacement=True, generator=g)]
    assert (torch.bincount(draws) / 40_000).tolist() == pytest.approx([0.25] * 4, abs=0.01)


def test_resample_robust_error_oversamples_non_robust_classes():
    m = built("resample", prior="robust_error")
    assert m.class_probabilities().tolist() == pytest.approx([0.25] * 4)  # before any epoch
    acc = [0.8, 0.4, 0.2, 0.8]
    m.end_epoch(stats(acc))
    inv = torch.tensor([1 / a for a in acc])
    assert m.class_probabilities().tolist() == pytest.approx((inv / inv.sum()).tolist())
    assert "robust_error" in m.describe()
    assert roundtrip(m, "resample", prior="robust_error").class_probabilities().tolist() == \
        pytest.approx(m.class_probabilities().tolist())


def test_robust_error_prior_floors_zero_accuracy():
    m = built("resample", prior="robust_error")
    m.end_epoch(stats([0.0, 1.0, 1.0, 1.0]))
    p = m.class_probabilities()
    assert torch.isfinite(p).all() and p[0] / p[1] == pytest.approx(1 / 0.05)


# ----------------------------------------------------------------------------- focal
def focal_reference(logits, y, gamma):
    p = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return -((1 - p) ** gamma) * torch.log(p)


def test_focal_equals_ce_at_gamma_zero_and_the_formula_otherwise():
    logits = torch.randn(32, K) * 3
    y = torch.randint(0, K, (32,))
    ce = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(built("focal", gamma=0).loss(logits, y, ce), ce)
    out = built("focal", gamma=2).loss(logits, y, ce)
    assert torch.allclose(out, focal_reference(logits, y, 2.0), atol=1e-6)


def test_focal_down_weights_easy_points_and_keeps_the_gradient():
    logits = torch.tensor([[6.0, 0, 0, 0], [0.5, 0, 0, 0]], requires_grad=True)
    y = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, y, reduction="none")
    ratio = built("focal", gamma=2).loss(logits, y, ce) / ce
    assert ratio[0] < 0.01 < 0.3 < ratio[1] < 1  # the easy point is nearly silenced
    built("focal", gamma=2).loss(logits, y, ce).sum().backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    focal_reference(ref_logits, y, 2.0).sum().backward()
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-6)


def test_focal_under_trades_modulates_only_the_ce_term():
    logits = torch.randn(8, K)
    y = torch.randint(0, K, (8,))
    ce = F.cross_entropy(logits, y, reduction="none")
    kl_part = torch.rand(8)
    out = built("focal", gamma=2).loss(logits, y, ce + kl_part)
    assert torch.allclose(out, focal_reference(logits, y, 2.0) + kl_part, atol=1e-6)


def test_focal_alpha_from_prior():
    counts = torch.tensor([10, 20, 40, 80])
    assert built("focal").class_weights() is None  # prior=none: plain focal
    w = built("focal", ctx(class_counts=counts), prior="frequency").class_weights()
    expected = (1 / counts.float()) / (1 / counts.float()).mean()
    assert w.tolist() == pytest.approx(expected.tolist())


# ----------------------------------------------------------------------------- CB loss
def test_class_balanced_weights_formula():
    counts = [5, 50, 500, 5000]
    beta = 0.999
    m = built("cb_loss", ctx(class_counts=torch.tensor(counts)), beta=beta)
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [r * K / sum(raw) for r in raw]
    assert m.class_weights().tolist() == pytest.approx(expected, rel=1e-5)
    assert m.class_weights().sum().item() == pytest.approx(K)
    assert built("cb_loss", ctx(class_counts=torch.tensor(counts)), beta=0).class_weights() \
        .tolist() == pytest.approx([1.0] * K)
    # balanced data: uniform; default beta 0.9999
    assert built("cb_loss").class_weights().tolist() == pytest.approx([1.0] * K)


def test_cb_loss_robust_error_prior_uses_effective_counts():
    counts = torch.tensor([100, 100, 100, 100])
    m = built("cb_loss", ctx(class_counts=counts), beta=0.99, prior="robust_error")
    m.end_epoch(stats([0.2, 0.9, 0.9, 0.9]))
    n = [100 * 0.2, 90, 90, 90]
    raw = [(1 - 0.99) / (1 - 0.99 ** v) for v in n]
    assert m.class_weights().tolist() == pytest.approx([r * K / sum(raw) for r in raw], rel=1e-5)
    assert m.class_weights()[0] > m.class_weights()[1]
    with pytest.raises(ConfigError, match="beta"):
        build_mitigation("cb_loss", beta=1.0)


# ----------------------------------------------------------------------------- LDAM
def test_ldam_margins_inverse_to_counts_and_true_logit_lowered():
    counts = torch.tensor([1000, 10, 100, 1])
    m = built("ldam", ctx(class_counts=counts))
    margins = m.margins()
    expected = counts.float() ** -0.25
    expected = expected * 0.5 / expected.max()
    assert margins.tolist() == pytest.approx(expected.tolist())
    order = torch.argsort(margins)
    assert order.tolist() == torch.argsort(counts, descending=True).tolist()
    assert margins.max().item() == pytest.approx(0.5)
    # through the stack and the objectives' offset rule: only the true-class logit moves, by s·Delta_y
    stack = MitigationStack([m])
    stack.setup(ctx(class_counts=counts))
    z = torch.randn(6, K)
    y = torch.tensor([0, 1, 2, 3, 3, 1])
    shifted = with_offsets(z, y, stack.logit_offsets())
    diff = z - shifted
    onehot = F.one_hot(y, K).bool()
    assert torch.allclose(diff[onehot], 30 * margins[y])
    assert torch.all(diff[~onehot] == 0)
    # the resulting loss is the paper's CE(s·(cos - Delta)) with the logits standing in for s·cos
    ref = F.cross_entropy(z - 30 * margins[y][:, None] * onehot, y)
    assert F.cross_entropy(shifted, y).item() == pytest.approx(ref.item(), rel=1e-6)


def test_ldam_robust_error_prior_gives_larger_margin_to_less_robust_class():
    m = built("ldam", prior="robust_error", s=1)
    assert m.margins().tolist() == pytest.approx([0.5] * K)  # balanced, before any epoch
    m.end_epoch(stats([0.9, 0.3, 0.6, 0.9]))
    marg = m.margins()
    assert marg[1] == pytest.approx(0.5) and marg[1] > marg[2] > marg[0]
    assert marg[0] == pytest.approx(0.5 * (0.9 / 0.3) ** -0.25)


# ----------------------------------------------------------------------------- logit adjustment
def test_logit_adjust_equals_tau_log_prior():
    counts = torch.tensor([10, 30, 60, 100])
    m = built("logit_adjust", ctx(class_counts=counts), tau=1.5)
    prior = counts.float() / counts.sum()
    assert m.logit_offsets().tolist() == pytest.approx((1.5 * torch.log(prior)).tolist())
    # balanced data: a constant shift, the loss is unchanged
    z = torch.randn(5, K)
    y = torch.randint(0, K, (5,))
    balanced = built("logit_adjust").logit_offsets()
    assert F.cross_entropy(z + balanced, y).item() == pytest.approx(F.cross_entropy(z, y).item())


def test_logit_adjust_robust_error_prior():
    m = built("logit_adjust", prior="robust_error")
    acc = torch.tensor([0.8, 0.2, 0.4, 0.8])
    m.end_epoch(stats(acc.tolist()))
    assert m.logit_offsets().tolist() == pytest.approx(torch.log(acc / acc.sum()).tolist(),
                                                       rel=1e-5)
    assert "prior=robust_error" in m.describe()


# ----------------------------------------------------------------------------- per-class eps
def test_class_eps_fixed_map_by_name_and_index():
    m = built("class_eps", eps="cat:0.1;2:8/255")
    assert m.class_eps().tolist() == pytest.approx([0.1, 0.2, 8 / 255, 0.2])
    m = built("class_eps", eps={"dog": 0.05})
    assert m.class_eps().tolist() == pytest.approx([0.2, 0.05, 0.2, 0.2])
    with pytest.raises(ConfigError, match="unknown class 'lion'"):
        built("class_eps", eps="lion:0.1")
    with pytest.raises(ConfigError, match=">= 0"):
        build_mitigation("class_eps", eps="cat:-0.1")
    with pytest.raises(ConfigError, match="either"):
        build_mitigation("class_eps", eps="cat:0.1", adaptive=True)


def test_class_eps_adaptive_gives_smaller_eps_to_higher_robust_error():
    m = built("class_eps", adaptive="true")
    assert m.class_eps().tolist() == pytest.approx([0.2] * K)
    m.end_epoch(stats([0.2, 0.6, 0.8, 0.6]))  # errors 0.8, 0.4, 0.2, 0.4; mean 0.45
    expected = [0.2 * (1 - (e - 0.45)) for e in (0.8, 0.4, 0.2, 0.4)]
    assert m.class_eps().tolist() == pytest.approx(expected)
    m.end_epoch(stats([0.0, 1.0, 1.0, 1.0]))  # scales 0.25 and 1.25: clipped to [0.5, 1.5]
    assert m.class_eps().tolist() == pytest.approx([0.1, 0.25, 0.25, 0.25])
    assert roundtrip(m, "class_eps", adaptive=True).class_eps().tolist() == \
        pytest.approx(m.class_eps().tolist())


# ----------------------------------------------------------------------------- FRL
def frl_stats(nat, bnd):
    nat, bnd = torch.tensor(nat), torch.tensor(bnd)
    return EpochStats(1, 1 - nat, 1 - nat - bnd, nat, bnd, torch.full((K,), 10))


def test_frl_multipliers_grow_for_classes_violating_the_tolerance():
    m = built("frl", mode="rwrm", tau=0.05)
    m.end_epoch(frl_stats([0.30, 0.10, 0.10, 0.10], [0.10, 0.40, 0.10, 0.20]))
    # natural: mean 0.15 -> violations 0.10, -0.10, ...; boundary: mean 0.2 -> -0.15, 0.15, -0.15, -0.05
    assert m.lam_nat.tolist() == pytest.approx([0.05 * 0.10, 0, 0, 0])
    assert m.lam_bnd.tolist() == pytest.approx([0, 2 * 0.05 * 0.15, 0, 0])
    assert m.lam_rm.tolist() == pytest.approx([0.1 * v for v in (-0.15, 0.15, -0.15, -0.05)])
    w_nat, w_bnd = m.natural_weights(), m.boundary_weights()
    assert w_nat.tolist() == pytest.approx([1 + K * 0.005 - 0.005, 1 - 0.005, 1 - 0.005,
                                            1 - 0.005])
    assert w_nat.mean().item() == pytest.approx(1.0) and w_bnd.argmax().item() == 1
    # pgd_at: one adversarial term gets the average weight
    assert m.class_weights().tolist() == pytest.approx((0.5 * (w_nat + w_bnd)).tolist())
    # re-margin: the class with too much boundary error is attacked with a larger radius
    eps = m.class_eps()
    assert eps[1] > 0.2 and eps[1].item() == pytest.approx(0.2 * math.exp(2 * 0.015))
    assert eps[0].item() == pytest.approx(0.2 * 0.98)  # shrinking is clipped at 0.98


def test_frl_keeps_multipliers_on_the_bounded_set():
    m = built("frl", mode="rw", tau=0.0, alpha_rw=10.0)
    m.end_epoch(frl_stats([0.9, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]))
    assert m.lam_nat.sum().item() == pytest.approx(0.5)  # rescaled to lim
    assert (m.natural_weights() > 0).all() and m.class_eps() is None


def test_frl_under_trades_weights_the_two_terms_separately():
    m = built("frl", ctx(objective="trades", beta=2.0), mode="rw", tau=0.0)
    m.end_epoch(frl_stats([0.3, 0.1, 0.1, 0.1], [0.1, 0.3, 0.1, 0.1]))
    w, beta = m.class_weights(), m.class_beta()
    # loss weight w_nat on CE + beta_c·KL: the KL term carries beta·w_bnd per class
    assert (w * beta).tolist() == pytest.approx((2.0 * m.boundary_weights()).tolist())
    assert w.tolist() == pytest.approx(m.natural_weights().tolist())


def test_frl_tolerance_out_of_range_is_a_one_line_config_error():
    for bad in (1.0, -0.1, "1.5", "x"):
        with pytest.raises(ConfigError) as info:
            build_mitigation("frl", tau=bad)
        assert "\n" not in str(info.value) and "tau" in str(info.value)
    with pytest.raises(ConfigError, match="mode"):
        build_mitigation("frl", mode="rx")


def test_frl_state_round_trip():
    m = built("frl")
    m.end_epoch(frl_stats([0.3, 0.1, 0.1, 0.1], [0.1, 0.3, 0.1, 0.1]))
    again = roundtrip(m, "frl")
    assert torch.equal(again.class_eps(), m.class_eps())
    assert torch.equal(again.class_weights(), m.class_weights())


# ----------------------------------------------------------------------------- CFA
def feed_train_robust(m, correct_per_class):
    """One 'epoch' of adversarial logits: class c has the given robust fraction (of 10)."""
    ys, logits = [], []
    for c, frac in enumerate(correct_per_class):
        for i in range(10):
            ok = i < round(frac * 10)
            pred = c if ok else (c + 1) % K
            ys.append(c)
            logits.append(F.one_hot(torch.tensor(pred), K).float() * 5)
    y, z = torch.tensor(ys), torch.stack(logits)
    m.loss(z, y, torch.zeros(len(y)), logits_adv=z)


def test_cfa_ccm_and_ccr_follow_train_robust_accuracy():
    c = ctx(objective="trades", beta=6.0, epochs=20)
    m = built("cfa", c, fawa=False)
    assert m.begin == 1
    assert m.class_eps().tolist() == pytest.approx([0.2] * K)  # before calibration
    feed_train_robust(m, [0.2, 0.5, 0.8, 1.0])
    m.end_epoch(stats([0.9] * K))  # validation is not what CCM uses
    r = torch.tensor([0.2, 0.5, 0.8, 1.0])
    assert m.class_eps().tolist() == pytest.approx(((0.5 + r) * 0.2).tolist())
    beta_c = (0.5 + r) * 6.0
    assert m.class_beta().tolist() == pytest.approx(beta_c.tolist())
    assert m.class_weights().tolist() == pytest.approx((7.0 / (1 + beta_c)).tolist())
    # per class, w·(CE + beta_c·KL) is CFA's (1-b)·CE + b·KL up to the constant 1 + beta
    b = beta_c / (1 + beta_c)
    ce, kl = torch.rand(K), torch.rand(K)
    ours = m.class_weights() * (ce + m.class_beta() * kl)
    assert (ours / ((1 - b) * ce + b * kl)).tolist() == pytest.approx([7.0] * K, rel=1e-5)


def test_cfa_waits_for_warmup_and_drops_ccr_outside_trades():
    m = built("cfa", ctx(epochs=200), fawa=False)
    assert m.begin == 10
    for _ in range(9):
        feed_train_robust(m, [0.2, 0.5, 0.8, 1.0])
        m.end_epoch(stats([0.9] * K))
    assert m.class_eps().tolist() == pytest.approx([0.2] * K)
    feed_train_robust(m, [0.2, 0.5, 0.8, 1.0])
    m.end_epoch(stats([0.9] * K))
    assert m.class_eps()[0].item() == pytest.approx(0.7 * 0.2)
    assert m.class_beta() is None and m.class_weights() is None  # pgd_at: no KL term


def test_cfa_fawa_averages_only_accepted_epochs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    m = built("cfa", ctx(epochs=3), ccm=False, ccr=False, decay=0.5, threshold=0.3)

    def epoch(value, worst):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        m.after_step(model)
        m.end_epoch(stats([worst, 0.9, 0.9, 0.9]))

    epoch(1.0, 0.5)   # accepted: copied
    assert m.eval_model() is None  # the trained weights are evaluated until the last epoch
    epoch(3.0, 0.1)   # rejected: worst class below the threshold
    epoch(5.0, 0.4)   # accepted: 0.5·1 + 0.5·5
    avg = m.eval_model()
    assert avg is not None and avg is not model
    assert torch.allclose(avg[0].weight, torch.full((2, 3), 3.0))
    assert m.accepted_epochs == 2
    # round trip: the averaged weights survive a resume
    again = roundtrip(m, "cfa", ctx(epochs=3), ccm=False, ccr=False, decay=0.5, threshold=0.3)
    again.after_step(model)
    assert torch.allclose(again.eval_model()[0].weight, avg[0].weight)


# ----------------------------------------------------------------------------- FAT
def test_fat_regulariser_equals_variance_of_classwise_mean_losses():
    torch.manual_seed(1)
    logits_adv = torch.randn(20, K, requires_grad=True)
    y = torch.tensor([0, 1, 2] * 6 + [0, 1])  # class 3 absent
    per_sample = F.cross_entropy(logits_adv, y, reduction="none")
    out = built("fat", lam=0.7).loss(logits_adv, y, per_sample, logits_adv=logits_adv)
    means = torch.stack([per_sample[y == c].mean() for c in range(3)])
    expected = per_sample.mean() + 0.7 * torch.var(means)
    assert out.dim() == 0 and out.item() == pytest.approx(expected.item(), rel=1e-6)
    out.backward()
    assert logits_adv.grad is not None and torch.isfinite(logits_adv.grad).all()
    # class weights are honoured in the main term; one class only: no regulariser
    w = torch.rand(20)
    out = built("fat", **{"lambda": 1.0}).loss(logits_adv, y, per_sample.detach(), weights=w,
                                               logits_adv=logits_adv.detach())
    ref = (w * per_sample).sum() / w.sum() + torch.var(means)
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    single = built("fat", lam=5.0).loss(logits_adv[:3], torch.zeros(3, dtype=torch.long),
                                        per_sample[:3])
    assert single.item() == pytest.approx(per_sample[:3].mean().item())


def test_fat_uses_adversarial_ce_under_trades():
    logits_adv, logits = torch.randn(12, K), torch.randn(12, K)
    y = torch.arange(12) % K
    per_sample = torch.rand(12)  # TRADES' CE + beta·KL
    out = built("fat", lam=1.0).loss(logits, y, per_sample, logits_adv=logits_adv)
    ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
    means = torch.stack([ce_adv[y == c].mean() for c in range(K)])
    assert out.item() == pytest.approx((per_sample.mean() + means.var()).item(), rel=1e-6)


# ----------------------------------------------------------------------------- DAFA
def dafa_loop(p, lam):
    """The rule written as in the paper's pseudo-code (Algorithm 2), pair by pair."""
    k = len(p)
    w = [1.0] * k
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            if p[i][i] < p[j][j]:       # i is harder: gains p_i(j)·p_j(j)
                w[i] += lam * p[i][j] * p[j][j]
            elif p[i][i] > p[j][j]:     # i is easier: gives p_j(i)·p_i(i)
                w[i] -= lam * p[j][i] * p[i][i]
    return w


def test_dafa_weights_favour_hard_classes_similar_to_easier_ones():
    from robustfair.training.mitigations.dafa import dafa_weights

    p = torch.tensor([[0.53, 0.45, 0.01, 0.01],   # class 0: hard, confused with class 1
                      [0.22, 0.75, 0.01, 0.02],   # class 1: easier, similar to 0
                      [0.02, 0.02, 0.95, 0.01],   # class 2: isolated
                      [0.07, 0.07, 0.01, 0.85]])
    w = dafa_weights(p, 1.0)
    assert w.tolist() == pytest.approx(dafa_loop(p.tolist(), 1.0), rel=1e-6)
    assert w[0] > 1.2 and w[1] < 0.95 and abs(w[2] - 1) < 0.06
    assert w[0] == w.max()


def test_dafa_moves_weight_between_classes_so_the_weights_sum_to_k():
    """What a harder class gains, the easier class it is confused with gives (Algorithm 2:
    the easier class gives p_j(i)·p_i(i), not its own confusion p_i(j)·p_j(j))."""
    from robustfair.training.mitigations.dafa import dafa_weights

    p = torch.tensor([[0.40, 0.50, 0.10],    # class 0: hard, mostly confused with 1
                      [0.05, 0.90, 0.05],    # class 1: easy, rarely confused with 0
                      [0.10, 0.10, 0.80]])
    w = dafa_weights(p, 1.0)
    assert w.sum().item() == pytest.approx(3.0, abs=1e-6)
    # class 0 takes 0.5·0.9 from class 1 and 0.1·0.8 from class 2; class 1 gives those 0.45
    # and 0.1·0.9 to class 2 (the old rule had it give only 0.05·0.4 + 0.05·0.8: 0.94)
    assert w.tolist() == pytest.approx([1.53, 0.46, 1.01], abs=1e-6)


def test_dafa_collects_similarity_in_the_warmup_epoch_then_sets_weights_and_margins():
    c = ctx(objective="trades", beta=6.0, epochs=4)
    m = built("dafa", c, warmup=0.5)          # weights after epoch 2
    assert m.begin == 2 and m.class_weights() is None and m.class_eps() is None
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits_adv = torch.full((8, K), -5.0)
    logits_adv[torch.arange(8), y] = 5.0
    logits_adv[0, 1] = 5.0                     # a class-0 point split between 0 and 1
    m.loss(logits_adv, y, torch.zeros(8), logits_adv=logits_adv)  # epoch 1: not collected
    m.end_epoch(stats([0.5] * K))
    assert m.class_weights() is None
    m.loss(logits_adv, y, torch.zeros(8), logits_adv=logits_adv)  # epoch 2: collected
    m.end_epoch(stats([0.5] * K))
    probs = F.softmax(logits_adv, dim=1)
    p = torch.stack([probs[y == k].mean(0) for k in range(K)])
    assert m.similarity.tolist() == [pytest.approx(r, rel=1e-5) for r in p.tolist()]
    w = torch.tensor(dafa_loop(p.tolist(), 1.0))
    assert m.class_weights().tolist() == pytest.approx(w.tolist(), rel=1e-5)
    assert m.class_eps().tolist() == pytest.approx((0.2 * w).tolist(), rel=1e-5)
    assert m.class_beta().tolist() == pytest.approx((6.0 / w).tolist(), rel=1e-5)
    assert m.class_weights()[0] > 1 > m.class_weights()[1]
    again = roundtrip(m, "dafa", c, warmup=0.5)
    assert torch.equal(again.class_weights(), m.class_weights())


def test_dafa_without_margin_keeps_the_common_radius_and_the_weights():
    m = built("dafa", ctx(epochs=2), warmup=0.5, margin="off")
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits_adv = torch.full((8, K), -5.0)
    logits_adv[torch.arange(8), y] = 5.0
    logits_adv[0, 1] = 5.0
    m.loss(logits_adv, y, torch.zeros(8), logits_adv=logits_adv)
    m.end_epoch(stats([0.5] * K))
    assert m.class_eps() is None
    assert m.class_weights() is not None and m.class_weights()[0] > 1
    assert m.settings()["margin"] is False


# ----------------------------------------------------------------------------- targeted AT
def test_targeted_at_targets_the_worst_class():
    m = built("targeted_at", p=1.0)
    y = torch.arange(K).repeat(5)
    assert m.attack_target(y) is None  # nothing measured yet
    m.end_epoch(stats([0.9, 0.8, 0.2, 0.7]))
    t = m.attack_target(y)
    assert torch.equal(t, torch.where(y == 2, -1, 2))
    m.end_epoch(stats([0.1, 0.8, 0.2, 0.7]))
    assert set(m.attack_target(y).tolist()) == {-1, 0}


def test_targeted_at_probability_fixed_target_and_resume():
    m = built("targeted_at", p=0.3, target="eel")
    y = torch.zeros(20_000, dtype=torch.long)
    share = (m.attack_target(y) == 3).float().mean().item()
    assert share == pytest.approx(0.3, abs=0.02)
    m.end_epoch(stats([0.1, 0.9, 0.9, 0.9]))  # a fixed target does not follow the worst class
    assert set(m.attack_target(y).tolist()) == {-1, 3}
    # resumed from its state, it draws exactly what the original draws next
    again = roundtrip(m, "targeted_at", p=0.3, target="eel")
    assert torch.equal(again.attack_target(y[:100]), m.attack_target(y[:100]))
    assert built("targeted_at", p=0.0).attack_target(y) is None
    with pytest.raises(ConfigError, match="unknown class"):
        built("targeted_at", target="lion")
    with pytest.raises(ConfigError, match="p must"):
        build_mitigation("targeted_at", p=1.5)


# ----------------------------------------------------------------------------- combination
def test_conflicting_per_class_eps_is_refused():
    stack = MitigationStack([build_mitigation("class_eps", adaptive=True),
                             build_mitigation("frl", mode="rm")])
    stack.setup(ctx())
    with pytest.raises(ConfigError, match="both set class_eps"):
        stack.class_eps()


def test_fat_must_come_last_in_a_stack():
    stack = MitigationStack([build_mitigation("fat"), build_mitigation("focal")])
    stack.setup(ctx())
    z, y = torch.randn(8, K), torch.arange(8) % K
    with pytest.raises(ConfigError, match="put it last"):
        stack.loss(z, y, F.cross_entropy(z, y, reduction="none"), logits_adv=z)
    stack = MitigationStack([build_mitigation("focal", gamma=0), build_mitigation("fat", lam=0)])
    stack.setup(ctx())
    ce = F.cross_entropy(z, y, reduction="none")
    assert stack.loss(z, y, ce, logits_adv=z).item() == pytest.approx(ce.mean().item())


def test_every_mitigation_describes_its_settings():
    for name, opts in {"adaptive_weight": {}, "resample": {"prior": "robust_error"},
                       "focal": {}, "cb_loss": {}, "ldam": {}, "logit_adjust": {},
                       "class_eps": {"adaptive": True}, "frl": {}, "cfa": {}, "fat": {},
                       "dafa": {}, "targeted_at": {}}.items():
        m = built(name, **opts)
        text = m.describe()
        assert text.startswith(name) and "\n" not in text
        assert isinstance(m.settings(), dict)


def test_objectives_say_whether_their_robust_term_is_beta_weighted():
    weighted = {name: OBJECTIVES.get(name).beta_weighted
                for name in ("standard", "pgd_at", "trades", "fgsm_rs")}
    assert weighted == {"standard": False, "pgd_at": False, "trades": True, "fgsm_rs": False}


@pytest.mark.parametrize("objective", ["pgd_at", "trades"])
def test_the_trainer_tells_the_mitigations_whether_the_objective_is_beta_weighted(objective):
    from robustfair.data import load_dataset
    from robustfair.training.config import TrainConfig
    from robustfair.training.distributed import DistInfo
    from robustfair.training.parts import build_parts, split_data

    cfg = TrainConfig.from_dict({"dataset": "digits", "model": "mlp", "objective": objective,
                                 "epochs": 1, "steps": 1, "eps": 0.1,
                                 "mitigations": [{"name": "frl"}]})
    ds, cpu = load_dataset("digits"), torch.device("cpu")
    stack = build_parts(cfg, ds, split_data(cfg, ds, cpu), DistInfo(), cpu).mitigations
    assert stack.mitigations[0].ctx.beta_weighted is (objective == "trades")
