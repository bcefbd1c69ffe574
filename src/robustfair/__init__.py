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

__version__ = "0.1.0"

# Plain imports, so editors and type checkers see the real names. `import robustfair` imports
# torch and pandas; plotting (matplotlib), Ray and Jinja2 are imported only where they are used.
from .auditing import audit
from .data import Dataset, from_tensors, image_folder, list_datasets, load_dataset
from .errors import RobustfairError
from .explain import explain_model
from .metrics import ClassReport, profile_similarity
from .models import build_model, list_models, load_model, save_model
from .attacks import build_attack, list_attacks
from .study import run_study
from .training import TrainConfig, train

__all__ = [
    "ClassReport",
    "Dataset",
    "RobustfairError",
    "TrainConfig",
    "__version__",
    "audit",
    "build_attack",
    "build_model",
    "explain_model",
    "from_tensors",
    "image_folder",
    "list_attacks",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_model",
    "profile_similarity",
    "run_study",
    "save_model",
    "train",
]
