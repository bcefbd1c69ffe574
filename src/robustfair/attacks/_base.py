"""The attack contract: ``attack.perturb(model, x, y, target=None) -> AttackResult``.

Images are in [0, 1] (normalisation is inside the model). ``eps`` is a float or a per-sample
tensor. An attack puts the model in eval mode only for its own duration and restores the
caller's mode afterwards. Within one attack, restarts keep the *first* adversarial example
found for each point, and a point already fooled is not attacked further.
"""
from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import torch
from torch import nn

from .._tensor_checks import as_float_images, check_model_input
from ..errors import AttackError

NORMS = ("linf", "l2")


@dataclass
class AttackResult:
    """What an attack found for each point.

    ``x_adv``: the adversarial images (the clean image where nothing was found);
    ``pred``: the model's prediction on ``x_adv``;
    ``success``: the attack's goal was met (untargeted: ``pred != y``; targeted: ``pred == target``).
    """

    x_adv: torch.Tensor
    pred: torch.Tensor
    success: torch.Tensor


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every sub-module in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def per_sample(value: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample value to shape N×1×1×1 on ``like``'s device/dtype."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise AttackError(f"per-sample eps must have shape ({n},), got {tuple(t.shape)}")
    return t.view(n, 1, 1, 1)


class Attack(ABC):
    """Base class: validation, eval-mode handling and the settings printed with results."""

    name: ClassVar[str] = "attack"

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        targeted: bool = False,
        seed: int | None = 0,
    ) -> None:
        if norm not in NORMS:
            raise AttackError(f"unknown norm {norm!r}; choose from: {', '.join(NORMS)}")
        if isinstance(eps, torch.Tensor):
            if eps.numel() and ((eps < 0).any() or not torch.isfinite(eps).all()):
                raise AttackError("eps must be finite and non-negative")
        elif not (isinstance(eps, (int, float)) and eps >= 0 and math.isfinite(eps)):
            raise AttackError(f"eps must be a finite non-negative number, got {eps!r}")
        self.eps = eps
        self.norm = norm
        self.targeted = targeted
        self.seed = seed

    def settings(self) -> dict:
        """Every setting that decides the result, for printing beside the numbers."""
        eps = self.eps if not isinstance(self.eps, torch.Tensor) else "per-sample"
        return {"attack": self.name, "eps": eps, "norm": self.norm, "targeted": self.targeted,
                "seed": self.seed}

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings().items())

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack ``model`` at ``(x, y)``; ``target`` (class per point) for targeted attacks."""
        x = as_float_images(x)
        check_model_input(model, x)
        y = y.to(x.device)
        if self.targeted:
            if target is None:
                raise AttackError(f"{self.name} is targeted: give a target class per point")
            target = torch.as_tensor(target, device=x.device).long()
            if target.dim() > 1 or (target.dim() == 1 and len(target) != len(x)):
                raise AttackError(
                    f"target must be one class or one class per point ({len(x)}), "
                    f"got shape {tuple(target.shape)}"
                )
            target = target.expand(len(x)).clone()
        elif target is not None:
            raise AttackError(f"{self.name} is untargeted: a target was given")
        with eval_mode(model):
            if x.numel() == 0:
                empty = torch.zeros(0, dtype=torch.long, device=x.device)
                return AttackResult(x.clone(), empty, empty.bool())
            return self._perturb(model, x, y, target)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        return self.perturb(model, x, y, target).x_adv

    @abstractmethod
    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> AttackResult:
        """Subclasses implement the attack; the model is already in eval mode."""


AttackFactory = Callable[..., Attack]
_REGISTRY: dict[str, AttackFactory] = {}


def register_attack(name: str) -> Callable[[AttackFactory], AttackFactory]:
    def deco(cls: AttackFactory) -> AttackFactory:
        _REGISTRY[name] = cls
        return cls

    return deco


def list_attacks() -> list[str]:
    return sorted(_REGISTRY)


def build_attack(name: str, **settings) -> Attack:
    """Build a registered attack: ``build_attack("pgd", eps=8/255, steps=20)``."""
    if name not in _REGISTRY:
        raise AttackError(f"unknown attack {name!r}; choose from: {', '.join(list_attacks())}")
    try:
        return _REGISTRY[name](**settings)
    except TypeError as exc:
        raise AttackError(f"bad settings for attack {name!r}: {exc}") from None
