"""Models by name: ``build_model("preact_resnet18", num_classes=10)``; safe save and load.

Importing this package registers every built-in architecture (one module each).
"""
from ._base import MODELS, Normalize, NormalizedModel, build_model, list_models, register_model

# imported for their @register_model side effect
from . import (  # noqa: F401  (isort: skip)
    cifar_resnet,
    densenet,
    lenet,
    mlp,
    preact_resnet,
    resnet,
    resnext,
    small_cnn,
    vgg,
    wide_resnet,
)
from .attack_view import AttackView, attack_view
from .checkpoint import load_model, read_checkpoint_metadata, save_model
from .external import SelectOutput

__all__ = [
    "AttackView",
    "MODELS",
    "Normalize",
    "NormalizedModel",
    "attack_view",
    "build_model",
    "list_models",
    "load_model",
    "read_checkpoint_metadata",
    "register_model",
    "save_model",
    "SelectOutput",
]
