"""Where a model comes from, as data: a :class:`ModelSource` names a robustfair checkpoint or a
model spec with its weights and input/output adapters, and builds the model for a data set.

It is plain, picklable data, so the same description can be written into a leaderboard spec,
sent to a worker process or a Ray task, and rebuilt there: a worker never receives a live
``nn.Module`` (a user's factory module cannot be pickled by reference in another process).

>>> src = ModelSource(spec="small_cnn", weights="net.safetensors", normalize="0.5/0.25")
>>> src.label
'small_cnn + net.safetensors'
>>> ModelSource(checkpoint="run/model.safetensors").label
'run/model.safetensors'
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError

__all__ = ["DataShape", "ModelSource", "check_checkpoint_fits"]


@dataclass(frozen=True)
class DataShape:
    """What a model is built for: the data set's class count, channels and image size."""

    num_classes: int
    channels: int
    image_size: int
    name: str = "the data"

    @classmethod
    def of(cls, ds, name: str | None = None) -> "DataShape":
        """The shape of a :class:`~robustfair.data.Dataset`."""
        return cls(ds.num_classes, ds.channels, ds.image_size, name or getattr(ds, "name", "the data"))


def check_checkpoint_fits(model: nn.Module, shape: DataShape, checkpoint) -> None:
    """A robustfair checkpoint's class count, channels and image size must be the data's."""
    config = getattr(model, "robustfair_config", {}) or {}
    if config.get("num_classes") != shape.num_classes:
        raise ModelError(f"checkpoint {checkpoint} has {config.get('num_classes')} classes but "
                         f"{shape.name} has {shape.num_classes}")
    built_for = (config.get("in_channels"), config.get("image_size"))
    if built_for != (shape.channels, shape.image_size):
        raise ModelError(f"checkpoint {checkpoint} expects {built_for[0]}-channel "
                         f"{built_for[1]}x{built_for[1]} images but {shape.name} has "
                         f"{shape.channels}-channel {shape.image_size}x{shape.image_size}")


@dataclass(frozen=True)
class ModelSource:
    """A model to audit: ``checkpoint`` (a robustfair ``.safetensors``) or ``spec`` (see
    :mod:`robustfair.models.external`) with optional ``weights``, ``normalize`` (``cifar10``,
    ``imagenet``, ``MEAN/STD``) and ``output_index`` (which output holds the logits).
    ``options`` holds what a spec's own loader takes besides (e.g. a model folder)."""

    checkpoint: str | None = None
    spec: str | None = None
    weights: str | None = None
    normalize: str | None = None
    output_index: int | str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.spec is None):
            raise ConfigError("a model source needs exactly one of checkpoint or spec")
        if self.checkpoint is not None:
            for name in ("weights", "normalize", "output_index"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} goes with a model spec; a checkpoint carries its own")

    @property
    def label(self) -> str:
        """How the model is named in output: the checkpoint, or the spec and its weights."""
        if self.checkpoint is not None:
            return str(self.checkpoint)
        return self.spec + (f" + {self.weights}" if self.weights else "")

    def to_dict(self) -> dict:
        """JSON-ready fields (``None`` ones left out)."""
        data = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        if self.options:
            data["options"] = dict(self.options)
        return data

    def build(self, shape: DataShape, *, device: torch.device | str = "cpu",
              example: torch.Tensor | None = None) -> tuple[nn.Module, dict]:
        """The model in eval mode on ``device``, and its provenance (files and their SHA-256).

        ``example`` (float images in [0, 1]) runs one forward pass that checks the model fits
        the data (one logits tensor, one score per class) before any attack runs.
        """
        if self.checkpoint is not None:
            model, provenance = self._from_checkpoint(shape, device)
        else:
            model, provenance = self._from_spec(shape)
        from ._weight_checks import refuse_meta

        refuse_meta(model)  # a factory's meta-device model that no weights filled
        model = model.to(device).eval()
        if example is not None and self.checkpoint is None:
            from .external import check_forward

            check_forward(model, example.to(device), shape.num_classes, shape.name)
        return model, provenance

    def _from_checkpoint(self, shape: DataShape, device) -> tuple[nn.Module, dict]:
        from .checkpoint import load_model
        from .external import file_sha256

        model = load_model(self.checkpoint, device=device)
        check_checkpoint_fits(model, shape, self.checkpoint)
        return model, {"checkpoint": str(self.checkpoint), "weights_sha256": file_sha256(self.checkpoint)}

    def _from_spec(self, shape: DataShape) -> tuple[nn.Module, dict]:
        from ._base import list_models
        from .external import (SelectOutput, build_from_spec, load_weights, normalization,
                               with_normalization)

        spec = self.spec.strip()
        if spec.startswith("robustbench:"):
            return self._from_robustbench(spec, shape)
        stats = normalization(self.normalize, channels=shape.channels) if self.normalize else None
        if spec in list_models() and self.weights is None:
            raise ModelError(f"model {spec} builds an untrained network: give its weights "
                             f"(or a checkpoint saved by robustfair)")
        pretrained = spec.startswith("timm:") and self.weights is None
        model = build_from_spec(spec, num_classes=shape.num_classes, in_channels=shape.channels,
                                image_size=shape.image_size, pretrained=pretrained)
        provenance: dict = {"model_spec": spec, "weights": None, "weights_sha256": None}
        if self.weights is not None:
            loaded = load_weights(model, self.weights)
            provenance.update(weights=loaded["path"], weights_sha256=loaded["sha256"],
                              weights_container_key=loaded["container_key"],
                              weights_stripped_prefixes=loaded["stripped_prefixes"])
        elif pretrained:
            provenance["weights"] = "timm pretrained"
        if self.output_index is not None:
            model = SelectOutput(model, self.output_index)
            provenance["output_index"] = self.output_index
        if stats is not None:
            model = with_normalization(model, *stats)
            provenance["normalize"] = {"spec": self.normalize, "mean": stats[0], "std": stats[1]}
        return model, provenance

    def _from_robustbench(self, spec: str, shape: DataShape) -> tuple[nn.Module, dict]:
        """An entry of RobustBench's zoo: RobustBench loads its own checkpoint, and its models
        take [0, 1] inputs and return logits, so no weights or adapters go with it."""
        from .robustbench import load_entry

        for name, flag in (("weights", "--weights"), ("normalize", "--normalize"),
                           ("output_index", "--output-index")):
            if getattr(self, name) is not None:
                raise ConfigError(f"{flag} does not go with {spec}: RobustBench loads the entry's "
                                  f"own checkpoint (from --model-dir), takes [0, 1] inputs and "
                                  f"returns logits")
        model, provenance = load_entry(spec[len("robustbench:"):], dict(self.options),
                                       num_classes=shape.num_classes, channels=shape.channels,
                                       image_size=shape.image_size)
        return model, {"model_spec": spec, **provenance}
