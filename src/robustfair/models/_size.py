"""A model's size before it is built: construct it on PyTorch's ``meta`` device (shapes only,
no memory) and count its bytes.

Used twice: :func:`~robustfair.models.build_model` refuses a model that could not fit in this
machine's memory (``--model-arg width=100000000`` is one line, not an allocation traceback or
the OOM killer), and :func:`~robustfair.models.load_model` compares a checkpoint's config with
its stored tensors' shapes before building anything (a 400-byte file whose header describes a
huge model costs nothing).
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ModelError


class _SkipInPlace(TorchFunctionMode):
    """Skip in-place operations on meta tensors (weight initialisation): their values do not
    exist, and some (``normal_``) would import torch's compiler stack, seconds per process."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.startswith("__") and args
                and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def on_meta(build: Callable[[], nn.Module]) -> nn.Module | None:
    """``build()`` on the meta device (no memory, no initialisation), or None when a
    constructor does something the meta device cannot (then the caller builds for real)."""
    try:
        with torch.device("meta"), _SkipInPlace():
            return build()
    except Exception:  # noqa: BLE001 - no preview; the real build reports any real problem
        return None


def state_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_size(build: Callable[[], nn.Module], name: str) -> None:
    """Refuse (one line) a model whose weights alone would exceed this machine's memory."""
    preview = on_meta(build)
    limit = memory_bytes()
    if preview is None or limit is None:
        return
    size = state_bytes(preview)
    if size > limit:
        raise ModelError(f"with these arguments its weights would take {size / 2**30:.3g} GiB, "
                         f"more than this machine's {limit / 2**30:.3g} GiB of memory")


def allocation_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's (or Python's) way of saying memory ran out."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("allocate" in text or "out of memory" in text)
