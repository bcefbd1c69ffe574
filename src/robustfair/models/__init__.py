"""Models by name: ``build_model("preact_resnet18", num_classes=10)``; safe save and load."""
from ._base import Normalize, build_model, list_models, register_model

__all__ = ["Normalize", "build_model", "list_models", "register_model"]
