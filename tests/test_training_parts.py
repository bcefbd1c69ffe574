"""Training building blocks, each checked against a direct computation: config, schedules,
augmentation, EMA, the training attack, objectives with mitigation hooks, checkpoint files."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from robustfair.errors import ConfigError, RobustfairError
from robustfair.training import TrainConfig
from robustfair.training import checkpoint as ckpt
from robustfair.training.augment import augment, default_flip, default_pad, random_crop
from robustfair.training.ema import EMA
from robustfair.training.evaluate import stratified_holdout
from robustfair.training.mitigations import (
    Mitigation,
    MitigationContext,
    MitigationStack,
    build_mitigation,
)
from robustfair.training.objectives import Batch, build_objective, training_attack
from robustfair.training.optim import build_optimizer, lr_at


# ----------------------------------------------------------------------------- config
def test_config_parses_fractions_and_defaults_alpha():
    cfg = TrainConfig.from_dict({"eps": "8/255", "lr": "2e-3", "steps": "10", "nesterov": "true",
                                 "optimizer": "SGD"})
    assert cfg.eps == pytest.approx(8 / 255) and cfg.lr == 2e-3 and cfg.steps == 10
    assert cfg.optimizer == "sgd" and cfg.nesterov is True
    assert cfg.attack_alpha() == pytest.approx(2 / 255)  # Madry: 2.5 * eps / steps
    assert cfg.replace(objective="fgsm_rs").attack_alpha() == pytest.approx(1.25 * 8 / 255)


@pytest.mark.parametrize("bad, fragment", [
    ({"objective": "pgdx"}, "unknown objective 'pgdx'"),
    ({"eps": "8/0"}, "eps '8/0' is not a number"),
    ({"lr": "fast"}, "lr 'fast' is not a number"),
    ({"optimiser": "sgd"}, "unknown training option(s): optimiser"),
    ({"keep": "best"}, "unknown keep 'best'"),
    ({"objective": "pgd_at", "eps": 0}, "needs eps > 0"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"mitigations": [3]}, "a mitigation must be a name"),
])
def test_config_rejects_bad_input_in_one_line(bad, fragment):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(bad)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_config_from_yaml_with_overrides_and_differences(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective: trades\neps: 0.1\nepochs: 3\nmitigations:\n  - name: class_weight\n"
                    "    weights: {'3': 50}\n")
    cfg = TrainConfig.from_yaml(path, epochs=5, device="cpu")
    assert (cfg.objective, cfg.eps, cfg.epochs) == ("trades", 0.1, 5)
    assert cfg.mitigations == [{"name": "class_weight", "weights": {"3": 50}}]
    # runtime settings do not make a run different; results-deciding ones do
    assert cfg.differences(cfg.replace(device="cuda", amp="off")) == []
    assert cfg.differences(cfg.replace(lr=0.2, seed=1).to_dict()) == ["lr", "seed"]
    (tmp_path / "bad.yaml").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------- schedules
def test_schedules_match_their_formulas():
    total, per_epoch = 100, 10
    cos = TrainConfig(lr=0.2, schedule="cosine", epochs=10)
    for s in (0, 37, 99):
        assert lr_at(cos, s, total_steps=total, steps_per_epoch=per_epoch) == pytest.approx(
            0.1 * (1 + math.cos(math.pi * s / total)))
    step = TrainConfig(lr=0.2, schedule="step", epochs=10, milestones=[0.5, 0.75], gamma=0.1)
    got = [lr_at(step, s, total_steps=total, steps_per_epoch=per_epoch) for s in (49, 50, 74, 75)]
    assert got == pytest.approx([0.2, 0.02, 0.02, 0.002])
    one = TrainConfig(lr=0.2, schedule="onecycle", epochs=10, onecycle_peak=0.4)
    lrs = [lr_at(one, s, total_steps=total, steps_per_epoch=per_epoch) for s in range(total)]
    assert max(lrs) == pytest.approx(0.2, rel=0.02) and lrs.index(max(lrs)) in (39, 40)
    assert lrs[0] < 0.01 and lrs[-1] < 0.01 and all(v > 0 for v in lrs)
    warm = TrainConfig(lr=0.2, schedule="constant", epochs=10, warmup_epochs=2)
    assert lr_at(warm, 9, total_steps=total, steps_per_epoch=per_epoch) == pytest.approx(0.2 * 10 / 20)
    assert lr_at(warm, 50, total_steps=total, steps_per_epoch=per_epoch) == 0.2


def test_optimizers_follow_the_config():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True,
                                      weight_decay=1e-4), params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"] is True
    assert sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(build_optimizer(TrainConfig(optimizer="adam"), params), torch.optim.Adam)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_attack_view_follows_every_optimizer_step(name):
    """The inner attack's view caches weights derived from the live ones and recomputes them
    when a source tensor's version changes: an optimiser that updated the weights without
    bumping their versions (torch 2.13's fused SGD/Adam kernels do not) would leave the attack
    on stale weights, and PGD-AT would train on points that are not adversarial (with fused
    Adam the demo's validation robust accuracy fell from about 65% to 3-6%)."""
    from robustfair.models import attack_view, build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    x = torch.rand(16, 1, 8, 8)
    view = attack_view(model, x)
    assert view.applied  # batch norm folded: the view holds derived weights
    opt = build_optimizer(TrainConfig(optimizer=name, lr=0.1), model.parameters())
    for _ in range(2):
        model.eval()  # no batch-norm statistics update: only the optimiser changes the sources
        F.cross_entropy(model(x), torch.arange(16) % 10).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            torch.testing.assert_close(view(x), model.eval()(x), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- augmentation
def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.rand(6, 2, 5, 5)
    g = torch.Generator().manual_seed(3)
    out = random_crop(x, pad=2, mode="zeros", generator=g)
    offsets = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(3))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        r, c = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(out[i], padded[i, :, r:r + 5, c:c + 5])
    reflect = random_crop(x, pad=1, mode="reflect", generator=torch.Generator().manual_seed(0))
    assert reflect.shape == x.shape and set(reflect.flatten().tolist()) <= set(x.flatten().tolist())


def test_flip_mirrors_about_half_and_dataset_defaults():
    x = torch.rand(400, 1, 3, 3)
    out = augment(x, pad=0, mode="zeros", flip=True, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, a.flip(2)) for o, a in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, a) for o, a in zip(out, x, strict=True)])
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250
    assert default_flip("cifar10") and default_flip("tiny_imagenet")
    assert not default_flip("digits") and not default_flip("mnist") and not default_flip("svhn")
    assert default_flip("digits", {"hflip": True})
    assert (default_pad(32), default_pad(8), default_pad(28)) == (4, 1, 3)


