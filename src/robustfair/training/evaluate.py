"""Per-epoch class-wise evaluation on the held-out validation split: clean and PGD accuracy.

A point counts as robust only if it is classified correctly both clean and under attack (the
pointwise worst case over the clean image and the attack). The "boundary error" of a class is
the fraction of its points that are correct clean but wrong under attack; the "natural error"
is the fraction wrong clean (the split of Zhang et al.'s TRADES analysis and of FRL).

Under DDP each rank evaluates its own share of the points and the per-class counts are summed,
so every rank ends with the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..attacks import build_attack, eval_mode
from ..data import to_float
from ..metrics.pointwise import WorstCase, count_by_class
from .mitigations import EpochStats


# the largest share of a class that the validation minimum may take from training
MAX_VAL_SHARE = 0.25
# below this many validation points per class, training warns that steering on it is noise
VAL_WARN_PER_CLASS = 30


@dataclass
class ClassCounts:
    """Per-class counts (LongTensor[K]) of one evaluation: points, clean-correct points, and
    robust points (the pointwise worst case over the clean image and the attacks, counted by
    :mod:`robustfair.metrics.pointwise` as an audit's ``ClassReport`` counts them).

    >>> c = ClassCounts.zeros(2)
    >>> c.add(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), [torch.tensor([1, 0, 1])])
    >>> c.n.tolist(), c.clean.tolist(), c.robust.tolist()
    ([2, 1], [2, 1], [1, 1])
    >>> c.stats(epoch=3).boundary_error.tolist()
    [0.5, 0.0]
    """

    n: torch.Tensor
    clean: torch.Tensor
    robust: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device | str = "cpu") -> "ClassCounts":
        def zero() -> torch.Tensor:
            return torch.zeros(num_classes, dtype=torch.long, device=device)
        return cls(n=zero(), clean=zero(), robust=zero())

    def add(self, y: torch.Tensor, clean_pred: torch.Tensor,
            attack_preds: Sequence[torch.Tensor] = ()) -> None:
        """Count one batch: labels, clean predictions and each attack's predictions (tensors
        on the counts' device; nothing waits for the device)."""
        k = len(self.n)
        worst = WorstCase(y, clean_pred)
        self.n += count_by_class(y, None, k)
        self.clean += count_by_class(y, worst.robust, k)
        for pred in attack_preds:
            worst.add(pred)
        self.robust += count_by_class(y, worst.robust, k)

    def stats(self, epoch: int) -> EpochStats:
        """Per-class accuracies and errors for the mitigations (0 for a class without points)."""
        n = self.n.clamp_min(1).double()
        clean = (self.clean / n).float()
        robust = (self.robust / n).float()
        return EpochStats(epoch=epoch, clean_acc=clean, robust_acc=robust,
                          natural_error=1.0 - clean, boundary_error=clean - robust,
                          counts=self.n.clone())


def stratified_holdout(y: torch.Tensor, fraction: float, max_size: int, seed: int,
                       num_classes: int, min_per_class: int = 0,
                       max_share: float = MAX_VAL_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val), each sorted: ``fraction`` of every class (at most ``max_size`` in all).

    Each class gives ``round(fraction·count)`` points (at least one when it has two or more),
    scaled down evenly when the total would exceed ``max_size``; then raised to
    ``min_per_class`` where that stays within ``max_share`` of the class (a class accuracy
    measured on 12 points moves in steps of 8 points: too coarse to steer on). The draw depends
    only on ``seed``, so runs with different training seeds share the validation split.

    >>> y = torch.tensor([0] * 10 + [1] * 20)
    >>> tr, va = stratified_holdout(y, 0.1, 100, seed=0, num_classes=2)
    >>> torch.bincount(y[va]).tolist(), len(tr)
    ([1, 2], 27)
    >>> tr, va = stratified_holdout(y, 0.1, 100, seed=0, num_classes=2, min_per_class=50)
    >>> torch.bincount(y[va]).tolist()  # a quarter of each class at most
    [2, 5]
    """
    g = torch.Generator().manual_seed(seed)
    y_cpu = y.cpu()
    counts = torch.bincount(y_cpu, minlength=num_classes)
    scale = min(1.0, max_size / max(1.0, fraction * len(y_cpu)))
    val_parts = []
    for k in range(num_classes):
        members = (y_cpu == k).nonzero().squeeze(1)
        c = int(counts[k])
        take = int(round(fraction * scale * c))
        take = max(take, min(int(min_per_class), int(max_share * c)))
        if c >= 2:
            take = min(max(take, 1), c - 1)
        else:
            take = 0
        val_parts.append(members[torch.randperm(c, generator=g)[:take]])
    val = torch.cat(val_parts).sort().values if val_parts else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(y_cpu), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().squeeze(1), val


@torch.no_grad()
def _clean_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def evaluate_classwise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    eps: float,
    norm: str,
    steps: int,
    alpha: float,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> ClassCounts:
    """Clean and PGD-``steps`` per-class counts of ``model`` on uint8 images ``x`` (on its device).

    ``eps == 0`` skips the attack (robust = clean). The attack's random start is seeded with
    ``seed`` so the evaluation of a given model is repeatable.
    """
    device = x.device
    attack = build_attack("pgd", eps=eps, norm=norm, steps=steps, alpha=alpha,
                          random_start=True, seed=seed) if eps > 0 else None
    counts = ClassCounts.zeros(num_classes, device)
    mine = torch.arange(rank, len(y), world_size, device=device)
    with eval_mode(model):
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            xb = to_float(x[idx]).contiguous(memory_format=memory_format)
            yb = y[idx]
            logits = _clean_logits(model, xb)
            # the attack starts from these logits instead of a clean pass of its own
            attacked = [] if attack is None else [
                attack.perturb(model, xb, yb, clean_logits=logits).pred]
            counts.add(yb, logits.argmax(dim=1), attacked)
    every = torch.stack([counts.n, counts.clean, counts.robust])
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(every)
    every = every.cpu()  # the one device -> host copy of the evaluation
    return ClassCounts(n=every[0], clean=every[1], robust=every[2])


def warn_small_validation(val_y: torch.Tensor, num_classes: int, classes: list[str]) -> int:
    """Warn (``UserWarning``) when a class has fewer than :data:`VAL_WARN_PER_CLASS` validation
    points: adaptive mitigations and the ``best_*`` checkpoint rules would steer on noise.
    Returns the smallest per-class count."""
    import warnings

    counts = torch.bincount(val_y.cpu(), minlength=num_classes)
    smallest = int(counts.min()) if len(counts) else 0
    if smallest < VAL_WARN_PER_CLASS:
        name = classes[int(counts.argmin())]
        warnings.warn(
            f"the validation split has only {smallest} point(s) of class {name!r}: a class "
            f"accuracy on so few moves in steps of {100 / max(smallest, 1):.0f} points, so "
            f"adaptive mitigations and keep=best_* steer on noise (raise val_min_per_class or "
            f"val_fraction, or use a larger data set)", UserWarning, stacklevel=3)
    return smallest
