"""What a training run is made of, built from its config and its data.

:func:`split_data` carves the validation split out of the training split and puts both on the
device (as uint8: the loop converts and augments each batch as it draws it).
:func:`build_parts` builds the model and everything that changes it (the EMA, the optimiser,
the AMP scaler, the mitigations, the objective) and the two views the loop runs it through:
compiled and/or DDP-wrapped for the training forward pass, BatchNorm folded for the inner
attack. The initial weights come from a generator seeded with ``(seed, "init")``, so a resumed
run builds the same model that it then overwrites with its checkpoint.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..data import Dataset, to_float
from ..errors import ConfigError
from ..models import AttackView, attack_view, build_model
from .augment import default_flip, default_pad
from .config import TrainConfig
from .distributed import DistInfo
from .ema import EMA
from .evaluate import stratified_holdout, warn_small_validation
from .mitigations import MitigationContext, MitigationStack, build_mitigation
from .objectives import build_objective
from .optim import build_optimizer


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (e.g. ``(seed, epoch, "order")``), stable across runs.

    >>> derive_seed(0, 1, "order") == derive_seed(0, 1, "order") != derive_seed(0, 2, "order")
    True
    """
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def data_record(ds: Dataset) -> dict[str, Any]:
    """What a run records about its data: the name and the SHA-256 of what training reads.

    The digest covers the train split's images and labels (shape, dtype and bytes) and the
    class names; the test split is never read by training.

    >>> from robustfair.data import Split
    >>> s = Split(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]))
    >>> record = data_record(Dataset("toy", s, s, ["a", "b"]))
    >>> record["name"], record["train_points"], len(record["sha256"])
    ('toy', 2, 64)
    """
    h = hashlib.sha256()
    for t in (ds.train.x, ds.train.y):
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    h.update("\0".join(ds.classes).encode())
    return {"name": ds.name, "sha256": h.hexdigest(), "train_points": len(ds.train)}


@dataclass
class TrainData:
    """The training and validation splits on the device, with the class names."""

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def memory_format_of(cfg: TrainConfig) -> torch.memory_format:
    """The run's memory format: channels_last unless the config turns it off.

    channels_last by default on every device: faster convolutions on CUDA, and on a CPU 4x
    faster max-pooling and no slower convolutions (benchmarks/README.md).

    >>> memory_format_of(TrainConfig()) == torch.channels_last
    True
    """
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    return torch.channels_last if channels_last else torch.contiguous_format


def _on_device(x: torch.Tensor, device: torch.device,
               memory_format: torch.memory_format) -> torch.Tensor:
    """Images on the device, stored once in the run's memory format: a batch gathered from
    them keeps it, so no step pays for a layout copy (a ten-line loop converts once, too)."""
    x = x.to(device)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


def split_data(cfg: TrainConfig, ds: Dataset, device: torch.device) -> TrainData:
    """Hold out the stratified validation split (``cfg.val_*``); warn when a class gets few."""
    classes, k = list(ds.classes), ds.num_classes
    train_idx, val_idx = stratified_holdout(ds.train.y, cfg.val_fraction, cfg.val_max,
                                            cfg.val_seed, k, cfg.val_min_per_class)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ConfigError(f"dataset {ds.name!r} is too small for val_fraction {cfg.val_fraction}")
    warn_small_validation(ds.train.y[val_idx], k, classes)
    fmt = memory_format_of(cfg)
    return TrainData(ds.name, classes,
                     _on_device(ds.train.x[train_idx], device, fmt), ds.train.y[train_idx].to(device),
                     _on_device(ds.train.x[val_idx], device, fmt), ds.train.y[val_idx].to(device))


@dataclass
class Parts:
    """Everything the loop trains with (see the module docstring)."""

    model: nn.Module           # the weights being trained: checkpoint.safetensors
    train_model: nn.Module     # what the training forward pass runs through
    attack_model: nn.Module    # what the inner attack runs through
    memory_format: torch.memory_format
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: Callable[[], contextlib.AbstractContextManager]
    objective: Callable
    mitigations: MitigationStack
    pad: int
    flip: bool
    alpha: float               # the training attack's step size
    steps_per_epoch: int
    total_steps: int
    resolved: dict             # the settings the config left open, as this run resolved them

    def eval_net(self) -> nn.Module:
        """The weights that are evaluated and saved: a mitigation's, else the EMA's, else the model."""
        return self.mitigations.eval_model() or (self.ema.model if self.ema else self.model)


