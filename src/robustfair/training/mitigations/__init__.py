"""Mitigations of the class gap, as pluggable parts of the training objective.

One module per mitigation, each registering itself with :func:`register_mitigation`; every
module in this package is imported on first lookup. The hook contract is in ``_base.py``.
"""
from ._base import (
    EpochStats,
    Mitigation,
    MitigationContext,
    MitigationStack,
    build_mitigation,
    list_mitigations,
    mitigation_options,
    register_mitigation,
    weighted_mean,
)

__all__ = [
    "EpochStats",
    "Mitigation",
    "MitigationContext",
    "MitigationStack",
    "build_mitigation",
    "list_mitigations",
    "mitigation_options",
    "register_mitigation",
    "weighted_mean",
]
