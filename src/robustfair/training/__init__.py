"""Training: the loop, objectives (standard, pgd_at, trades, fgsm_rs), mitigations, checkpoints.

``train(config, out_dir)`` trains into a run folder (resuming it when it holds the same run);
``TrainConfig`` is every setting of a run; mitigations plug into the loop by name.

>>> from robustfair.training import TrainConfig
>>> TrainConfig(dataset="digits", model="small_cnn", objective="pgd_at", eps=0.2).objective
'pgd_at'
"""
from __future__ import annotations

from .config import TrainConfig
from .mitigations import Mitigation, build_mitigation, list_mitigations, register_mitigation
from .trainer import TrainResult, train

__all__ = ["Mitigation", "TrainConfig", "TrainResult", "build_mitigation", "list_mitigations",
           "register_mitigation", "train"]