def build_parts(cfg: TrainConfig, ds: Dataset, data: TrainData, info: DistInfo,
                device: torch.device) -> Parts:
    """Build a run's model, its optimiser and helpers, in a fixed (seeded) order."""
    k = data.num_classes
    mean, std = ds.stats()
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build_model(cfg.model, num_classes=k, in_channels=ds.channels,
                        image_size=ds.image_size, mean=mean, std=std,
                        **cfg.model_kwargs).to(device)
    memory_format = memory_format_of(cfg)
    channels_last = memory_format == torch.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema) if cfg.ema is not None else None

    pad = cfg.pad if cfg.pad is not None else default_pad(ds.image_size)
    flip = cfg.flip if cfg.flip is not None else default_flip(ds.name, ds.info)
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    steps_per_epoch = batches_per_epoch(len(data.train_y), cfg.batch_size, info.world_size)
    mitigations = MitigationStack(
        [build_mitigation(m["name"], **{key: v for key, v in m.items() if key != "name"})
         for m in cfg.mitigations])
    objective = build_objective(cfg.objective, steps=cfg.steps, norm=cfg.norm, beta=cfg.beta,
                                trades_start=cfg.trades_start)
    mitigations.setup(MitigationContext(
        num_classes=k, classes=data.classes,
        class_counts=torch.bincount(data.train_y.cpu(), minlength=k), device=device,
        eps=cfg.eps, norm=cfg.norm, objective=cfg.objective, epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch, seed=cfg.seed, beta=cfg.beta,
        beta_weighted=objective.beta_weighted))
    optimizer = build_optimizer(cfg, model.parameters())

    fast = torch.compile(model) if cfg.compile else model
    # The inner attack (eval mode, input gradients only) runs on a view of the live model with
    # BatchNorm folded into the convolutions; it follows every optimizer step. Not with
    # compile: the view's live-weight checks would make torch.compile recompile.
    if cfg.compile:
        attack_model, applied = fast, "torch.compile"
    else:
        example = to_float(data.train_x[:8]).contiguous(memory_format=memory_format)
        view = attack_view(model, example, channels_last=channels_last)
        attack_model, applied = _attack_net(model, view)
    train_model: nn.Module = fast
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        train_model = torch.compile(wrapped) if cfg.compile else wrapped

    resolved = {"pad": pad, "flip": flip, "alpha": cfg.attack_alpha(),
                "eval_alpha": cfg.eval_alpha(), "train_size": len(data.train_y),
                "val_size": len(data.val_y), "steps_per_epoch": steps_per_epoch,
                "amp": str(dtype).replace("torch.", "") if dtype else "off",
                "world_size": info.world_size, "device": str(device), "attack_model": applied}
    return Parts(model=model, train_model=train_model, attack_model=attack_model,
                 memory_format=memory_format, ema=ema, optimizer=optimizer, scaler=scaler,
                 autocast=_autocast(dtype, device), objective=objective,
                 mitigations=mitigations, pad=pad, flip=flip, alpha=cfg.attack_alpha(),
                 steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * cfg.epochs,
                 resolved=resolved)


def _attack_net(model: nn.Module, view: AttackView) -> tuple[nn.Module, list[str] | str]:
    """What the inner attack runs through, and what that applies.

    The view where it folds batch norms (fewer kernels per pass). Its channels_last alone
    is what the model, already converted to the run's memory format, computes by itself (the
    same points bit for bit on LeNet and the MLP); there the view's per-call checks of the
    live weights would cost without saving anything (about 4% of a PGD step on LeNet), so the
    attack calls the model itself (eval mode, input gradients only, as
    :func:`~robustfair.training.objectives.training_attack` runs it). ``view.applied`` names
    what the view does; anything beyond channels_last (a fold) makes it worth its checks.
    """
    if any(part != "channels_last" for part in view.applied):
        return view, list(view.applied)
    return model, "as is"


def batches_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Global batches per epoch; a last batch too small to give every rank a point is dropped.

    >>> batches_per_epoch(10, 4, 1), batches_per_epoch(9, 4, 2)
    (3, 2)
    """
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the device supports it, fp16 (with a GradScaler) otherwise; off on CPU by default."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp fp16 needs a CUDA device (use bf16 on CPU)")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _autocast(dtype: torch.dtype | None,
              device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