# ----------------------------------------------------------------------------- EMA, holdout
def test_ema_is_the_exponential_average_of_the_weights_with_a_warm_up():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.2)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3))  # moves the BatchNorm statistics and its counter
        ema.update(model)
        d = min(0.2, (1 + t) / (10 + t))  # 0.1, 0.18, 0.2, 0.2
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    for k, v in ema.state_dict().items():
        assert torch.allclose(v.float(), expected[k].float(), atol=1e-6), k


def test_stratified_holdout_keeps_class_shares_and_is_disjoint():
    y = torch.arange(10).repeat_interleave(torch.arange(10, 110, 10))
    train, val = stratified_holdout(y, 0.1, 10_000, seed=0, num_classes=10)
    assert torch.bincount(y[val], minlength=10).tolist() == list(range(1, 11))
    assert len(set(train.tolist()) & set(val.tolist())) == 0 and len(train) + len(val) == len(y)
    _, capped = stratified_holdout(y, 0.5, 55, seed=0, num_classes=10)
    assert len(capped) <= 60
    again = stratified_holdout(y, 0.1, 10_000, seed=0, num_classes=10)[1]
    assert torch.equal(val, again)


# ----------------------------------------------------------------------------- training attack
def _linear_model(k=3, d=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, k))


def _batch(model, x, y, eps, alpha, **kw):
    n = len(y)
    return Batch(x=x, y=y, eps=torch.full((n,), eps) if not torch.is_tensor(eps) else eps,
                 alpha=torch.full((n,), alpha), generator=torch.Generator().manual_seed(0),
                 attack_model=model, **kw)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_training_attack_stays_in_the_ball_and_raises_the_loss(norm):
    model = _linear_model()
    x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 3, (32,))
    eps = 0.1 if norm == "linf" else 0.3
    x_adv = training_attack(_batch(model, x, y, eps, eps / 4), steps=10, norm=norm)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-6).all()) and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before = F.cross_entropy(model(x), y, reduction="none")
        after = F.cross_entropy(model(x_adv), y, reduction="none")
    assert bool((after >= before - 1e-6).all()) and after.mean() > before.mean()


