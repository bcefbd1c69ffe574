"""Mitigations of the class gap, as pluggable parts of the training objective.

One module per mitigation, each registering itself with :func:`register_mitigation` when it
is imported below (a new mitigation adds its module to that list). The hook contract is in
``_base.py``.
"""
from ._base import (
    MITIGATIONS,
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

# imported for their @register_mitigation side effect
from . import (  # noqa: E402,F401  (isort: skip)
    adaptive_weight,
    cb_loss,
    cfa,
    cfol,
    class_eps,
    class_weight,
    codat,
    dafa,
    faal,
    fair_tat,
    fat,
    focal,
    frl,
    ldam,
    logit_adjust,
    resample,
    targeted_at,
    trix,
    wat,
)

__all__ = [
    "MITIGATIONS",
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
