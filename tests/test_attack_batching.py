"""``perturb(..., batch_size=B)``: at most B points per pass, and PGD keeps its passes full.

PGD admits waiting points as others leave (fooled, or checked after their last step); FGSM
and APGD take the points in consecutive pieces. What must hold: no pass above B, every point
not fooled gets all its steps, every success is a real adversarial example in the ball, the
result equals the unbatched one when everything fits, and the attack is as strong as running
batch after batch.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robustfair as rf
from robustfair.attacks import build_attack
from robustfair.attacks import _search
from robustfair.attacks._search import PASS_SIZES
from robustfair.errors import AttackError

from digits_model import train_small_cnn


class _Recording(nn.Module):
    """Wraps a model and records the size of every forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.inner(x)


@pytest.fixture(scope="module")
def digits():
    ds = rf.load_dataset("digits")
    return ds, ds.test.x.float() / 255, ds.test.y


@pytest.fixture(scope="module")
def net(digits):
    return train_small_cnn(digits[0], epochs=3)


def _clean_logits(model, x):
    with torch.no_grad():
        return model(x)


def test_pgd_passes_stay_within_batch_size_and_survivors_get_every_step(net, digits):
    # eps 0 fools nobody: every clean-correct point is checked steps + 1 times, in full passes.
    _, x, y = digits
    x, y = x[:100], y[:100]
    model = _Recording(net).eval()
    logits = _clean_logits(net, x)
    correct = int((logits.argmax(1) == y).sum())
    steps, batch = 3, 16
    res = build_attack("pgd", eps=0.0, steps=steps).perturb(model, x, y, clean_logits=logits,
                                                            batch_size=batch)
    assert max(model.sizes) == batch
    # no padding on the CPU: every row of every pass is a point being attacked
    points = correct * (steps + 1)
    assert sum(model.sizes) == points
    full = sum(1 for s in model.sizes if s == batch)
    assert full >= points // batch - 1  # only the drain at the end is partial
    assert int(res.success.sum()) == len(y) - correct


@pytest.mark.parametrize("name,settings", [
    ("pgd", {"steps": 10}), ("pgd", {"steps": 5, "restarts": 2, "norm": "l2"}),
    ("fgsm", {}), ("apgd-ce", {"steps": 10}),
])
def test_batched_successes_are_real_and_as_many_as_batch_by_batch(net, digits, name, settings):
    _, x, y = digits
    eps = 0.1 if settings.get("norm") != "l2" else 0.6
    attack = build_attack(name, eps=eps, **settings)
    model = _Recording(net).eval()
    batch = 32
    res = attack.perturb(model, x, y, batch_size=batch)
    assert max(model.sizes) <= batch
    # batch after batch, the way a caller without batch_size would do it
    by_batch = [attack.perturb(net, x[s:s + batch], y[s:s + batch]) for s in range(0, len(x), batch)]
    success_by_batch = torch.cat([r.success for r in by_batch])
    rate, rate_by_batch = float(res.success.double().mean()), float(success_by_batch.double().mean())
    assert 0.05 < rate_by_batch < 0.95  # there is something to find and something left
    assert rate >= rate_by_batch - 0.02  # random starts differ; strength does not
    # every success is adversarial on the model itself, and within the ball and the box
    with torch.no_grad():
        pred = net(res.x_adv).argmax(1)
    assert torch.equal(pred[res.success], res.pred[res.success])
    assert bool((pred[res.success] != y[res.success]).all())
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if settings.get("norm") != "l2" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert torch.equal(res.x_adv[~res.success], x[~res.success])


@pytest.mark.parametrize("name", ["pgd", "fgsm", "apgd-ce"])
def test_a_batch_size_that_fits_everything_changes_nothing(net, digits, name):
    _, x, y = digits
    x, y = x[:64], y[:64]
    attack = build_attack(name, eps=0.1, **({"steps": 5} if name != "fgsm" else {}))
    plain = attack.perturb(net, x, y)
    batched = attack.perturb(net, x, y, batch_size=64)
    assert torch.equal(plain.x_adv, batched.x_adv)
    assert torch.equal(plain.pred, batched.pred)


def test_refilling_pgd_needs_fewer_passes_than_batch_by_batch(net, digits):
    _, x, y = digits
    attack = build_attack("pgd", eps=0.1, steps=10)
    pooled = _Recording(net).eval()
    attack.perturb(pooled, x, y, batch_size=32)
    one_by_one = _Recording(net).eval()
    for s in range(0, len(x), 32):
        attack.perturb(one_by_one, x[s:s + 32], y[s:s + 32])
    assert len(pooled.sizes) < 0.8 * len(one_by_one.sizes)
    # the same kind of work, in fewer and fuller passes
    assert sum(pooled.sizes) <= 1.05 * sum(one_by_one.sizes)


