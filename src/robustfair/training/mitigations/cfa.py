"""CFA: class-wise calibrated fair adversarial training (Wei et al. 2023, "CFA: Class-wise
calibrated fair adversarial training", CVPR).

Three parts, each on by default and switchable (``ccm``, ``ccr``, ``fawa``):

* CCM, class-wise calibrated margin: class ``c`` is attacked during training with radius
  ``eps_c = (lambda1 + R_c)·eps``, where ``R_c`` is the class's *training* robust accuracy of the
  previous epoch (the fraction of its training points whose training-attack adversarial example
  was classified correctly, counted in the ``loss`` hook as the authors do). Harder classes get
  a smaller margin.
* CCR, class-wise calibrated regularisation (TRADES only): the KL weight of class ``c`` becomes
  ``beta_c = (lambda2 + R_c)·beta``. The authors write TRADES as ``(1-b)·CE + b·KL`` with
  ``b_c = beta_c / (1 + beta_c)``, which also scales class ``c``'s whole loss by
  ``1 / (1 + beta_c)``; we reproduce that exactly with the per-class loss weight
  ``(1 + beta) / (1 + beta_c)`` next to the per-class beta ``beta_c``.
* FAWA, fairness-aware weight averaging: after every epoch, if the trained model's worst-class
  robust accuracy on the validation split is at least ``threshold``, the averaged weights move
  toward the current ones, ``avg = decay·avg + (1 - decay)·current`` (the first accepted epoch
  copies them); otherwise the epoch is left out. Parameters and floating buffers (BatchNorm
  statistics) are averaged; integer buffers are copied.

Defaults and where they come from (the authors' code, PKU-ML/CFA ``train.py``):
``lambda1=0.5``, ``lambda2=0.5``, ``decay=0.88``, ``threshold=0.24`` (tuned for CIFAR-10 at
8/255; a data set with higher robust accuracy accepts every epoch at this value),
``warmup=0.05`` (CCM and CCR start after 10 of 200 epochs; here after ``round(0.05·epochs)``
epochs, at least one).

How FAWA meets the trainer: during training ``eval_model()`` returns None, so every epoch's
validation row (and the acceptance test) is of the *trained* weights, as in the paper. After the
last epoch ``eval_model()`` returns the average (if any epoch was accepted), which the trainer
then saves and returns with ``keep=last``; with a best-epoch ``keep`` rule, the best epoch's
trained weights are kept unless the best epoch is the last one.

With PGD-AT and FGSM-RS, CCR does nothing (there is no KL term); with standard training there
is no attack, so CCM uses the validation robust accuracy and has no effect. CCM sets per-class
eps (not with ``class_eps``, ``frl`` re-margin, ``dafa``); CCR sets per-class beta (not with
``frl`` re-weight or ``dafa`` under TRADES); FAWA provides the evaluated model (takes
precedence over the trainer's ``ema``).

>>> import torch
>>> from robustfair.training.mitigations import EpochStats, MitigationContext
>>> m = CFA(fawa=False)
>>> m.setup(MitigationContext(num_classes=2, eps=0.2, objective="pgd_at", epochs=4))
>>> logits_adv = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
>>> y = torch.tensor([0, 0, 1, 1])   # class 0: 2/2 robust, class 1: 1/2
>>> _ = m.loss(logits_adv, y, torch.zeros(4), logits_adv=logits_adv)
>>> acc = torch.tensor([0.9, 0.9])
>>> m.end_epoch(EpochStats(1, acc, acc, 1 - acc, acc * 0, torch.tensor([5, 5])))
>>> [round(v, 3) for v in m.class_eps().tolist()]   # (0.5 + R)·0.2
[0.3, 0.2]
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..._checks import as_bool
from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import (ClasswiseCounter, DescribedMitigation, as_float, epoch_index,
                      present_classes, trades_beta)


@register_mitigation("cfa")
class CFA(DescribedMitigation):
    """Class-wise calibrated margin (CCM), regularisation (CCR) and weight averaging (FAWA)."""

    def __init__(self, ccm: bool | str = True, ccr: bool | str = True, fawa: bool | str = True,
                 lambda1: float | str = 0.5, lambda2: float | str = 0.5,
                 warmup: float | str = 0.05, decay: float | str = 0.88,
                 threshold: float | str = 0.24) -> None:
        self.ccm = as_bool(ccm, what="cfa ccm")
        self.ccr = as_bool(ccr, what="cfa ccr")
        self.fawa = as_bool(fawa, what="cfa fawa")
        self.lambda1 = as_float(lambda1, what="cfa lambda1", low=0.0)
        self.lambda2 = as_float(lambda2, what="cfa lambda2", low=0.0)
        self.warmup = as_float(warmup, what="cfa warmup", low=0.0, high=1.0, high_open=True)
        self.decay = as_float(decay, what="cfa decay", low=0.0, high=1.0, high_open=True)
        self.threshold = as_float(threshold, what="cfa threshold", low=0.0, high=1.0)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        k = ctx.num_classes
        self.begin = epoch_index(self.warmup, ctx.epochs)
        self.beta = trades_beta(ctx)
        self.epochs_done = 0
        self.train_robust = ClasswiseCounter(k, ctx.device)
        # R_c of the last finished epoch (1 = not measured yet; unused before the warm-up ends)
        self.robust_acc = torch.ones(k, device=ctx.device)
        self.calibrated = False
        self.average: nn.Module | None = None
        self._pending_average: dict[str, torch.Tensor] | None = None
        self._model: nn.Module | None = None
        self.accepted_epochs = 0

    # ------------------------------------------------------------------ CCM and CCR
    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        logits_adv = ctx.get("logits_adv")
        if logits_adv is not None:  # the training robust accuracy CCM/CCR calibrate on
            self.train_robust.add(y, (logits_adv.detach().argmax(dim=1) == y).float())
        return per_sample_loss

    def class_eps(self) -> torch.Tensor | None:
        if not self.ccm:
            return None
        scale = self.lambda1 + self.robust_acc if self.calibrated else torch.ones_like(
            self.robust_acc)
        return float(self.ctx.eps) * scale

    def _class_beta_values(self) -> torch.Tensor:
        if not self.calibrated:
            return torch.full_like(self.robust_acc, self.beta)
        return (self.lambda2 + self.robust_acc) * self.beta

    def class_beta(self) -> torch.Tensor | None:
        if not self.ccr or not self.ctx.beta_weighted:
            return None
        return self._class_beta_values()

    def class_weights(self) -> torch.Tensor | None:
        if not self.ccr or not self.ctx.beta_weighted:
            return None
        return (1.0 + self.beta) / (1.0 + self._class_beta_values())

    # ------------------------------------------------------------------ FAWA
    def after_step(self, model: nn.Module) -> None:
        self._model = model  # only a reference; averaging happens once per epoch

    @torch.no_grad()
    def _materialise(self, model: nn.Module) -> None:
        """Create the averaged model (a frozen copy of ``model``), resuming saved weights."""
        self.average = copy.deepcopy(model).eval()
        for p in self.average.parameters():
            p.requires_grad_(False)
        if self._pending_average is not None:
            self.average.load_state_dict(self._pending_average)
            self._pending_average = None

    @torch.no_grad()
    def _average_in(self, model: nn.Module) -> None:
        if self.average is None:
            fresh = self._pending_average is None
            self._materialise(model)
            if fresh:  # the first accepted epoch copies the weights
                self.accepted_epochs += 1
                return
        current = model.state_dict()
        for name, avg in self.average.state_dict().items():
            if avg.is_floating_point():
                avg.lerp_(current[name].to(avg.dtype), 1.0 - self.decay)
            else:
                avg.copy_(current[name])
        self.accepted_epochs += 1

    def eval_model(self) -> nn.Module | None:
        if not self.fawa or self.epochs_done < self.ctx.epochs:
            return None
        if self.average is None and self._pending_average is not None and self._model is not None:
            self._materialise(self._model)
        return self.average

    # ------------------------------------------------------------------ per epoch
    def end_epoch(self, stats: EpochStats) -> None:
        self.epochs_done += 1
        present = present_classes(stats).to(self.robust_acc.device)
        measured, seen = self.train_robust.mean()
        fallback = stats.robust_acc.to(self.robust_acc.device, torch.float32)
        # classes never seen in training this epoch (or no attack at all) use validation
        r = torch.where(seen, measured, fallback)
        self.robust_acc = torch.where(seen | present, r, self.robust_acc)
        self.train_robust.reset()
        if self.epochs_done >= self.begin:
            self.calibrated = True
        if self.fawa and self._model is not None and bool(present.any()):
            worst = float(stats.robust_acc.to(present.device)[present].min())
            if worst >= self.threshold:
                self._average_in(self._model)

    # ------------------------------------------------------------------ bookkeeping
    def settings(self) -> dict[str, Any]:
        return {"ccm": self.ccm, "ccr": self.ccr, "fawa": self.fawa, "lambda1": self.lambda1,
                "lambda2": self.lambda2, "warmup": self.warmup, "decay": self.decay,
                "threshold": self.threshold}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"robust_acc": self.robust_acc, "calibrated": self.calibrated,
                                 "epochs_done": self.epochs_done,
                                 "accepted_epochs": self.accepted_epochs}
        if self.average is not None:
            state["average"] = {k: v for k, v in self.average.state_dict().items()}
        elif self._pending_average is not None:
            state["average"] = self._pending_average
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.robust_acc = torch.as_tensor(state["robust_acc"]).to(self.ctx.device, torch.float32)
        self.calibrated = bool(state["calibrated"])
        self.epochs_done = int(state["epochs_done"])
        self.accepted_epochs = int(state["accepted_epochs"])
        average = state.get("average")
        if average is not None:
            # the architecture is known only once a model is seen (after_step); keep the
            # weights until then
            self.average = None
            self._pending_average = {k: torch.as_tensor(v).to(self.ctx.device)
                                     for k, v in average.items()}
