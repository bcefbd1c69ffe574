"""Inputs an attack cannot attack are one-line errors before any step: images whose channels the
model does not take, and an infinite radius (which would make every step NaN)."""
from __future__ import annotations

import pytest
import torch

from robustfair.attacks import build_attack
from robustfair.auditing import audit
from robustfair.errors import AttackError, ModelError
from robustfair.models import build_model


@pytest.fixture(scope="module")
def grey_model():
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=4,
                       hidden=8).eval()


def test_colour_images_into_a_grey_model_are_one_line(grey_model):
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    with pytest.raises(ModelError, match="takes 1-channel images, got 3-channel"):
        build_attack("pgd", eps=0.1, steps=2).perturb(grey_model, x, y)
    with pytest.raises(ModelError, match="takes 1-channel images, got 3-channel"):
        audit(grey_model, x, y, attacks=[build_attack("pgd", eps=0.1, steps=2)], progress=False)


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "fgsm"])
def test_an_infinite_eps_is_refused_not_nan(name):
    with pytest.raises(AttackError, match="finite"):
        build_attack(name, eps=float("inf"), norm="l2")
    with pytest.raises(AttackError, match="finite"):
        build_attack(name, eps=torch.tensor([0.1, float("inf")]), norm="l2")
