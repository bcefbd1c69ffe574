"""Multi-process training with DistributedDataParallel, started by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run --nproc_per_node N -m robustfair train ...``)
sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`setup` reads them and joins the
process group (NCCL on CUDA, Gloo on CPU). Every rank takes its own share of each global batch
of the epoch's permutation (so the global batch size stays ``batch_size``); only rank 0 writes
files; every rank reads the run directory when resuming.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .._device import resolve_device
from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``world_size == 1`` is a plain single-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """Read torchrun's environment variables (a single process when they are absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad distributed setup: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(world, rank, local)


def setup(device: str | None) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; return this rank's info and device."""
    info = from_env()
    if not info.enabled:
        return info, resolve_device(device)
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return info, dev


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics drift apart per rank)."""
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def agree(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. "stop training")."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
