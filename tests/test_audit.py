"""The audit runner on a small model trained on the digits, checked against direct attack calls."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robustfair
from robustfair.attacks import Attack, AttackResult, build_attack
from robustfair.auditing import audit
from robustfair.data import load_dataset
from robustfair.errors import RobustfairError

from digits_model import train_small_cnn

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def model(digits):
    """A SmallCNN (with its normaliser) trained for a few epochs with plain torch: ~95% clean."""
    net = train_small_cnn(digits, epochs=4)
    net.robustfair_metadata = {"dataset": "digits", "classes": NAMES}
    return net


def _clean_pred(model, x):
    with torch.no_grad():
        return model(x.float() / 255).argmax(1).numpy()


def test_audit_end_to_end_with_pgd(model, digits):
    x, y = digits.test.x[:120], digits.test.y[:120]
    attack = build_attack("pgd", eps=0.15, steps=5)
    report = audit(model, x, y, attacks=[attack], progress=False)
    p = report.predictions
    assert report.classes == NAMES and list(report.by_class.index) == NAMES  # from the metadata
    np.testing.assert_array_equal(p.y_true, y.numpy())
    clean = _clean_pred(model, x)
    np.testing.assert_array_equal(p.clean_pred, clean)
    correct = clean == y.numpy()
    # the attack column is what the attack finds on the clean-correct points, called directly
    # (each point with its own random stream: keyed by its index in the test set)
    keep = torch.from_numpy(correct)
    direct = attack.perturb(model, x[keep].float() / 255, y[keep], index=keep.nonzero().squeeze(1))
    np.testing.assert_array_equal(p.pgd_pred.to_numpy()[correct], direct.pred.numpy())
    np.testing.assert_array_equal(p.pgd_pred.to_numpy()[~correct], clean[~correct])
    assert 0.0 < report.overall["robust_acc"] < report.overall["clean_acc"] > 0.85
    assert report.overall["robust_acc"] == pytest.approx(((p.worst_pred == p.y_true)).mean())
    assert report.attacks == [attack.settings()]
    meta = report.meta
    assert meta["n"] == 120 and meta["seed"] == 0 and meta["dataset"] == "digits"
    assert meta["model"]["name"] == "small_cnn" and meta["time_seconds"] > 0
    assert meta["versions"]["torch"] == torch.__version__


def test_streaming_gives_the_same_result_as_one_batch(model, digits):
    x, y = digits.test.x[:100], digits.test.y[:100]
    attacks = [build_attack("fgsm", eps=0.1), build_attack("pgd", eps=0.1, steps=3, random_start=False)]
    one = audit(model, x, y, attacks=attacks, batch_size=1000, progress=False)
    many = audit(model, x, y, attacks=attacks, batch_size=16, progress=False)
    pd.testing.assert_frame_equal(one.predictions, many.predictions)
    pd.testing.assert_frame_equal(one.by_class, many.by_class)


def test_float_input_equals_uint8_input(model, digits):
    x, y = digits.test.x[:40], digits.test.y[:40]
    attacks = [build_attack("fgsm", eps=0.1)]
    a = audit(model, x, y, attacks=attacks, progress=False)
    b = audit(model, x.float() / 255, y, attacks=attacks, progress=False, device="cpu")
    pd.testing.assert_frame_equal(a.predictions, b.predictions)


def test_model_mode_and_attack_seed_are_restored(model, digits):
    attack = build_attack("pgd", eps=0.1, steps=2, seed=123)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][0]
    stats = bn.running_mean.clone()
    model.train()
    try:
        report = audit(model, digits.test.x[:30], digits.test.y[:30], attacks=[attack], seed=7, progress=False)
        assert all(m.training for m in model.modules())
        assert torch.equal(bn.running_mean, stats)  # evaluated in eval mode: no statistics update
    finally:
        model.eval()
    assert attack.seed == 123
    assert report.attacks[0]["seed"] == 7  # the i-th attack runs with seed + i


def test_dependent_mode_skips_fooled_points_and_keeps_the_robust_column(model, digits):
    x, y = digits.test.x[:100], digits.test.y[:100]
    attacks = [build_attack("fgsm", eps=0.15), build_attack("pgd", eps=0.15, steps=3, random_start=False)]
    full = audit(model, x, y, attacks=attacks, progress=False)
    fast = audit(model, x, y, attacks=attacks, independent=False, progress=False)
    p, q = full.predictions, fast.predictions
    np.testing.assert_array_equal(p.worst_pred, q.worst_pred)
    np.testing.assert_array_equal(p.fgsm_pred, q.fgsm_pred)
    fooled_first = ((p.clean_pred == p.y_true) & (p.fgsm_pred != p.y_true)).to_numpy()
    assert fooled_first.any()
    np.testing.assert_array_equal(q.pgd_pred.to_numpy() == -1, fooled_first)
    np.testing.assert_array_equal(q.pgd_pred[~fooled_first], p.pgd_pred[~fooled_first])
    classes_with_skips = set(p.y_true[fooled_first])
    for c, name in enumerate(NAMES):
        assert np.isnan(fast.by_class.loc[name, "pgd_acc"]) == (c in classes_with_skips)


def test_targeted_audit_aims_at_one_class(model, digits):
    x, y = digits.test.x[:80], digits.test.y[:80]
    attack = build_attack("pgd", eps=0.2, steps=5, targeted=True)
    report = audit(model, x, y, attacks=[attack], target="three", progress=False)
    p = report.predictions
    assert (p.target == 3).all() and report.targeted
    clean = _clean_pred(model, x)
    run = torch.from_numpy((clean == y.numpy()) & (y.numpy() != 3))
    direct = attack.perturb(model, x[run].float() / 255, y[run], target=torch.full((int(run.sum()),), 3),
                            index=run.nonzero().squeeze(1))
    np.testing.assert_array_equal(p.pgd_pred.to_numpy()[run.numpy()], direct.pred.numpy())
    own = (y == 3).numpy()
    np.testing.assert_array_equal(p.pgd_pred[own], clean[own])  # points of the target class are not attacked
    assert np.isnan(report.by_class.loc["three", "pgd_target_success"])
    assert (p.pgd_pred[~own] == 3).sum() > 0


def test_targeted_all_records_every_source_target_pair(model, digits):
    x, y = digits.test.x[:30], digits.test.y[:30]
    attack = build_attack("fgsm", eps=0.25, targeted=True)
    report = audit(model, x, y, attacks=[attack], targeted_all=True, progress=False, batch_size=16)
    tp = report.target_predictions
    assert len(tp) == 30 * 9
    clean = _clean_pred(model, x)
    correct = clean == y.numpy()
    for t in (0, 5):
        run = correct & (y.numpy() != t)
        direct = attack.perturb(model, x[torch.from_numpy(run)].float() / 255, y[torch.from_numpy(run)],
                                target=torch.full((int(run.sum()),), t)).pred.numpy()
        rows = tp[tp.target == t].set_index("index")
        np.testing.assert_array_equal(rows.loc[np.flatnonzero(run), "fgsm_pred"], direct)
        wrong = np.flatnonzero(~correct & (y.numpy() != t))
        np.testing.assert_array_equal(rows.loc[wrong, "fgsm_pred"], clean[wrong])
    # each point's own column: the first target (in class order) that fooled the model
    for i in range(30):
        rows = tp[tp["index"] == i]
        fooled = rows[rows.fgsm_pred != y[i].item()]
        expected = fooled.fgsm_pred.iloc[0] if len(fooled) else clean[i]
        assert report.predictions.fgsm_pred[i] == expected
    m = report.target_success
    assert m.shape == (10, 10) and np.isnan(np.diag(m.to_numpy().astype(float))).all()


class Spy(Attack):
    """An attack that only counts its calls (to check that errors come before any work)."""

    name = "spy"

    def __init__(self, targeted: bool = False) -> None:
        super().__init__(0.1, targeted=targeted)
        self.calls = 0

    def _perturb(self, model, x, y, target, options):
        self.calls += 1
        pred = model(x).argmax(1)
        return AttackResult(x, pred, pred != y)


class NaNModel(nn.Module):
    def forward(self, x):
        return torch.full((len(x), 10), float("nan"))


@pytest.mark.parametrize(
    "case,match",
    [
        ("range", r"\[0, 1\]"),
        ("shape", "N×C×H×W"),
        ("labels", "labels must lie in 0..9"),
        ("label_count", "got 20 images but 19 labels"),
        ("width", "outputs 10 logits but the data has 5 classes"),
        ("nan", "NaN"),
        ("targeted_mismatch", "untargeted but the audit is targeted"),
        ("both_targets", "either target or targeted_all"),
        ("unknown_target", "unknown target class"),
        ("batch_size", "batch_size"),
        ("not_an_attack", "is not an attack"),
        ("reserved_name", "reserved"),
    ],
)
def test_bad_input_is_one_line_error_before_any_attack(model, digits, case, match):
    x, y = digits.test.x[:20], digits.test.y[:20]
    spy = Spy()
    kwargs = dict(attacks=[spy], progress=False)
    net = model
    if case == "range":
        x = x.float() / 255 * 2
    elif case == "shape":
        x = x[:, 0]
    elif case == "labels":
        y = y.clone()
        y[3] = 10
    elif case == "label_count":
        y = y[:19]
    elif case == "width":
        kwargs["classes"] = list("abcde")
    elif case == "nan":
        net = NaNModel()
    elif case == "targeted_mismatch":
        kwargs["target"] = 3
    elif case == "both_targets":
        kwargs.update(target=3, targeted_all=True, attacks=[Spy(targeted=True)])
    elif case == "unknown_target":
        kwargs.update(target="eleven", attacks=[Spy(targeted=True)])
    elif case == "batch_size":
        kwargs["batch_size"] = 0
    elif case == "not_an_attack":
        kwargs["attacks"] = ["pgd"]
    elif case == "reserved_name":
        kwargs["attacks"] = {"clean": spy}
    with pytest.raises(RobustfairError, match=match) as exc:
        audit(net, x, y, **kwargs)
    assert "\n" not in str(exc.value)
    assert spy.calls == 0


def test_attack_names_from_dict_or_deduplicated(model, digits):
    x, y = digits.test.x[:20], digits.test.y[:20]
    weak, strong = build_attack("fgsm", eps=0.05), build_attack("fgsm", eps=0.2)
    named = audit(model, x, y, attacks={"weak": weak, "strong": strong}, progress=False)
    assert named.attack_names == ["weak", "strong"] and "strong_acc" in named.by_class
    listed = audit(model, x, y, attacks=[weak, strong], progress=False)
    assert listed.attack_names == ["fgsm", "fgsm_2"]
    np.testing.assert_array_equal(listed.predictions.fgsm_2_pred, named.predictions.strong_pred)
    assert listed.by_class["fgsm_acc"].mean() >= listed.by_class["fgsm_2_acc"].mean()


def test_package_level_audit_is_the_function_however_it_was_imported(model, digits):
    import robustfair.auditing  # noqa: F401  (the module must not shadow the function)

    report = robustfair.audit(model, digits.test.x[:10], digits.test.y[:10],
                              attacks=[build_attack("fgsm", eps=0.1)], progress=False)
    assert isinstance(report, robustfair.ClassReport)


def test_targeted_all_fast_mode_keeps_the_robust_column(model, digits):
    x, y = digits.test.x[:30], digits.test.y[:30]
    attacks = [build_attack("fgsm", eps=0.15, targeted=True),
               build_attack("pgd", eps=0.15, steps=2, random_start=False, targeted=True)]
    full = audit(model, x, y, attacks=attacks, targeted_all=True, progress=False)
    fast = audit(model, x, y, attacks=attacks, targeted_all=True, independent=False, progress=False)
    np.testing.assert_array_equal(full.predictions.worst_pred, fast.predictions.worst_pred)
    # in the fast mode a point fooled once is skipped by every later (attack, target) run
    tp = fast.target_predictions
    fooled_by_fgsm = full.predictions.fgsm_pred != full.predictions.y_true
    assert (tp.pgd_pred[tp["index"].isin(np.flatnonzero(fooled_by_fgsm & (full.predictions.clean_pred
                                                                          == full.predictions.y_true)))]
            == -1).all()


def test_optimized_audit_matches_the_model_run_as_it_is(model, digits):
    x, y = digits.test.x[:200], digits.test.y[:200]
    attacks = [build_attack("pgd", eps=0.1, steps=5, random_start=False)]
    fast = audit(model, x, y, attacks=attacks, batch_size=64, progress=False)
    plain = audit(model, x, y, attacks=attacks, batch_size=64, progress=False, optimize=False)
    # the layout is the one timed faster here: either way it is recorded
    assert fast.meta["model_optimizations"] in (
        ["batchnorm folded into 4 convolutions", "channels_last"],
        ["batchnorm folded into 4 convolutions"])
    assert plain.meta["model_optimizations"] == []
    # the same function up to float rounding: the same predictions but for a rare tie
    same = (fast.predictions.pgd_pred == plain.predictions.pgd_pred).mean()
    assert same >= 0.99
    assert fast.overall["robust_acc"] == pytest.approx(plain.overall["robust_acc"], abs=0.01)
    assert 0.1 < plain.overall["robust_acc"] < 0.9


def test_auto_batch_size_on_a_cpu_is_recorded(model, digits):
    x, y = digits.test.x[:300], digits.test.y[:300]
    report = audit(model, x, y, attacks=[build_attack("fgsm", eps=0.1)], batch_size="auto",
                   progress=False)
    assert report.meta["batch_size"] == 256
    small = audit(model, x[:40], y[:40], attacks=[build_attack("fgsm", eps=0.1)],
                  batch_size="auto", progress=False)
    assert small.meta["batch_size"] == 40


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": "big"}, "batch_size must be a positive integer or 'auto'"),
    ({"optimize": "yes"}, "optimize must be True, False or one of channels_last, contiguous"),
    ({"compile": 1}, "compile must be True or False"),
])
def test_bad_speed_settings_are_one_line_errors(model, digits, kwargs, match):
    with pytest.raises(RobustfairError, match=match):
        audit(model, digits.test.x[:4], digits.test.y[:4], attacks=[build_attack("fgsm", eps=0.1)],
              progress=False, **kwargs)


@pytest.mark.slow  # torch.compile
def test_compiled_audit_gives_the_same_predictions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.rand(40, 3, 2, 2)
    with torch.no_grad():
        y = net(x).argmax(1)
    attacks = [build_attack("pgd", eps=0.05, steps=3, random_start=False)]
    plain = audit(net, x, y, attacks=attacks, progress=False, optimize=False)
    compiled = audit(net, x, y, attacks=attacks, progress=False, compile=True)
    assert compiled.meta["model_optimizations"] == ["torch.compile"]
    assert (compiled.predictions.pgd_pred == plain.predictions.pgd_pred).mean() >= 0.95


def test_a_pinned_layout_is_the_one_the_view_runs_in(model, digits):
    x, y = digits.test.x[:40], digits.test.y[:40]
    attacks = [build_attack("fgsm", eps=0.1)]
    for layout in ("channels_last", "contiguous"):
        report = audit(model, x, y, attacks=attacks, progress=False, optimize=layout)
        assert ("channels_last" in report.meta["model_optimizations"]) == (layout == "channels_last")
        assert "batchnorm folded into 4 convolutions" in report.meta["model_optimizations"]