def _reference_attack(model, x, y, eps, alpha, norm, steps, target=None):
    """The training attack written out with the attacks' own geometry (what it computed
    before its L-inf step was fused into fewer kernels)."""
    from robustfair.attacks import ascent_direction, project, random_start

    e, a = eps.view(-1, 1, 1, 1), alpha.view(-1, 1, 1, 1)
    x_adv = random_start(x, e, norm, torch.Generator().manual_seed(0))
    model.eval()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        objective = F.cross_entropy(logits, y, reduction="none")
        if target is not None:
            toward = -F.cross_entropy(logits, target.clamp_min(0), reduction="none")
            objective = torch.where(target >= 0, toward, objective)
        (grad,) = torch.autograd.grad(objective.sum(), x_adv)
        with torch.no_grad():
            x_adv = project(x_adv + a * ascent_direction(grad, norm), x, e, norm)
    return x_adv.detach()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targets", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_training_attack_is_the_projected_ascent(norm, targets, layout):
    """L2 runs the attacks' own projection: bit for bit. L-inf clamps each step into the box
    ``[max(x - eps, 0), min(x + eps, 1)]`` made once per batch, which rounds ``x ± eps``
    where the projection rounds ``x + delta``: equal up to one unit in the last place."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(64, 5))
    model = model.to(memory_format=layout)
    x = torch.rand(24, 1, 4, 4).contiguous(memory_format=layout)
    y = torch.randint(0, 5, (24,))
    eps = torch.full((24,), 0.1 if norm == "linf" else 0.5)
    eps[:3] = 0.0  # pinned points
    target = torch.where(torch.arange(24) % 3 == 0, (y + 1) % 5, -1) if targets else None
    batch = Batch(x=x, y=y, eps=eps, alpha=eps / 4, generator=torch.Generator().manual_seed(0),
                  attack_model=model, target=target)
    model.train()
    got = training_attack(batch, steps=5, norm=norm)
    assert model.training  # its mode is given back
    reference = _reference_attack(model, x, y, eps, eps / 4, norm, 5, target)
    if norm == "l2":
        assert torch.equal(got, reference)
    else:
        torch.testing.assert_close(got, reference, rtol=0, atol=1e-7)
        assert torch.equal(got[:3], x[:3])  # radius 0: not moved at all
        assert bool(((got - x).abs() <= eps.view(-1, 1, 1, 1) + 1e-7).all())


def test_training_attack_targets_and_zero_radius():
    model = _linear_model()
    x, y = torch.rand(64, 1, 2, 2) * 0.5 + 0.25, torch.zeros(64, dtype=torch.long)
    target = torch.full((64,), 2)
    x_adv = training_attack(_batch(model, x, y, 0.25, 0.05, target=target), steps=10, norm="linf")
    with torch.no_grad():
        toward = F.cross_entropy(model(x_adv), target, reduction="none")
        assert bool((toward < F.cross_entropy(model(x), target, reduction="none")).all())
    # per-sample radius 0 pins a point to its clean image
    eps = torch.tensor([0.0, 0.2] * 32)
    x_adv = training_attack(_batch(model, x, y, eps, 0.05), steps=3, norm="linf")
    assert torch.equal(x_adv[0::2], x[0::2]) and not torch.equal(x_adv[1::2], x[1::2])


def test_trades_objective_equals_ce_plus_beta_kl_at_its_own_adversarial_point():
    model = _linear_model()
    x, y = torch.rand(16, 1, 2, 2), torch.randint(0, 3, (16,))
    obj = build_objective("trades", steps=3, norm="linf", beta=4.0, trades_start=0.001)
    loss, _ = obj(model, _batch(model, x, y, 0.1, 0.03))
    x_adv = training_attack(_batch(model, x, y, 0.1, 0.03), steps=3, norm="linf", loss="kl",
                            start="normal", start_std=0.001)
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        kl = (p * (p.log() - F.log_softmax(model(x_adv), 1))).sum(1)
        direct = F.cross_entropy(model(x), y) + 4.0 * kl.mean()
    assert float(loss.detach()) == pytest.approx(float(direct), rel=1e-5)
    # a per-class beta from a mitigation: sample i weighs its KL term by beta[y_i]
    beta = torch.tensor([0.0, 1.0, 10.0])
    loss, _ = obj(model, _batch(model, x, y, 0.1, 0.03, beta=beta[y]))
    with torch.no_grad():
        direct = (F.cross_entropy(model(x), y, reduction="none") + beta[y] * kl).mean()
    assert float(loss.detach()) == pytest.approx(float(direct), rel=1e-5)


# ----------------------------------------------------------------------------- mitigation hooks
class _Recorder(Mitigation):
    """Test double: per-class answers given at construction."""

    def __init__(self, weights=None, offsets=None, eps=None, scalar=False):
        self._w, self._o, self._e, self.scalar = weights, offsets, eps, scalar

    def class_weights(self):
        return self._w

    def logit_offsets(self):
        return self._o

    def class_eps(self):
        return self._e

    def loss(self, logits, y, per_sample_loss, **ctx):
        self.seen = ctx
        return (per_sample_loss ** 2).sum() if self.scalar else per_sample_loss


def _stack(*mitigations, k=3):
    stack = MitigationStack(list(mitigations))
    stack.setup(MitigationContext(num_classes=k))
    return stack


def test_standard_objective_with_class_weights_equals_weighted_cross_entropy():
    model = _linear_model()
    x, y = torch.rand(20, 1, 2, 2), torch.randint(0, 3, (20,))
    w = torch.tensor([1.0, 5.0, 0.5])
    stack = _stack(_Recorder(weights=w), _Recorder(weights=torch.tensor([2.0, 1.0, 1.0])))
    combined = stack.class_weights()
    assert torch.equal(combined, torch.tensor([2.0, 5.0, 0.5]))  # weights multiply
    loss, _ = build_objective("standard")(model, _batch(model, x, y, 0.0, 0.0, mitigations=stack,
                                                        weights=combined[y]))
    with torch.no_grad():
        direct = F.cross_entropy(model(x), y, weight=combined)
    assert float(loss.detach()) == pytest.approx(float(direct), rel=1e-6)


def test_logit_offsets_vector_and_ldam_matrix_enter_the_loss():
    model = _linear_model()
    x, y = torch.rand(20, 1, 2, 2), torch.randint(0, 3, (20,))
    margins = torch.tensor([0.5, 0.0, 1.0])
    prior = torch.tensor([0.1, 0.2, 0.3])
    stack = _stack(_Recorder(offsets=-torch.diag(margins)), _Recorder(offsets=prior))
    offsets = stack.logit_offsets()
    assert torch.equal(offsets, -torch.diag(margins) + prior)  # a vector adds to every row
    loss, _ = build_objective("standard")(model, _batch(model, x, y, 0.0, 0.0, mitigations=stack,
                                                        offsets=offsets))
    with torch.no_grad():
        z = model(x) + prior
        z[torch.arange(20), y] -= margins[y]
        direct = F.cross_entropy(z, y)
    assert float(loss.detach()) == pytest.approx(float(direct), rel=1e-6)


def test_loss_hooks_chain_and_a_scalar_must_come_last():
    model = _linear_model()
    x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    last = _Recorder(scalar=True)
    stack = _stack(_Recorder(), last)
    loss, _ = build_objective("standard")(model, _batch(model, x, y, 0.0, 0.0, mitigations=stack))
    with torch.no_grad():
        direct = (F.cross_entropy(model(x), y, reduction="none") ** 2).sum()
    assert float(loss.detach()) == pytest.approx(float(direct), rel=1e-6)
    assert set(last.seen) >= {"weights", "logits_clean", "logits_adv", "model", "epoch", "step"}
    with pytest.raises(ConfigError, match="put it last"):
        build_objective("standard")(model, _batch(model, x, y, 0.0, 0.0,
                                                  mitigations=_stack(_Recorder(scalar=True),
                                                                     _Recorder())))


def test_stack_refuses_two_sources_of_per_class_eps_and_bad_shapes():
    e = torch.tensor([0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="both set class_eps"):
        _stack(_Recorder(eps=e), _Recorder(eps=e)).class_eps()
    with pytest.raises(ConfigError, match="must have shape"):
        _stack(_Recorder(weights=torch.ones(4))).class_weights()


def test_class_weight_mitigation_by_name_or_index():
    ctx = MitigationContext(num_classes=4, classes=["cat", "dog", "3", "7"])
    m = build_mitigation("class_weight", weights={"dog": 10, "0": "2", "3": 50})
    m.setup(ctx)
    # "3" is a class name here (index 2); "0" is an index (cat)
    assert m.class_weights().tolist() == [2.0, 10.0, 50.0, 1.0]
    m = build_mitigation("class_weight", weights="cat=3;7=0.5")
    m.setup(ctx)
    assert m.class_weights().tolist() == [3.0, 1.0, 1.0, 0.5]
    with pytest.raises(ConfigError, match="unknown class 'bird'"):
        build_mitigation("class_weight", weights={"bird": 2}).setup(ctx)
    with pytest.raises(ConfigError, match="unknown mitigation"):
        build_mitigation("no_such_thing")
    with pytest.raises(ConfigError, match="has no option"):
        build_mitigation("class_weight", weight={"cat": 2})


# ----------------------------------------------------------------------------- checkpoint files
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path, name):
    model = _linear_model()
    opt = build_optimizer(TrainConfig(optimizer=name, lr=0.01), model.parameters())
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(torch.rand(4, 1, 2, 2)), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
    tensors, tree = ckpt.optimizer_state(opt)
    ckpt.save_tensors(tmp_path / "s.safetensors", tensors)
    tree = json.loads(json.dumps(tree))
    fresh = build_optimizer(TrainConfig(optimizer=name, lr=0.5), model.parameters())
    ckpt.load_optimizer_state(fresh, tree, ckpt.load_tensors(tmp_path / "s.safetensors"))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 0.01
    for pid, st in a["state"].items():
        for key, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][pid][key]))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_a_channels_last_model_resumed_from_saved_state_steps_as_the_uninterrupted_one(
        tmp_path, name):
    """The saved state comes back contiguous; torch's fused CPU step (2.13) would misread it
    beside a channels_last weight (a wrong update, no error) unless it is laid out again."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(16, 3)).to(memory_format=torch.channels_last)
    x, y = torch.rand(8, 2, 4, 4), torch.arange(8) % 3
    cfg = TrainConfig(optimizer=name, lr=0.05, momentum=0.9)

    def step(net, opt):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    opt = build_optimizer(cfg, model.parameters())
    for _ in range(2):
        step(model, opt)
    tensors, tree = ckpt.optimizer_state(opt)
    ckpt.save_tensors(tmp_path / "s.safetensors", tensors)
    resumed = copy.deepcopy(model)
    fresh = build_optimizer(cfg, resumed.parameters())
    ckpt.load_optimizer_state(fresh, json.loads(json.dumps(tree)),
                              ckpt.load_tensors(tmp_path / "s.safetensors"))
    step(model, opt)
    step(resumed, fresh)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_commit_rolls_forward_after_the_manifest_and_refuses_corruption(tmp_path):
    def writer(text):
        return lambda p: ckpt.atomic_write_text(p, text)

    ckpt.commit(tmp_path, {"a.txt": writer("one")}, {"epoch": 1, "global_step": 1, "config": {}})
    # an epoch killed after its manifest but before the renames: the partial is the truth
    (tmp_path / "a.txt.partial").write_text("two")
    manifest = ckpt.read_manifest(tmp_path)
    manifest["files"]["a.txt"] = ckpt.file_sha256(tmp_path / "a.txt.partial")
    (tmp_path / "state.json").write_text(json.dumps(manifest))
    ckpt.recover(tmp_path, ckpt.read_manifest(tmp_path))
    assert (tmp_path / "a.txt").read_text() == "two" and not (tmp_path / "a.txt.partial").exists()
    # an epoch killed before its manifest: the partial is dropped, the old file stays
    (tmp_path / "a.txt.partial").write_text("three")
    ckpt.recover(tmp_path, ckpt.read_manifest(tmp_path))
    assert (tmp_path / "a.txt").read_text() == "two" and not (tmp_path / "a.txt.partial").exists()
    (tmp_path / "a.txt").write_text("tampered")
    with pytest.raises(ConfigError, match="does not match its digest"):
        ckpt.recover(tmp_path, ckpt.read_manifest(tmp_path))
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(RobustfairError, match="corrupt"):
        ckpt.read_manifest(tmp_path)


