"""Performance properties of the audit that are behaviour, not timing.

* it streams: the model never sees more than ``batch_size`` images at once, and the peak
  resident memory of an audit does not grow with the number of images;
* it runs the clean forward pass once per batch: attacks reuse the audit's clean logits, and
  reusing them changes no result.
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from robustfair.attacks import build_attack
from robustfair.auditing import POOL_BATCHES, audit
from robustfair.errors import AttackError


class _Counting(nn.Module):
    """A small conv net that records how many images each forward pass received."""

    def __init__(self, channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes))
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.net(x)


def _own_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Labels the model gets right: every point is then attacked."""
    with torch.no_grad():
        y = model(x.float() / 255).argmax(1)
    model.sizes.clear()
    return y


def test_audit_moves_at_most_one_batch():
    torch.manual_seed(0)
    model = _Counting()
    x = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8)
    y = _own_labels(model, x)
    attacks = [build_attack("fgsm", eps=0.05), build_attack("pgd", eps=0.05, steps=3)]
    report = audit(model, x, y, attacks=attacks, batch_size=16, progress=False)
    assert len(report.predictions) == 100
    assert max(model.sizes) == 16
    assert sum(1 for s in model.sizes if s == 16) >= 100 // 16  # it did see full batches


def test_audit_runs_the_clean_pass_once_per_batch():
    # One batch, FGSM: the audit's clean pass, FGSM's gradient pass on the points still to
    # attack and its check of the adversarial images; no second clean pass inside the attack.
    torch.manual_seed(0)
    model = _Counting()
    x = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    y = _own_labels(model, x)
    # optimize=False: the check of the faster view would add calls of its own on 8 rows;
    # sanity=False: so would the sanity checks (tests/test_sanity.py covers them). The first
    # call, on 8 rows, is the check whether the model writes into its input (_model_checks);
    # the second, on one point, the audit's check of the model's output width.
    audit(model, x, y, attacks=[build_attack("fgsm", eps=0.05)], batch_size=24, progress=False,
          optimize=False, sanity=False)
    assert model.sizes == [8, 1, 24, 24, 24]


@pytest.mark.parametrize("name,settings", [
    ("fgsm", {}), ("pgd", {"steps": 4}), ("apgd-ce", {"steps": 6}),
])
def test_clean_logits_change_no_result(name, settings):
    torch.manual_seed(0)
    model = _Counting().eval()
    x = torch.rand(20, 3, 8, 8)
    y = torch.randint(0, 5, (20,))
    attack = build_attack(name, eps=0.1, **settings)
    plain = attack.perturb(model, x, y)
    with torch.inference_mode():
        logits = model(x)
    reused = attack.perturb(model, x, y, clean_logits=logits)
    assert torch.equal(plain.x_adv, reused.x_adv)
    assert torch.equal(plain.pred, reused.pred)
    assert torch.equal(plain.success, reused.success)


def test_clean_logits_of_the_wrong_size_are_refused():
    model = _Counting().eval()
    x, y = torch.rand(6, 3, 8, 8), torch.zeros(6, dtype=torch.long)
    with pytest.raises(AttackError, match="clean_logits has 5 rows for 6 images"):
        build_attack("pgd", eps=0.1, steps=2).perturb(model, x, y, clean_logits=torch.zeros(5, 5))


def _peak_growth_mib(model, x, y, batch_size: int) -> float:
    """Peak RSS during one audit above the RSS just before it (Linux: VmHWM reset via clear_refs)."""
    def status(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(key)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets this process's peak RSS (VmHWM) to its current RSS
    before = status("VmRSS")
    audit(model, x, y, attacks=[build_attack("fgsm", eps=0.05)], batch_size=batch_size,
          progress=False)
    return status("VmHWM") - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
def test_audit_peak_memory_does_not_grow_with_n():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    torch.manual_seed(0)
    model = _Counting().eval()
    # The audit holds one pool of POOL_BATCHES batches at a time: from one pool on, more points
    # must not mean more memory.
    n_small = POOL_BATCHES * 64
    n_large = 5 * n_small
    x = torch.randint(0, 256, (n_large, 3, 32, 32), dtype=torch.uint8)  # the caller's images
    y = _own_labels(model, x)
    _peak_growth_mib(model, x[:n_small], y[:n_small], 64)  # warm-up: kernels, allocator pools
    small = _peak_growth_mib(model, x[:n_small], y[:n_small], 64)
    large = _peak_growth_mib(model, x, y, 64)
    # A float32 copy of the extra images alone would add (n_large - n_small) * 12 KiB ≈ 24 MiB.
    extra_float_copy = (n_large - n_small) * 3 * 32 * 32 * 4 / 2**20
    assert large - small < extra_float_copy / 3, (small, large)
