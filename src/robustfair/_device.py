"""Device choice: an explicit device, else CUDA, else Apple MPS, else CPU."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import RobustfairError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to run on; ``None`` picks the fastest one available."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise RobustfairError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RobustfairError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RobustfairError(f"device {device!r} requested but there are only "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RobustfairError(f"device {device!r} requested but Apple MPS is not available "
                                  f"in this PyTorch build or on this machine")
    backend = getattr(torch, dev.type, None)  # e.g. torch.xpu; "meta" holds no data at all
    if dev.type not in ("cpu", "cuda", "mps") and not (
            hasattr(backend, "is_available") and backend.is_available()):
        raise RobustfairError(f"device {device!r} is not available; use cpu, cuda, cuda:N or mps")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch CPU threads (``None``: leave as is), then restore the old count.

    Small models on a CPU run faster on one thread (thread synchronisation costs more than it
    saves), and a fixed count makes CPU results identical across machines with different
    numbers of cores (the reduction order depends on it).
    """
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(max(1, int(count)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
