"""Sanity flags (robustfair.sanity) and the explicit attack contract."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robustfair as rf
from robustfair.attacks import build_attack
from robustfair.errors import ModelError
from robustfair.metrics import ClassReport
from robustfair.sanity import result_flags

from digits_model import train_small_cnn
from odd_models import Noisy, Quantised


@pytest.fixture(scope="module")
def digits():
    return rf.load_dataset("digits")


@pytest.fixture(scope="module")
def model(digits):
    return train_small_cnn(digits, epochs=5)


class Softmaxed(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(dim=1)


class WithFeatures(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), x.flatten(1)


def _codes(report):
    return {f["code"] for f in report.flags}


def _audit(net, digits, n=120, **kwargs):
    attack = kwargs.pop("attack", build_attack("pgd", eps=0.1, steps=5))
    return rf.audit(net, digits.test.x[:n], digits.test.y[:n], attacks=[attack], progress=False,
                    **kwargs)


def test_a_plain_model_raises_no_flag(model, digits):
    report = _audit(model, digits)
    assert report.flags == []
    assert "none raised" in report.summary(n_boot=10)


def test_quantised_model_gets_the_zero_gradient_flag(model, digits):
    report = _audit(Quantised(model).eval(), digits)
    (flag,) = [f for f in report.flags if f["code"] == "zero_gradient"]
    assert "32 of 32" in flag["message"] and "\n" not in flag["message"]
    assert "zero_gradient" in report.summary(n_boot=10)


def test_noisy_model_gets_the_randomness_flags(model, digits):
    report = _audit(Noisy(model).eval(), digits)
    assert {"randomized", "eps_zero"} <= _codes(report)
    randomized = next(f for f in report.flags if f["code"] == "randomized")
    assert "rand" in randomized["message"]  # says what to do


def test_softmax_outputs_get_the_probabilities_flag(model, digits):
    assert "probabilities" in _codes(_audit(Softmaxed(model).eval(), digits))


def test_flags_survive_the_json_round_trip(model, digits, tmp_path):
    report = _audit(Quantised(model).eval(), digits, n=40)
    back = ClassReport.from_json(report.to_json(tmp_path / "r.json"))
    assert back.flags == report.flags and back.equals(report)


def test_sanity_false_skips_the_checks(model, digits):
    assert _audit(Quantised(model).eval(), digits, n=40, sanity=False).flags == []


def _report(y, clean, columns: dict, attacks: list[dict]):
    preds = {"y_true": y, "clean_pred": clean, **{f"{k}_pred": v for k, v in columns.items()}}
    worst = clean.copy()
    alive = clean == y
    for v in columns.values():
        fooled = alive & (v != y)
        worst[fooled] = v[fooled]
        alive &= ~fooled
    preds["worst_pred"] = worst
    return ClassReport(predictions=pd.DataFrame(preds), classes=["a", "b"], attacks=attacks)


def test_masking_flag_counts_only_points_every_gradient_attack_left_robust():
    y = np.array([0] * 50 + [1] * 50)
    clean = y.copy()
    pgd = y.copy()
    pgd[:10] = 1  # the gradient attack breaks 10 points of class a
    square = y.copy()
    square[:10] = 1  # the same 10 ...
    square[60:66] = 0  # ... and 6 of class b that PGD left robust
    report = _report(y, clean, {"pgd": pgd, "square": square},
                     [{"attack": "pgd"}, {"attack": "square"}])
    (flag,) = result_flags(report)
    assert flag["code"] == "masking" and flag["classes"] == ["b"]
    assert "6 points" in flag["message"] and "b: 6" in flag["message"]
    # AutoAttack's rule: at least 5 points (and > 0.2%): 4 points of 100 raise nothing
    square[64:66] = 1
    assert result_flags(_report(y, clean, {"pgd": pgd, "square": square},
                                [{"attack": "pgd"}, {"attack": "square"}])) == []
    # nothing beyond what the gradient attack found: no flag
    same = _report(y, clean, {"pgd": pgd, "square": pgd.copy()}, [{"attack": "pgd"}, {"attack": "square"}])
    assert result_flags(same) == []


def test_tuple_output_is_a_one_line_error_naming_the_fix(model, digits):
    with pytest.raises(ModelError, match="SelectOutput") as info:
        _audit(WithFeatures(model).eval(), digits, n=8)
    assert "\n" not in str(info.value)


def test_the_audit_never_changes_the_callers_attack(model, digits):
    attack = build_attack("apgd-ce", eps=0.1, steps=5, seed=7)
    report = _audit(model, digits, n=60, attack=attack, seed=3, amp=True)
    assert (attack.seed, attack.amp) == (7, False)
    assert (report.attacks[0]["seed"], report.attacks[0]["amp"]) == (3, True)


def test_perturb_seed_overrides_the_attacks_own_for_one_call(model, digits):
    x, y = digits.test.x[:64], digits.test.y[:64]
    a = build_attack("pgd", eps=0.1, steps=3, seed=0).perturb(model, x, y, seed=5)
    b = build_attack("pgd", eps=0.1, steps=3, seed=5).perturb(model, x, y)
    c = build_attack("pgd", eps=0.1, steps=3, seed=0).perturb(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)


def test_with_options_copies(model):
    attack = build_attack("pgd", eps=0.1)
    fast = attack.with_options(amp=True, steps=2)
    assert (attack.amp, attack.steps, fast.amp, fast.steps) == (False, 10, True, 2)
    with pytest.raises(rf.errors.AttackError, match="no setting"):
        attack.with_options(nope=1)


class _Linear(torch.nn.Module):
    """A linear classifier on 64 inputs; ``mask``: the same outputs with a zero gradient (a
    detached forward), which gradient attacks cannot follow and Square can."""

    def __init__(self, mask: bool):
        super().__init__()
        v = [1.0] * 32 + [-1.0] * 32
        self.w = torch.nn.Parameter(torch.tensor([v, [-a for a in v], [0.0] * 64, [0.0] * 64]))
        self.mask = mask

    def forward(self, x):
        logits = x.flatten(1) @ self.w.T
        return logits.detach() + 0.0 * x.sum() if self.mask else logits


@pytest.mark.parametrize("mask", [False, True])
def test_masking_recheck_re_attacks_the_points_square_alone_broke(mask):
    from robustfair.sanity import masking_recheck

    torch.manual_seed(0)
    n, eps = 8, 0.1
    # class 0 with a margin of 3.2 over classes c and d: the best L-inf step of 0.1 moves it
    # by 6.4, a random one by about 0.5 (so only an attack that finds the direction breaks it)
    v = torch.tensor([1.0] * 32 + [-1.0] * 32).view(1, 1, 8, 8)
    x = (0.5 + 0.05 * v).repeat(n, 1, 1, 1)
    y = torch.zeros(n, dtype=torch.long)
    model = _Linear(mask).eval()
    assert (model(x).argmax(1) == 0).all()
    y_np = np.zeros(n, dtype=np.int64)
    square = np.ones(n, dtype=np.int64)  # Square broke all 8; the audit's APGD none
    report = ClassReport(
        predictions=pd.DataFrame({"y_true": y_np, "clean_pred": y_np, "apgd-ce_pred": y_np,
                                  "square_pred": square, "worst_pred": square}),
        classes=["a", "b", "c", "d"],
        attacks=[{"attack": "apgd-ce", "eps": eps, "norm": "linf", "steps": 10},
                 {"attack": "square", "eps": eps}])
    flags, counts = masking_recheck(model, x, y, report)
    assert counts["square_only"] == n
    if mask:   # the gradient is zero: nothing moves, all 8 resist
        assert counts["resisted"] == n and counts["gradient_recheck"] == 0
        assert flags[0]["code"] == "masking" and flags[0]["classes"] == ["a"]
        assert "8 resisted every gradient attack (possible gradient masking" in flags[0]["message"]
    else:      # an honest gradient: the stronger attacks break them all (attack budget)
        assert counts["gradient_recheck"] == n and counts["resisted"] == 0
        assert flags[0]["code"] == "attack_budget"
        assert "Square alone broke 8 points" in flags[0]["message"]
