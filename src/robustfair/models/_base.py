"""The model contract: a registry of constructors; every model takes images in [0, 1].

Each model starts with a :class:`Normalize` layer holding the data set's mean and std, so
attacks and audits never un-normalise (the RobustBench convention). :func:`build_model`
records the arguments that built a model in ``model.robustfair_config`` so that
``save_model`` / ``load_model`` can rebuild it without pickles.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .._registry import Registry
from ..errors import ModelError
from ._size import allocation_failed, check_size


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std stored as buffers (saved with weights)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


Constructor = Callable[..., nn.Module]
# build_model fills in the shape arguments itself; the rest are the model's own options
MODELS: Registry[Constructor] = Registry(
    "model", ModelError, supplied=("num_classes", "in_channels", "image_size"))


def register_model(name: str) -> Callable[[Constructor], Constructor]:
    """Decorator: register ``fn(*, num_classes, in_channels, image_size, **kwargs) -> nn.Module``.

    The constructor builds the network body; :func:`build_model` puts the normaliser in front.
    """
    return MODELS.register(name)


def list_models() -> list[str]:
    """The registered models' names, sorted (``build_model`` builds one by name)."""
    return MODELS.names()


class NormalizedModel(nn.Sequential):
    """``Normalize`` followed by the network body; ``model[1]`` is the body."""

    def __init__(self, normalize: Normalize, body: nn.Module) -> None:
        super().__init__(normalize, body)

    @property
    def body(self) -> nn.Module:
        return self[1]


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model for images in [0, 1] of the given channels, size and classes.

    >>> m = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    >>> m(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    fn = MODELS.get(name)
    if num_classes < 2:
        raise ModelError(f"num_classes must be at least 2, got {num_classes}")
    mean = list(mean) if mean is not None else [0.5] * in_channels
    std = list(std) if std is not None else [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ModelError(f"mean/std need {in_channels} values (one per channel)")
    shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    MODELS.check(name, **shape, **kwargs)
    try:
        # its size first, on the meta device: a model beyond this machine's memory is one line
        check_size(lambda: fn(**shape, **kwargs), name)
        body = fn(**shape, **kwargs)
    except (TypeError, ValueError) as exc:  # a value the layers refuse (width=0)
        raise ModelError(f"cannot build model {name!r}: {exc}") from None
    except (MemoryError, RuntimeError) as exc:
        if not allocation_failed(exc):
            raise
        raise ModelError(f"cannot build model {name!r}: not enough memory for its weights "
                         f"({' '.join(str(exc).split())[:120]})") from None
    model = NormalizedModel(Normalize(mean, std), body)
    model.robustfair_config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "mean": mean,
        "std": std,
        "kwargs": dict(kwargs),
    }
    return model
