"""The 2022-2025 fair-AT methods (WAT, CFOL, FAAL, CODAT, FAIR-TAT, TRIX): each update rule
against a hand computation or an independent solver, and a run interrupted after an epoch that
resumes to the bit-identical weights and log of the uninterrupted run."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from robustfair.errors import ConfigError
from robustfair.training import TrainConfig, train
from robustfair.training import checkpoint as ckpt
from robustfair.training.mitigations import (EpochStats, Mitigation, MitigationContext,
                                             MitigationStack, build_mitigation,
                                             list_mitigations, register_mitigation)

K = 3
NAMES = ["a", "b", "c"]
NEW = ("wat", "cfol", "faal", "codat", "fair_tat", "trix")


def ctx(**kw) -> MitigationContext:
    base = dict(num_classes=K, classes=NAMES, eps=0.2, objective="pgd_at", epochs=10, seed=5)
    base.update(kw)
    return MitigationContext(**base)


def built(name, c=None, **options):
    m = build_mitigation(name, **options)
    m.setup(c or ctx())
    return m


def stats(robust, counts=None) -> EpochStats:
    robust = torch.tensor(robust, dtype=torch.float32)
    counts = torch.full((len(robust),), 10) if counts is None else torch.tensor(counts)
    clean = torch.ones_like(robust)
    return EpochStats(1, clean, robust, 1 - clean, clean - robust, counts)


def roundtrip(m, name, c=None, **options):
    tensors, tree = ckpt.split_tensors(m.state_dict(), "m")
    fresh = built(name, c, **options)
    fresh.load_state_dict(ckpt.join_tensors(tree, {k: v.clone() for k, v in tensors.items()}))
    return fresh


def onehot_logits(pred, k=K, scale=5.0):
    return F.one_hot(torch.as_tensor(pred), k).float() * scale


def test_registered_and_described():
    assert set(NEW) <= set(list_mitigations())
    for name in NEW:
        text = built(name).describe()
        assert text.startswith(name) and "\n" not in text


# ----------------------------------------------------------------------------------- WAT
def test_wat_hedge_weights_from_cumulative_validation_errors():
    m = built("wat", eta=0.5)
    assert m.class_weights().tolist() == pytest.approx([2 * K / (K + 1)] * K)  # uniform start
    m.end_epoch(stats([0.8, 0.5, 0.2]))            # errors 0.2, 0.5, 0.8; average 0.5
    m.end_epoch(stats([0.6, 0.6, 0.3]))            # errors 0.4, 0.4, 0.7; average 0.5
    cumulative = [0.6, 0.9, 1.5, 1.0]              # by hand: the sums, the average last
    e = [math.exp(0.5 * v) for v in cumulative]
    h = [K * v / sum(e) for v in e]
    assert m.expert_weights().tolist() == pytest.approx(h, rel=1e-6)
    assert m.expert_weights().sum().item() == pytest.approx(K)
    assert m.class_weights().tolist() == pytest.approx([h[c] + h[3] for c in range(K)], rel=1e-6)
    again = roundtrip(m, "wat", eta=0.5)
    assert torch.equal(again.class_weights(), m.class_weights())


def test_wat_absent_class_gets_the_average_and_train_loss_signal_uses_class_means():
    m = built("wat", eta=1.0)
    m.end_epoch(stats([0.5, 0.9, 0.0], counts=[10, 30, 0]))
    # average error (count-weighted) 0.2; the absent class 2 is charged that average
    assert m.cumulative.tolist() == pytest.approx([0.5, 0.1, 0.2, 0.2])
    t = built("wat", signal="train_loss", eta=1.0)
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    losses = torch.tensor([1.0, 3.0, 0.5, 1.0, 1.0, 4.0])
    assert torch.equal(t.loss(None, y, losses), losses)
    t.end_epoch(stats([0.5] * K))
    assert t.cumulative.tolist() == pytest.approx([2.0, 0.5, 2.0, losses.mean().item()])
    with pytest.raises(ConfigError, match="signal"):
        build_mitigation("wat", signal="nope")


# ----------------------------------------------------------------------------------- CFOL
def test_cfol_exp3_update_by_hand_and_the_sampler_draws_p():
    counts = torch.tensor([10, 20, 30])
    c = ctx(class_counts=counts)
    m = built("cfol", c, gamma=0.4, eta=6.0)
    p0 = m.class_probabilities()
    assert p0.tolist() == pytest.approx([1 / 3] * 3)
    # one batch: class 0 wrong twice, class 1 once, class 2 never
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([1, 2, 0, 0, 1, 2])
    m.loss(None, y, torch.zeros(6), logits_adv=onehot_logits(pred))
    m.end_epoch(stats([0.5] * K))
    # w_c += eta/N · (wrong count)/p_c, N = 60, p_c = 1/3
    w = [6.0 / 60 * n * 3 for n in (2, 1, 0)]
    assert m.w.tolist() == pytest.approx(w)
    q = torch.softmax(torch.tensor(w), 0)
    p = 0.4 / 3 + 0.6 * q
    assert m.class_probabilities().tolist() == pytest.approx(p.tolist(), rel=1e-6)
    # the trainer draws point i with probability ∝ s[y_i]: class c comes with probability p_c
    s = m.sample_weights()
    labels = torch.repeat_interleave(torch.arange(3), counts)
    g = torch.Generator().manual_seed(0)
    drawn = labels[torch.multinomial(s[labels], 60_000, replacement=True, generator=g)]
    shares = torch.bincount(drawn, minlength=3) / 60_000
    assert shares.tolist() == pytest.approx(p.tolist(), abs=0.01)
    assert torch.equal(roundtrip(m, "cfol", c, gamma=0.4, eta=6.0).w, m.w)
    with pytest.raises(ConfigError, match="gamma"):
        build_mitigation("cfol", gamma=0)


# ----------------------------------------------------------------------------------- FAAL
def kl_uniform(p):
    return float(np.mean(np.log((1 / len(p)) / p)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faal_closed_form_matches_a_general_solver(seed):
    from scipy.optimize import minimize

    from robustfair.training.mitigations.faal import faal_distribution

    rng = np.random.default_rng(seed)
    a = rng.normal(size=5)
    r = 0.3
    p = faal_distribution(torch.tensor(a, dtype=torch.float32), r).double().numpy()
    assert p.sum() == pytest.approx(1.0, abs=1e-6) and (p > 0).all()
    assert kl_uniform(p) == pytest.approx(r, abs=1e-4)            # the ball's edge
    res = minimize(lambda q: -a @ q, np.full(5, 0.2), method="SLSQP", bounds=[(1e-9, 1)] * 5,
                   constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1},
                                {"type": "ineq", "fun": lambda q: r - kl_uniform(q)}],
                   options={"ftol": 1e-12, "maxiter": 500})
    assert res.success
    assert a @ p >= a @ res.x - 1e-4                              # at least as good
    assert p == pytest.approx(res.x, abs=2e-3)


def test_faal_by_hand_and_its_loss_weights():
    from robustfair.training.mitigations.faal import faal_distribution, probability_margins

    # two classes, scores (1, 0): p ∝ (1/(mu-1), 1/mu); mu = 2 sits at KL = log(9/8)/2
    p = faal_distribution(torch.tensor([1.0, 0.0]), 0.5 * math.log(9 / 8))
    assert p.tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-5)
    assert faal_distribution(torch.tensor([1.0, 0.0]), 0.0).tolist() == [0.5, 0.5]
    assert faal_distribution(torch.tensor([0.3, 0.3, 0.3]), 0.5).tolist() == \
        pytest.approx([1 / 3] * 3)

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 2])
    probs = F.softmax(logits, 1)
    margins = torch.stack([probs[i, [j for j in range(3) if j != y[i]]].max() - probs[i, y[i]]
                           for i in range(4)])
    assert probability_margins(logits, y).tolist() == pytest.approx(margins.tolist())
    m = built("faal", r=0.2)
    per_sample = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = m.loss(logits, y, per_sample, logits_adv=logits)
    scores = torch.stack([margins[y == c].sum() for c in range(3)]) / 4   # n_c·L_c/N
    p = faal_distribution(scores, 0.2)
    assert out.tolist() == pytest.approx((per_sample * 3 * p[y]).tolist(), rel=1e-5)
    assert p.argmax().item() == 1            # class 1's only point is misclassified


def test_faal_warmup_trains_plainly_first():
    m = built("faal", ctx(epochs=4), warmup=0.5)
    y = torch.tensor([0, 1, 2])
    logits = torch.randn(3, 3)
    l = torch.rand(3)
    assert torch.equal(m.loss(logits, y, l, logits_adv=logits), l)
    m.end_epoch(stats([0.5] * K))
    m.end_epoch(stats([0.5] * K))
    assert not torch.equal(roundtrip(m, "faal", ctx(epochs=4), warmup=0.5)
                           .loss(logits, y, l, logits_adv=logits + torch.tensor([5.0, 0, 0])), l)


# ----------------------------------------------------------------------------------- CODAT
def test_codat_batch_loss_is_the_deterministic_equivalent_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(12, K, requires_grad=True)
    y = torch.tensor([0] * 3 + [1] * 4 + [2] * 5)
    rho = 0.05
    per_sample = F.cross_entropy(logits, y, reduction="none")
    out = built("codat", rho=rho).loss(logits, y, per_sample).mean()
    means = torch.stack([per_sample[y == c].mean() for c in range(K)])
    equivalent = means.mean() + math.sqrt(2 * rho) * means.std(unbiased=False)
    assert out.item() == pytest.approx(equivalent.item(), rel=1e-5)
    (g_ours,) = torch.autograd.grad(out, logits, retain_graph=True)
    (g_equiv,) = torch.autograd.grad(equivalent, logits)
    assert torch.allclose(g_ours, g_equiv, atol=1e-6)   # Danskin: q held fixed is exact


def test_codat_clips_negative_weights_and_ignores_absent_classes():
    from robustfair.training.mitigations.codat import codat_distribution

    q = codat_distribution(torch.tensor([0.0, 0.0, 10.0]), rho=2.0)   # z = (-0.71, -0.71, 1.41)
    assert q.tolist() == pytest.approx([0.0, 0.0, 1.0])
    q = codat_distribution(torch.tensor([1.0, 9.0, 3.0]), 0.1,
                           present=torch.tensor([True, False, True]))
    z = torch.tensor([-1.0, 1.0])
    expected = (1 + math.sqrt(0.2) * z) / 2
    assert q.tolist() == pytest.approx([expected[0].item(), 0.0, expected[1].item()], rel=1e-6)
    assert codat_distribution(torch.ones(3), 0.1).tolist() == pytest.approx([1 / 3] * 3)


# ----------------------------------------------------------------------------------- FAIR-TAT
def test_fair_tat_targets_follow_the_false_positive_shares():
    m = built("fair_tat", mix=0.0)
    y = torch.arange(K).repeat(10_000)
    first = m.attack_target(y)                      # nothing counted yet: uniform, never y
    assert (first != y).all() and (first >= 0).all()
    assert (first[y == 0] == 1).float().mean().item() == pytest.approx(0.5, abs=0.02)
    # adversarial predictions of one epoch: class 0 -> 1 (4x), class 2 -> 1 (2x), 1 -> 2 (1x)
    ys = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)
    pred = torch.tensor([1, 1, 1, 1, 0] + [1, 1, 1, 1, 2] + [1, 1, 2, 2, 2])
    m.loss(None, ys, torch.zeros(15), logits_adv=onehot_logits(pred))
    m.end_epoch(stats([0.5] * K))
    assert m.false_positives.tolist() == [0.0, 6.0, 1.0]
    rows = m.targets()
    assert rows.tolist() == [pytest.approx([0, 6 / 7, 1 / 7]), pytest.approx([0, 0, 1]),
                             pytest.approx([0, 1, 0])]
    t = m.attack_target(y)
    share = (t[y == 0] == 1).float().mean().item()
    assert share == pytest.approx(6 / 7, abs=0.02) and (t != y).all()
    # resumed, it draws what the original draws next
    again = roundtrip(m, "fair_tat", mix=0.0)
    assert torch.equal(again.attack_target(y[:300]), m.attack_target(y[:300]))
    half = built("fair_tat", p=0.5).attack_target(y)
    assert (half == -1).float().mean().item() == pytest.approx(0.5, abs=0.02)


# ----------------------------------------------------------------------------------- TRIX
def test_trix_split_weights_radii_and_targets_by_hand():
    m = built("trix", weight=2.0, radius=1.0, r_min=0.5, r_max=1.5)
    y = torch.arange(K).repeat(9_000)
    assert m.attack_target(y) is None and m.class_weights() is None and m.class_eps() is None
    m.end_epoch(stats([0.9, 0.6, 0.3]))              # errors 0.1, 0.4, 0.7; mean 0.4
    assert m.strong.tolist() == [True, False, False]
    assert m.class_weights().tolist() == pytest.approx([0.5, 1.0, 1.6])  # 1 + 2·gap, >= 0.5
    assert m.class_eps().tolist() == pytest.approx([0.2 * 0.7, 0.2, 0.2 * 1.3])
    t = m.attack_target(y)
    assert (t[y != 0] == -1).all()                   # weak classes: untargeted
    strong = t[y == 0]
    assert (strong > 0).all()                        # targeted, never its own class
    assert (strong == 1).float().mean().item() == pytest.approx(0.5, abs=0.02)
    again = roundtrip(m, "trix", weight=2.0, radius=1.0, r_min=0.5, r_max=1.5)
    assert torch.equal(again.class_eps(), m.class_eps())
    assert torch.equal(again.attack_target(y[:300]), m.attack_target(y[:300]))
    assert built("trix", radius=0).class_eps() is None
    with pytest.raises(ConfigError, match="contain 1"):
        build_mitigation("trix", r_min=1.1, r_max=1.5)


def test_two_methods_that_set_attack_targets_are_refused():
    stack = MitigationStack([build_mitigation("trix"), build_mitigation("fair_tat")])
    stack.setup(ctx())
    stack.end_epoch(stats([0.9, 0.6, 0.3]))
    with pytest.raises(ConfigError, match="both set attack_target"):
        stack.attack_target(torch.arange(K))


# ----------------------------------------------------------------------------------- resume
CRASH = {"epoch": None}


@register_mitigation("_test_recent_crash")
class CrashAfter(Mitigation):
    """Ends the run (as a kill would) after an epoch is evaluated, before it is committed."""

    def end_epoch(self, stats):
        if CRASH["epoch"] == stats.epoch:
            raise RuntimeError("simulated crash")


RESUME = {"dataset": "digits", "model": "mlp", "model_kwargs": {"hidden": [32]}, "eps": 0.2,
          "steps": 2, "eval_steps": 2, "augment": False, "batch_size": 128, "epochs": 3,
          "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "device": "cpu"}


@pytest.mark.parametrize("name, objective", [
    ("wat", "trades"), ("cfol", "pgd_at"), ({"name": "faal", "warmup": 0.5}, "trades"),
    ("codat", "pgd_at"), ("fair_tat", "pgd_at"), ("trix", "pgd_at")])
def test_an_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch, name, objective):
    """(CODAT keeps no state between batches; FAAL's only state is its warm-up count.)"""
    cfg = TrainConfig.from_dict({**RESUME, "objective": objective,
                                 "mitigations": [name, "_test_recent_crash"]})
    whole = train(cfg, tmp_path / "whole", progress=False)
    cut = tmp_path / "cut"
    monkeypatch.setitem(CRASH, "epoch", 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, cut, progress=False)
    assert ckpt.read_manifest(cut)["epoch"] == 1
    monkeypatch.setitem(CRASH, "epoch", None)
    resumed = train(cfg, cut, progress=False)
    assert resumed.epochs_run == 3
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [pd.read_csv(run / "epochs.csv").drop(columns="time_s") for run in (cut, tmp_path / "whole")]
    pd.testing.assert_frame_equal(*logs)


# ----------------------------------------------------------------------------------- CLI
def test_train_help_lists_them_and_bad_options_are_one_line(tmp_path, capsys):
    from robustfair.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    for name in NEW:
        assert f"  {name}: " in shown
    for bad, message in [("faal:r=-1", "r must be >= 0"), ("wat:signal=val", "unknown wat signal"),
                         ("trix:r_min=1.1,r_max=2", "contain 1"), ("cfol:gamma=2", "gamma"),
                         ("codat:rho=x", "not a number"), ("fair_tat:p=3", "p must")]:
        code = main(["train", "--dataset", "digits", "--out", str(tmp_path / "r"),
                     "--mitigation", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (bad, err)
        assert not (tmp_path / "r").exists()
