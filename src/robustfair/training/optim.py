"""Optimisers and learning-rate schedules.

The schedule is a pure function of the global step (:func:`lr_at`), set on the optimiser before
every step, so a resumed run needs nothing but the step count to continue exactly.

>>> from robustfair.training.config import TrainConfig
>>> cfg = TrainConfig(lr=0.1, schedule="step", epochs=4, milestones=[0.5])
>>> [round(lr_at(cfg, s, total_steps=8, steps_per_epoch=2), 3) for s in (0, 3, 4, 7)]
[0.1, 0.1, 0.01, 0.01]
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.autograd.graph import increment_version

from .config import TrainConfig


def build_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam (L2 weight decay) or AdamW (decoupled decay), fused.

    >>> from robustfair.training.config import TrainConfig
    >>> build_optimizer(TrainConfig(), [torch.nn.Parameter(torch.zeros(3))]).defaults["fused"]
    True
    """
    params = list(params)
    if cfg.optimizer == "sgd":
        return _fused(torch.optim.SGD, params, lr=cfg.lr, momentum=cfg.momentum,
                      nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return _fused(torch.optim.Adam, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _fused(torch.optim.AdamW, params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _fused(kind: type[torch.optim.Optimizer], params: list[torch.nn.Parameter],
           **settings) -> torch.optim.Optimizer:
    """``kind`` with its fused step (one kernel per parameter for the whole update, where the
    default runs three to six), else its default step where this torch or device has none.

    The fused step is torch's fastest on CUDA and on a CPU: an SGD step with momentum and
    weight decay takes 40-50 us instead of 110-180 us on robustfair's small models (one
    thread), a share of a training step that grows as the model shrinks. It computes the
    same update, rounded as one fused multiply-add where the default rounds twice (weights
    agree to about 1e-7 after 20 steps). A run resumed from a checkpoint saved by the default
    step goes on with the default step: torch takes the step's kind from the saved state.

    Torch's fused kernels (2.13) write the weights without bumping their version counters, and
    the inner attack's view (:func:`~robustfair.models.attack_view`) recomputes its folded
    weights when a version changes: left alone, PGD-AT would attack stale weights. So every
    step ends by bumping the versions itself.
    """
    try:
        optimizer = kind(params, fused=True, **settings)
    except (RuntimeError, TypeError):  # an older torch, or a device without fused kernels
        return kind(params, **settings)
    optimizer.register_step_post_hook(_bump_versions)
    return optimizer


def _bump_versions(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    """A fused optimiser's step post-hook: what its kernels wrote, marked written (see
    :func:`_fused`). One call per tensor: older torch versions take no list here."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            increment_version(p)


def lr_at(cfg: TrainConfig, step: int, *, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``.

    constant; step (``lr·gamma^k`` after the k-th milestone, milestones as fractions of
    training); cosine (from ``lr`` to 0); onecycle (Smith's / Wong et al.'s triangle: linear
    from 0 up to ``lr`` at ``onecycle_peak`` of training, then linear down to 0). Step and
    cosine start with a linear warm-up of ``warmup_epochs`` when that is > 0.
    """
    t = step / max(1, total_steps)  # fraction of training done before this step
    if cfg.schedule == "onecycle":
        peak = cfg.onecycle_peak
        # evaluate at the step's midpoint so neither the first nor the last step has lr 0
        t = (step + 0.5) / max(1, total_steps)
        return cfg.lr * (t / peak if t < peak else max(0.0, (1 - t) / (1 - peak)))
    warmup = cfg.warmup_epochs * steps_per_epoch
    if warmup > 0 and step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        passed = sum(1 for m in cfg.milestones if step >= round(m * total_steps))
        return cfg.lr * cfg.gamma ** passed
    # cosine, over the steps after warm-up
    done = (step - warmup) / max(1.0, total_steps - warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, max(0.0, done))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
