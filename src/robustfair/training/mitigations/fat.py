"""FAT: fairly adversarial training (Ma, Wang & Liu 2022, "On the tradeoff between robustness
and fairness", NeurIPS). Not Zhang et al.'s "friendly adversarial training", also called FAT.

The training loss gets a regulariser: the variance, across classes, of the class-wise mean
adversarial loss in the batch,

    loss = weighted mean of the objective's per-sample loss + lam · Var_c( mean_{i: y_i = c} CE(z_adv_i, y_i) )

so no class can lag far behind the others in adversarial loss. The class-wise loss is the
cross-entropy at the adversarial logits for PGD-AT, FGSM-RS and TRADES (the authors' code uses
the PGD-example cross-entropy for both), and the objective's own per-sample loss for standard
training. The variance is the unbiased sample variance (``torch.var``, as in the authors' code)
over the classes present in the batch; the authors' code also counts absent classes as zero
losses, which only matters for batches that miss a class. Fewer than two classes in a batch
give no regulariser.

Defaults and where they come from: ``lam=0.1`` (``lambda`` is accepted too), the value in the
authors' README (``--alpha 0.1``).

The loss hook returns the final scalar, so ``fat`` must come last among the mitigations.
Works with every objective.

>>> import torch
>>> m = FAT(lam=1.0)
>>> y = torch.tensor([0, 0, 1]); per_sample = torch.tensor([1.0, 3.0, 4.0])
>>> round(float(m.loss(per_sample[:, None].expand(3, 2), y, per_sample)), 4)  # 8/3 + var([2, 4])
4.6667
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._base import register_mitigation, weighted_mean
from ._common import DescribedMitigation, as_float, take_lambda


def classwise_variance(per_sample: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unbiased variance over the classes present of the class-wise mean of ``per_sample``.

    Written with masks rather than boolean indexing so it never waits for the device.
    """
    sums = torch.zeros(num_classes, device=per_sample.device, dtype=per_sample.dtype)
    sums = sums.index_add(0, y, per_sample)
    counts = torch.bincount(y, minlength=num_classes).to(per_sample.dtype)
    present = (counts > 0).to(per_sample.dtype)
    n = present.sum()
    means = sums / counts.clamp_min(1.0)
    centre = (means * present).sum() / n.clamp_min(1.0)
    var = (((means - centre) ** 2) * present).sum() / (n - 1.0).clamp_min(1.0)
    return torch.where(n >= 2, var, torch.zeros_like(var))


@register_mitigation("fat")
class FAT(DescribedMitigation):
    """Add ``lam`` × the variance of the class-wise adversarial losses."""

    def __init__(self, lam: float | str = 0.1, **aliases: Any) -> None:
        lam = take_lambda(aliases, lam, mitigation="fat", known="lam (or lambda)")
        self.lam = as_float(lam, what="fat lambda", low=0.0)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        logits_adv = ctx.get("logits_adv")
        if logits_adv is not None:
            classwise = F.cross_entropy(logits_adv.float(), y, reduction="none")
        else:
            classwise = per_sample_loss
        penalty = classwise_variance(classwise, y, logits.shape[1])
        return weighted_mean(per_sample_loss, ctx.get("weights")) + self.lam * penalty

    def settings(self) -> dict[str, Any]:
        return {"lambda": self.lam}
