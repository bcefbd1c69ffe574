"""Models that cannot take an empty batch (many published ones flatten with ``x.view(N, -1)``,
which fails on 0 rows) must never be called on one: not when every point is misclassified
before the attacks start, nor once every point has been fooled."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robustfair as rf


class FlattensWithView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 4)  # apgd-t needs at least 4 classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:  # what view(0, -1) does in such models, made explicit
            raise RuntimeError("cannot reshape tensor of 0 elements into shape [0, -1]")
        return self.fc(torch.relu(self.conv(x)).view(x.size(0), -1))


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "cw", "apgd-ce", "apgd-t", "fab-t", "square"])
def test_no_empty_batch_when_every_point_is_wrong(attack):
    torch.manual_seed(0)
    model = FlattensWithView().eval()
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        y = (model(x).argmax(1) + 1) % 4  # every point misclassified before any attack
    options = {"square": {"n_queries": 10}, "fgsm": {}}.get(attack, {"steps": 2})
    report = rf.audit(model, x, y, attacks=[rf.build_attack(attack, eps=8 / 255, **options)])
    assert report.overall["clean_acc"] == 0 and report.overall["robust_acc"] == 0
