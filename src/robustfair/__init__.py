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
from typing import TYPE_CHECKING

from ._version import __version__

# Each public name is imported from its room on first use (PEP 562), so that `import
# robustfair` or `import robustfair.attacks` loads only what is asked for: not the study, the
# explanations, the card, matplotlib, Ray or Jinja2. Type checkers and editors read the
# imports below instead.
if TYPE_CHECKING:
    from .attacks import build_attack, list_attacks
    from .auditing import audit
    from .data import Dataset, from_tensors, image_folder, list_datasets, load_dataset
    from .errors import RobustfairError
    from .explain import explain_model
    from .metrics import ClassReport, profile_similarity
    from .models import build_model, list_models, load_model, save_model
    from .study import run_study
    from .training import TrainConfig, train

# public name -> the module that defines it
_HOMES = {
    "audit": "auditing",
    "build_attack": "attacks", "list_attacks": "attacks",
    "Dataset": "data", "from_tensors": "data", "image_folder": "data", "list_datasets": "data",
    "load_dataset": "data",
    "RobustfairError": "errors",
    "explain_model": "explain",
    "ClassReport": "metrics", "profile_similarity": "metrics",
    "build_model": "models", "list_models": "models", "load_model": "models", "save_model": "models",
    "run_study": "study",
    "TrainConfig": "training", "train": "training",
}

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