# ----------------------------------------------------------------------------- the attack's network
@pytest.mark.parametrize("name, folds", [("small_cnn", True), ("lenet", False), ("mlp", False)])
def test_the_inner_attack_runs_the_view_only_where_it_folds_batch_norm(name, folds):
    from robustfair.models import attack_view, build_model
    from robustfair.training.parts import _attack_net

    model = build_model(name, num_classes=10, in_channels=1, image_size=8)
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(8, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    view = attack_view(model, x, channels_last=True)
    net, applied = _attack_net(model, view)
    assert (net is view) == folds and (net is model) != folds
    assert applied == (list(view.applied) if folds else "as is")
    # either way the same eval-mode function (the view up to folding's rounding)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


def test_optimizers_step_fused_where_torch_can_and_by_default_where_it_cannot():
    from robustfair.training.optim import _fused

    params = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("sgd", "adam", "adamw"):
        assert build_optimizer(TrainConfig(optimizer=name), params).defaults["fused"] is True

    class NoFused(torch.optim.SGD):  # an optimiser (or a torch) without a fused step
        def __init__(self, params, fused=None, **settings):
            if fused:
                raise RuntimeError("fused is not supported here")
            super().__init__(params, **settings)

    fallback = _fused(NoFused, params, lr=0.1)
    assert type(fallback) is NoFused and not fallback.defaults.get("fused")
