"""Fixed per-class loss weights (the study's mitigation 1: up-weight "cat" by 10, 20, 50, 100).

>>> from robustfair.training.mitigations import MitigationContext
>>> m = ClassWeight(weights={"b": 50})
>>> m.setup(MitigationContext(num_classes=3, classes=["a", "b", "c"]))
>>> m.class_weights().tolist()
[1.0, 50.0, 1.0]
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..._parse import parse_number
from ...errors import ConfigError
from ._base import Mitigation, MitigationContext, register_mitigation


@register_mitigation("class_weight")
class ClassWeight(Mitigation):
    """Weight the loss of class ``c`` by ``weights[c]`` (needed; classes by name or index; others 1)."""

    def __init__(self, weights: Mapping[str | int, float | str] | str | None = None) -> None:
        if isinstance(weights, str):  # "cat=50;dog=2" from a CLI option
            weights = dict(_split_pair(p) for p in weights.replace(";", ",").split(",") if p)
        self.weights = {str(k): parse_number(v, what=f"weight of class {k!r}")
                        for k, v in dict(weights or {}).items()}
        if not self.weights:  # every weight 1 would train as if there were no mitigation
            raise ConfigError("class_weight needs weights (e.g. weights=3=50: class 3 weighs 50, "
                              "the others 1); without them it changes nothing")
        for k, v in self.weights.items():
            if v < 0:
                raise ConfigError(f"weight of class {k!r} must be >= 0, got {v}")

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        w = torch.ones(ctx.num_classes, dtype=torch.float32)
        for name, value in self.weights.items():
            w[ctx.class_index(name)] = value
        if float(w.sum()) <= 0:
            raise ConfigError("class weights are all zero")
        self._w = w.to(ctx.device)

    def class_weights(self) -> torch.Tensor:
        return self._w

    def __repr__(self) -> str:
        return f"ClassWeight(weights={self.weights})"


def _split_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"class weight {text!r} must look like CLASS=WEIGHT")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()
