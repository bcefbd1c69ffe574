"""Training: the loop, objectives (standard, pgd_at, trades, fgsm_rs), mitigations, checkpoints.

>>> from robustfair.training import TrainConfig
>>> TrainConfig(dataset="digits", model="small_cnn", objective="pgd_at", eps=0.2).objective
'pgd_at'
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "robustfair.training.config",
    "TrainResult": "robustfair.training.trainer",
    "train": "robustfair.training.trainer",
    "Mitigation": "robustfair.training.mitigations",
    "build_mitigation": "robustfair.training.mitigations",
    "register_mitigation": "robustfair.training.mitigations",
    "list_mitigations": "robustfair.training.mitigations",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # lazy, so that `import robustfair.training.mitigations` stays light for mitigation authors
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robustfair.training' has no attribute {name!r}")
