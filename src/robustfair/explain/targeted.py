"""Targeted vulnerability of one class: how easily can every other class be pushed *into* it,
and how easily can it be pushed *out* toward each other class?

For a chosen class ``c`` a targeted attack is run (1) on every clean-correct point of every
other class, aimed at ``c``, and (2) on every clean-correct point of ``c``, aimed at each other
class in turn. A success rate is the fraction of those points whose adversarial example the
model assigns to the aimed-at class. Only clean-correct points are attacked, so a rate says
what the *attack* achieves (points the model already gets wrong are left out, and counted in
``n`` nowhere). Both directions together are one row and one column of the source × target
success matrix, at a cost of about two passes over the data instead of ``K``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._device import model_device
from ..attacks import build_attack
from ..data import class_index
from ..errors import AttackError
from ._common import check_batch_size, check_inputs, finite_or_none, predict, records, resolve_classes, safe_divide

__all__ = ["TargetedVulnerability", "targeted_vulnerability"]


@dataclass
class TargetedVulnerability:
    """Success of targeted attacks into and out of class ``target``.

    ``into``: per source class (all but ``target``), ``n`` attacked points and ``success`` rate
    of pushing them into ``target``; ``out_of``: per destination class, ``n`` (the clean-correct
    points of ``target``) and the ``success`` rate of pushing them there.
    """

    classes: list[str]
    target: str
    into: pd.DataFrame
    out_of: pd.DataFrame
    settings: dict

    @property
    def into_rate(self) -> float:
        """Success over all points of other classes pushed into the target."""
        return _pooled(self.into)

    @property
    def out_rate(self) -> float:
        """Success over all (point of the target, other class) pairs."""
        return _pooled(self.out_of)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "settings": self.settings,
            "into_rate": finite_or_none(self.into_rate),
            "out_rate": finite_or_none(self.out_rate),
            "into": records(self.into),
            "out_of": records(self.out_of),
        }


def _pooled(frame: pd.DataFrame) -> float:
    n = frame["n"].to_numpy(dtype=float)
    s = np.nan_to_num(frame["success"].to_numpy(dtype=float))
    return float((n * s).sum() / n.sum()) if n.sum() > 0 else float("nan")


def targeted_vulnerability(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: int | str,
    *,
    classes: Sequence[str] | None = None,
    attack=None,
    eps: float | None = None,
    norm: str = "linf",
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> TargetedVulnerability:
    """Targeted success into and out of class ``target`` (a name or an index).

    ``attack`` is a targeted attack; without one, targeted PGD with ``eps``, ``norm`` and
    ``steps`` is built.
    """
    names = resolve_classes(model, classes, x)
    k = len(names)
    y = check_inputs(x, y, k)
    check_batch_size(batch_size)
    c = class_index(names, target)
    if attack is None:
        if eps is None:
            raise AttackError("give an attack or an eps for the targeted attacks")
        attack = build_attack("pgd", eps=eps, norm=norm, steps=steps, targeted=True, seed=seed)
    elif not getattr(attack, "targeted", False):
        raise AttackError(f"attack {getattr(attack, 'name', attack)!r} is not targeted; build it with targeted=True")

    device = model_device(model)
    y_dev = y.to(device)
    correct = predict(model, x, batch_size=batch_size) == y_dev
    # jobs: (point, aimed-at class); into c from every other class, out of c to every other class
    others = (correct & (y_dev != c)).nonzero().squeeze(1)
    own = (correct & (y_dev == c)).nonzero().squeeze(1)
    dests = torch.tensor([t for t in range(k) if t != c], device=device, dtype=torch.long)
    point = torch.cat([others, own.repeat_interleave(len(dests))])
    aim = torch.cat([torch.full_like(others, c), dests.repeat(len(own))])

    hit = torch.zeros(len(point), dtype=torch.bool, device=device)
    bar = tqdm(total=len(point), desc=f"targeted {names[c]}", unit="run", disable=not progress, leave=False)
    with bar:
        for start in range(0, len(point), batch_size):
            idx = point[start:start + batch_size]
            xb = x[idx.to(x.device)].to(device)
            res = attack.perturb(model, xb, y_dev[idx], target=aim[start:start + batch_size])
            hit[start:start + len(idx)] = res.success
            bar.update(len(idx))

    cell = (y_dev[point] * k + aim).cpu().numpy()
    total = np.bincount(cell, minlength=k * k).reshape(k, k)
    hits = np.bincount(cell, weights=hit.cpu().numpy().astype(float), minlength=k * k).reshape(k, k)
    rate = safe_divide(hits, total)
    rest = [t for t in range(k) if t != c]
    into = pd.DataFrame({"n": total[rest, c], "success": rate[rest, c]},
                        index=pd.Index([names[s] for s in rest], name="source"))
    out_of = pd.DataFrame({"n": total[c, rest], "success": rate[c, rest]},
                          index=pd.Index([names[t] for t in rest], name="destination"))
    return TargetedVulnerability(names, names[c], into, out_of, dict(attack.settings()))
