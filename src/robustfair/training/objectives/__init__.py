"""Training objectives by name: standard, pgd_at (Madry), trades (Zhang), fgsm_rs (Wong)."""
from __future__ import annotations

from ..._registry import Registry
from ...errors import ConfigError
from ._base import Batch, Objective, training_attack
from .fgsm_rs import FGSMRS
from .pgd_at import PGDAT
from .standard import Standard
from .trades import TRADES

OBJECTIVES: Registry[type[Objective]] = Registry("objective", ConfigError)
for _cls in (Standard, PGDAT, TRADES, FGSMRS):
    OBJECTIVES.register(_cls.name)(_cls)
del _cls


def list_objectives() -> list[str]:
    """The objectives' names: ``['fgsm_rs', 'pgd_at', 'standard', 'trades']``."""
    return OBJECTIVES.names()


def build_objective(name: str, **settings) -> Objective:
    """``build_objective("trades", steps=10, norm="linf", beta=6.0)``; an unknown name or
    setting is a one-line ConfigError."""
    return OBJECTIVES.build(name, **settings)


__all__ = ["Batch", "OBJECTIVES", "Objective", "build_objective", "list_objectives",
           "training_attack"]
