"""Training objectives by name: standard, pgd_at (Madry), trades (Zhang), fgsm_rs (Wong)."""
from __future__ import annotations

from ...errors import ConfigError
from ._base import Batch, Objective, training_attack
from .fgsm_rs import FGSMRS
from .pgd_at import PGDAT
from .standard import Standard
from .trades import TRADES

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (Standard, PGDAT, TRADES, FGSMRS)
}


def build_objective(name: str, **settings) -> Objective:
    """``build_objective("trades", steps=10, norm="linf", beta=6.0)``."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose from: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](**settings)


__all__ = ["Batch", "OBJECTIVES", "Objective", "build_objective", "training_attack"]
