"""benchmarks/bench_unseen.py's row counter: exact counts, and robustfair's attack view still
traces (and rewrites) the counted model, so counting does not slow one library down."""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_unseen  # noqa: E402

from robustfair.models import attack_view  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()


def test_counts_forward_and_backward_rows_separately():
    counted = bench_unseen.RowCounter(_net())
    x = torch.rand(5, 3, 4, 4)
    with torch.no_grad():
        counted(x)
    assert counted.take() == (5, 0)
    xg = x[:3].clone().requires_grad_(True)
    torch.autograd.grad(counted(xg).sum(), xg)
    counted(xg)  # a forward pass with no backward counts its rows once
    assert counted.take() == (6, 3)
    assert counted.take() == (0, 0)


def test_attack_view_still_rewrites_the_counted_model():
    counted = bench_unseen.RowCounter(_net())
    x = torch.rand(6, 3, 4, 4)
    view = attack_view(counted, x)
    assert view.fallback_reason is None
    assert any("batchnorm folded" in a for a in view.applied)
    counted.take()
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(view(xg).sum(), xg)
    assert counted.take() == (6, 6)
    assert torch.allclose(view(x), counted.net(x), atol=1e-5)
