"""What every training objective shares: the per-batch context and the training attack.

An objective maps a batch to a scalar loss (plus the logits whose accuracy the progress bar
shows). The mitigations reach it through :class:`Batch`: per-sample loss weights, per-sample
attack radius and step, per-sample TRADES beta, targets for targeted training, and logit
offsets that enter the loss (never the attack).

The training attack here differs from :mod:`robustfair.attacks` on purpose: it always runs
all its steps on every point (a point that is already fooled keeps climbing the loss, as in
Madry et al.), it can maximise TRADES' KL divergence, and it draws its random start from the
trainer's per-epoch generator so a resumed run repeats it exactly. It shares the threat
model's geometry (projection, random start, steepest-ascent step) with the attacks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks import ascent_direction, eval_mode, project, random_start
from ..mitigations import MitigationStack, weighted_mean


@dataclass
class Batch:
    """One training batch and what the mitigations made of it (tensors on the batch's device)."""

    x: torch.Tensor                         # float images in [0, 1], augmented
    y: torch.Tensor                         # int64 labels
    eps: torch.Tensor                       # Tensor[N] attack radius per sample
    alpha: torch.Tensor                     # Tensor[N] attack step per sample
    generator: torch.Generator              # the epoch's generator on the batch's device
    attack_model: nn.Module                 # the bare model (no DDP / compile wrapper)
    mitigations: MitigationStack = field(default_factory=MitigationStack)
    weights: torch.Tensor | None = None     # Tensor[N] loss weight per sample
    beta: torch.Tensor | None = None        # Tensor[N] TRADES beta per sample
    target: torch.Tensor | None = None      # Tensor[N] target class (-1: untargeted)
    offsets: torch.Tensor | None = None     # Tensor[K] or Tensor[K, K] logit offsets
    label_smoothing: float = 0.0
    autocast: Callable[[], ContextManager] = contextlib.nullcontext
    epoch: int = 0
    step: int = 0


class Objective:
    """Base class: ``loss, logits = objective(model, batch)``."""

    name: ClassVar[str] = "objective"
    adversarial: ClassVar[bool] = True
    # a natural term plus a robust term weighted by a per-sample beta (TRADES): mitigations
    # that weight the two terms apart use class_beta; with one adversarial term they use
    # class_weights alone
    beta_weighted: ClassVar[bool] = False

    def __init__(self, *, steps: int = 10, norm: str = "linf", beta: float = 6.0,
                 trades_start: float = 0.001) -> None:
        self.steps = steps
        self.norm = norm
        self.beta = beta
        self.trades_start = trades_start

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def with_offsets(logits: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """Logits plus the mitigations' offsets (a K vector for all rows, or row ``O[y_i]``)."""
    if offsets is None:
        return logits
    return logits + (offsets if offsets.dim() == 1 else offsets[y])


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-sample cross-entropy in float32, with offsets and label smoothing."""
    return F.cross_entropy(with_offsets(logits.float(), y, batch.offsets), y,
                           reduction="none", label_smoothing=batch.label_smoothing)


def reduce_loss(model: nn.Module, batch: Batch, logits: torch.Tensor, per_sample: torch.Tensor,
                *, logits_clean: torch.Tensor | None,
                logits_adv: torch.Tensor | None) -> torch.Tensor:
    """The mitigations' loss hooks, then the weighted mean (the plain mean without them)."""
    if not batch.mitigations:
        return weighted_mean(per_sample, batch.weights)
    return batch.mitigations.loss(
        with_offsets(logits.float(), batch.y, batch.offsets), batch.y, per_sample,
        weights=batch.weights, logits_clean=logits_clean, logits_adv=logits_adv, model=model,
        epoch=batch.epoch, step=batch.step)


def _kl_per_sample(log_p_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """``KL(p_clean || p_adv)`` per sample (summed over classes)."""
    return F.kl_div(log_p_adv, p_clean, reduction="none").sum(dim=1)


def training_attack(
    batch: Batch,
    *,
    steps: int,
    norm: str,
    loss: str = "ce",
    start: str = "uniform",
    start_std: float = 0.001,
) -> torch.Tensor:
    """Adversarial examples for training: ``steps`` projected ascent steps on every point.

    ``loss="ce"`` maximises cross-entropy (PGD-AT, FGSM-RS); ``loss="kl"`` maximises
    ``KL(p(x) || p(x'))`` (TRADES). Points with ``batch.target[i] >= 0`` instead minimise the
    cross-entropy to that target. ``start`` is ``"uniform"`` in the ball, ``"normal"``
    (``start_std``·N(0, 1), TRADES) or ``"none"``. The model is in eval mode throughout.
    """
    model, x, y = batch.attack_model, batch.x, batch.y
    eps = batch.eps.view(-1, 1, 1, 1).to(x.dtype)
    alpha = batch.alpha.view(-1, 1, 1, 1).to(x.dtype)
    target = batch.target
    # no host sync to ask whether any point is targeted: torch.where picks per point (on a
    # GPU every bool() of a device tensor waits for the device)
    targeted = None if target is None else target >= 0
    # without targets every point ascends the same loss: summed inside the kernel, the same
    # gradient as the per-point losses' sum, with two kernels fewer per step
    ce_sum = loss == "ce" and targeted is None
    box = _linf_box(x, eps) if norm == "linf" else None
    with eval_mode(model), torch.enable_grad():
        p_clean = None
        if loss == "kl":
            with torch.no_grad(), batch.autocast():
                p_clean = F.softmax(model(x).float(), dim=1)
        if start == "uniform":
            x_adv = random_start(x, eps, norm, batch.generator)
        elif start == "normal":
            noise = torch.randn(x.shape, generator=batch.generator, device=x.device, dtype=x.dtype)
            x_adv = project(x + start_std * noise, x, eps, norm)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with batch.autocast():
                logits = model(x_adv).float()
            if ce_sum:
                objective = F.cross_entropy(logits, y, reduction="sum")
            else:
                if loss == "kl":
                    per_point = _kl_per_sample(F.log_softmax(logits, dim=1), p_clean)
                else:
                    per_point = F.cross_entropy(logits, y, reduction="none")
                if targeted is not None:
                    toward = -F.cross_entropy(logits, target.clamp_min(0), reduction="none")
                    per_point = torch.where(targeted, toward, per_point)
                objective = per_point.sum()
            (grad,) = torch.autograd.grad(objective, x_adv)
            with torch.no_grad():
                x_adv = _ascend(x_adv, grad, x, alpha, eps, norm, box)
    return x_adv.detach()


def _linf_box(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each coordinate may go: the L-inf ball around ``x`` intersected with [0, 1],
    ``max(x - eps, 0)`` to ``min(x + eps, 1)``, made once per batch."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def _ascend(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor,
            eps: torch.Tensor, norm: str,
            box: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """One step: ``project(x_adv + alpha * ascent_direction(grad), x, eps)``; ``box`` is
    :func:`_linf_box` for L-inf, None for L2.

    L-inf clamps the step into the batch's ``box`` (:func:`_linf_box`): three kernels (the
    sign, the step, one clamp between two tensors of the point's own shape) where the
    projection's own arithmetic (``x + clamp(delta, -eps, eps)``, then the [0, 1] box) takes
    six, two of them clamps against per-point bounds broadcast over the image. On small models
    a training step is many small kernels, so each one counts, on a GPU as on a CPU. The two
    agree up to the rounding of ``x ± eps`` (one unit in the last place): the same ball.
    """
    if box is None:
        return project(x_adv + alpha * ascent_direction(grad, norm), x, eps, norm)
    low, high = box
    # alpha * sign is exact, so addcmul rounds the sum as x_adv + alpha * sign does
    return torch.addcmul(x_adv, alpha, grad.sign()).clamp_(low, high)


__all__ = ["Batch", "Objective", "cross_entropy", "reduce_loss", "training_attack", "with_offsets"]