def test_bad_batch_size_is_a_one_line_error(net, digits):
    _, x, y = digits
    with pytest.raises(AttackError, match="batch_size must be an integer >= 1"):
        build_attack("pgd", eps=0.1).perturb(net, x[:4], y[:4], batch_size=0)


def test_audit_pools_batches_for_pgd_and_reports_the_same_kind_of_result(net, digits):
    _, x, y = digits
    model = _Recording(net).eval()
    report = rf.audit(model, x, y, attacks=[build_attack("pgd", eps=0.1, steps=10)],
                      batch_size=32, progress=False)
    assert max(model.sizes) <= 32
    p = report.predictions
    fooled = (p["pgd_pred"] != p["y_true"]) & (p["clean_pred"] == p["y_true"])
    assert 0.05 < float(fooled.mean()) < 0.95


def test_pgd_admits_the_points_farthest_from_the_boundary_first(net, digits):
    _, x, y = digits
    x, y = x[:120], y[:120]
    logits = _clean_logits(net, x)
    top2 = logits.topk(2, dim=1).values
    correct = logits.argmax(1) == y
    margin = torch.where(correct, top2[:, 0] - top2[:, 1], torch.full_like(top2[:, 0], -1.0))

    class FirstPass(nn.Module):
        def __init__(self):
            super().__init__()
            self.first: torch.Tensor | None = None

        def forward(self, t):
            if self.first is None:
                self.first = t.detach().clone()
            return net(t)

    model = FirstPass().eval()
    build_attack("pgd", eps=0.0, steps=1, random_start=False).perturb(
        model, x, y, clean_logits=logits, batch_size=16)
    # the first pass holds exactly the 16 correct points of largest clean margin
    expected = x[margin.argsort(descending=True)[:16]]
    got = model.first
    assert got.shape == expected.shape
    assert torch.equal(got.flatten(1).sort(dim=0).values, expected.flatten(1).sort(dim=0).values)


@pytest.mark.parametrize("capacity", [1, 7, 32, 128, 256, 1000])
def test_pass_sizes_are_few_and_waste_under_an_eighth(capacity):
    assert _search.pass_rows(0, capacity) == 0  # an empty pass stays empty
    rows = [_search.pass_rows(n, capacity) for n in range(1, capacity + 1)]
    assert rows[-1] == capacity
    assert all(n <= r <= capacity for n, r in zip(range(1, capacity + 1), rows))
    assert all(a <= b for a, b in zip(rows, rows[1:]))  # more points never get fewer rows
    assert all(r - n < max(1, n / PASS_SIZES) for n, r in zip(range(1, capacity + 1), rows))
    # at most PASS_SIZES sizes per doubling (the first 2 * PASS_SIZES sizes are exact)
    octaves = max(1, capacity.bit_length() - (2 * PASS_SIZES).bit_length() + 2)
    assert len(set(rows)) <= 2 * PASS_SIZES + PASS_SIZES * octaves


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_cuda_passes_run_on_a_few_fixed_sizes_and_the_padding_changes_nothing(net, digits, name,
                                                                               monkeypatch):
    # On CUDA a shrinking batch is padded up to one of a few sizes (pass_rows, for the
    # allocator); the padded rows must not touch any real point's gradient, step or result.
    # Here the CUDA rule is switched on for the CPU; on the CPU itself nothing is padded.
    _, x, y = digits
    x, y = x[:200], y[:200]
    attack = build_attack(name, eps=0.1, steps=10)
    batch = 64
    exact = _Recording(net).eval()
    plain = attack.perturb(exact, x, y, batch_size=batch)
    monkeypatch.setattr(_search, "pads", lambda device: True)
    padded = _Recording(net).eval()
    res = attack.perturb(padded, x, y, batch_size=batch)
    sizes = set(padded.sizes)
    allowed = {_search.pass_rows(n, batch) for n in range(1, batch + 1)}
    assert sizes <= allowed
    assert len(sizes) > 1  # the batch did shrink
    assert sum(exact.sizes) < sum(padded.sizes)  # some passes were padded
    assert not set(exact.sizes) <= allowed  # and on the CPU they are not
    assert torch.equal(plain.success, res.success)
    assert torch.equal(plain.pred, res.pred)
    assert torch.allclose(plain.x_adv, res.x_adv, atol=1e-6)
