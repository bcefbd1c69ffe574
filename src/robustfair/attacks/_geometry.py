"""The threat models' geometry: norms, projection onto the eps-ball ∩ [0, 1], random starts, steps.

``eps`` (and step sizes) are per-sample tensors of shape N×1×1×1 (see ``_base.per_sample``), so a
batch may mix radii and a radius of 0 pins a point to its clean image.

>>> x = torch.full((1, 1, 2, 2), 0.5)
>>> project(x + 0.3, x, torch.full((1, 1, 1, 1), 0.1), "linf").flatten().tolist()
[0.6000000238418579, 0.6000000238418579, 0.6000000238418579, 0.6000000238418579]
"""
from __future__ import annotations

import torch

from ._random import Draws

# Guards divisions by a norm that can be exactly 0 (a zero gradient, a zero perturbation).
_TINY = 1e-12


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm, shaped N×1×1×1 to broadcast against images."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Nearest point to ``x_adv`` in the ``norm``-ball of radius ``eps`` around ``x``, clipped to [0, 1].

    Clipping to the box after the ball keeps the point in the ball: since ``x`` is in [0, 1],
    clipping only moves coordinates towards ``x``.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = torch.minimum(torch.maximum(delta, -eps), eps)
    else:
        delta = delta * torch.clamp(eps / l2_norm(delta).clamp_min(_TINY), max=1.0)
    return (x + delta).clamp_(0.0, 1.0)


def random_start(
    x: torch.Tensor, eps: torch.Tensor, norm: str, source: torch.Generator | Draws
) -> torch.Tensor:
    """A point drawn uniformly from the ``norm``-ball of radius ``eps`` around ``x`` (then clipped to [0, 1]).

    ``source``: the attacks' per-point :class:`~robustfair.attacks._random.Draws` (one row per
    point of ``x``), or a ``torch.Generator`` (training draws for the whole batch at once).
    """
    if norm == "linf":
        u = _uniform(source, x.shape, "uniform", x)
        delta = (2.0 * u - 1.0) * eps
    else:
        # Uniform in the L2 ball: a uniform direction (normalised Gaussian) and radius eps * U^(1/d).
        if isinstance(source, torch.Generator):
            direction = torch.randn(x.shape, generator=source, device=x.device, dtype=x.dtype)
        else:
            direction = source.normal(tuple(x.shape[1:]), "direction", x.dtype)
        direction = direction / l2_norm(direction).clamp_min(_TINY)
        d = x[0].numel()
        u = _uniform(source, eps.shape, "radius", x)
        delta = direction * eps * u.pow(1.0 / d)
    return (x + delta).clamp_(0.0, 1.0)


def _uniform(source: torch.Generator | Draws, shape: torch.Size, tag: str,
             like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape`` (first dimension: the points) from either source."""
    if isinstance(source, torch.Generator):
        return torch.rand(shape, generator=source, device=like.device, dtype=like.dtype)
    return source.uniform(tuple(shape[1:]), tag, like.dtype)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm``: the gradient's sign (L-inf) or the unit gradient (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / (l2_norm(grad) + _TINY)
