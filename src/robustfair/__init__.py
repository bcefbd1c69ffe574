"""robustfair: make class-wise adversarial robustness visible and fixable.

>>> import robustfair as rf
>>> ds = rf.load_dataset("digits")
>>> model = rf.build_model("small_cnn", num_classes=ds.num_classes, in_channels=1, image_size=8)
>>> attack = rf.build_attack("pgd", eps=0.1, steps=5)
>>> report = rf.audit(model, ds.test.x[:50], ds.test.y[:50], attacks=[attack],
...                   classes=ds.classes, progress=False)
>>> list(report.by_class.index[:3])
['0', '1', '2']
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it; imported on first use so `import robustfair` is cheap
_EXPORTS = {
    "RobustfairError": "robustfair.errors",
    "load_dataset": "robustfair.data",
    "list_datasets": "robustfair.data",
    "Dataset": "robustfair.data",
    "build_model": "robustfair.models",
    "list_models": "robustfair.models",
    "save_model": "robustfair.models",
    "load_model": "robustfair.models",
    "build_attack": "robustfair.attacks",
    "list_attacks": "robustfair.attacks",
    "audit": "robustfair.auditing",
    "ClassReport": "robustfair.metrics",
    "profile_similarity": "robustfair.metrics",
    "TrainConfig": "robustfair.training",
    "train": "robustfair.training",
    "explain_model": "robustfair.explain",
    "run_study": "robustfair.study",
    "from_tensors": "robustfair.data",
    "image_folder": "robustfair.data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robustfair' has no attribute {name!r}")
