"""A training run's folder: one writer at a time, its identity, its epochs, its resumption.

:class:`RunFolder` decides what a call of ``train`` may do with its ``out_dir``: a run of
another config, or one trained on other data, is refused by name; ``force`` clears the run's
files (and only those); the run's own manifest says where to resume. It writes each epoch's
files as one atomic commit and the final model and summary at the end; the file format and the
commit protocol are :mod:`robustfair.training.checkpoint`'s. Only the main process writes;
every process reads.

What a run records about its data (``"data"`` in ``config.json``, ``state.json`` and
``summary.json``) is its name and the SHA-256 of its train split (see
:func:`robustfair.training.parts.data_record`); a run resumes only on the same data.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch
from torch import nn

from .._json import jsonable
from .._lock import folder_lock
from ..errors import ConfigError, ModelError
from ..models import load_model, save_model
from ..models.checkpoint import read_checkpoint_metadata
from . import checkpoint as ckpt
from . import distributed as ddp
from .config import TrainConfig
from .epoch_log import EpochLog, read_log
from .parts import Parts


class RunFolder:
    """The run folder ``path`` of a run of ``cfg``, seen from this process (``info``)."""

    def __init__(self, path: Path, cfg: TrainConfig, info: ddp.DistInfo) -> None:
        self.path, self.cfg, self.info = path, cfg, info
        self.resolved: dict = {}     # what every file records beside the config ...
        self.data: dict | None = None  # ... once the run has resolved them (see describe)

    def file(self, name: str) -> Path:
        return self.path / name

    def paths(self) -> dict[str, Path]:
        """The run's files that exist, by name."""
        return {name: self.file(name) for name in ckpt.RUN_FILES if self.file(name).exists()}

    # ------------------------------------------------------------------ who may use it
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (main process only); remove the folder again if this call
        created it and left it empty (a run refused before it wrote anything)."""
        if not self.info.is_main:
            yield
            return
        created = not self.path.exists()
        try:
            with folder_lock(self.path, "a training run"):
                yield
        finally:
            if created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # only succeeds when nothing was written

    def open(self, *, resume: bool, force: bool) -> dict | None:
        """The manifest to resume from (None: start fresh), after refusing a foreign run."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"output {self.path} exists and is not a directory")
        if force:
            ddp.barrier(self.info)
            if self.info.is_main and self.path.exists():
                ckpt.clear_run(self.path)
            ddp.barrier(self.info)
            return None
        manifest = ckpt.read_manifest(self.path)
        if manifest is None:
            # no epoch was ever committed (the run was refused, e.g. for a mitigation
            # combination, or killed in its first epoch): nothing to lose, start over
            self._stored_config()  # ... unless its config.json is corrupt: say so
            return None
        diffs = self.cfg.differences(manifest["config"])
        if diffs:
            raise ConfigError(
                f"{self.path} holds a run with a different config (differs in: "
                f"{', '.join(diffs)}); use another --out or --force to start over")
        if not resume:
            raise ConfigError(f"{self.path} already holds this run; pass resume=True to "
                              f"continue it or force=True to start over")
        return manifest

    def check_data(self, manifest: dict | None, data: dict) -> None:
        """Refuse to continue a run on data other than it was trained on (a run stored before
        runs recorded their data is taken on trust)."""
        stored = (manifest or {}).get("data")
        if stored is None or stored.get("sha256") == data["sha256"]:
            return
        raise ConfigError(
            f"{self.path} holds a run trained on other data ({stored.get('name')!r}, sha256 "
            f"{str(stored.get('sha256'))[:12]}... vs {data['name']!r}, sha256 "
            f"{data['sha256'][:12]}...); use another --out or --force to start over")

    def _stored_config(self) -> dict | None:
        path = self.file("config.json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{path} is corrupt; rerun with --force to start over") from None

    # ------------------------------------------------------------------ start or resume
    def describe(self, resolved: dict, data: dict) -> None:
        """What the run's files record beside the config: the resolved settings and the data."""
        self.resolved, self.data = resolved, data

    def start(self) -> None:
        """Create the folder for a fresh run and record its config."""
        if not self.info.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        ckpt.sweep_temporaries(self.path)  # of writes a killed first epoch left
        ckpt.atomic_write_text(self.file("config.json"), json.dumps(
            {"config": self.cfg.to_dict(), "resolved": self.resolved, "data": self.data},
            indent=1))

    def recover(self, manifest: dict) -> None:
        """Finish an interrupted commit; refuse files that do not match the manifest."""
        ckpt.recover(self.path, manifest)

    def restore(self, manifest: dict, parts: Parts) -> int:
        """Load the last committed epoch's state into ``parts``; return the global step."""
        self._load_weights(parts.model, self.file("checkpoint.safetensors"), parts.model)
        if parts.ema is not None:
            self._load_weights(parts.ema.model, self.file("ema.safetensors"), parts.model)
            parts.ema.updates = int(manifest.get("ema_updates") or 0)
        tensors = ckpt.load_tensors(self.file("state.safetensors"))
        ckpt.load_optimizer_state(parts.optimizer, manifest.get("optimizer"), tensors)
        device = next(parts.model.parameters()).device
        mit = ckpt.join_tensors(manifest.get("mitigations", {}), tensors)
        parts.mitigations.load_state_dict(
            {k: {kk: (vv.to(device) if isinstance(vv, torch.Tensor) else vv)
                 for kk, vv in v.items()} for k, v in mit.items()})
        if parts.scaler is not None and manifest.get("scaler"):
            parts.scaler.load_state_dict(manifest["scaler"])
        return int(manifest["global_step"])

    def read_log(self) -> pd.DataFrame:
        return read_log(self.file("epochs.csv"))

    def _load_weights(self, model: nn.Module, path: Path, trained: nn.Module) -> None:
        """Strictly load a checkpoint written by this trainer into ``model``."""
        try:
            info = read_checkpoint_metadata(path)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        saved, mine = info["config"], trained.robustfair_config
        if saved.get("name") != mine["name"] or saved.get("num_classes") != mine["num_classes"]:
            raise ConfigError(
                f"{path} holds a {saved.get('name')!r} model with {saved.get('num_classes')} "
                f"classes, but this run trains {mine['name']!r} with {mine['num_classes']}")
        tensors = ckpt.load_tensors(path)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise ConfigError(f"{path} is a checkpoint of another architecture: "
                              f"{first[1].strip() if len(first) > 1 else first[0]}") from None

    # ------------------------------------------------------------------ one epoch
    def commit_epoch(self, epoch: int, global_step: int, parts: Parts, log: EpochLog,
                     new_best: bool, metadata: dict) -> None:
        """Write the epoch's weights, states and log as one atomic commit (main process)."""
        if not self.info.is_main:
            ddp.barrier(self.info)
            return
        writers: dict[str, Callable[[Path], None]] = {
            "checkpoint.safetensors": lambda p: save_model(parts.model, p, metadata=metadata),
            "epochs.csv": lambda p: ckpt.atomic_write_text(p, log.to_csv()),
        }
        if parts.ema is not None:
            writers["ema.safetensors"] = lambda p: save_model(parts.ema.model, p,
                                                              metadata=metadata)
        if new_best:
            net = parts.eval_net()
            writers["best.safetensors"] = lambda p: save_model(
                net, p, metadata=metadata, config=parts.model.robustfair_config)
        opt_tensors, opt_tree = ckpt.optimizer_state(parts.optimizer)
        mit_tensors, mit_tree = ckpt.split_tensors(parts.mitigations.state_dict(), "mitigation")
        writers["state.safetensors"] = lambda p: ckpt.save_tensors(p, {**opt_tensors,
                                                                       **mit_tensors})
        manifest = {
            "epoch": epoch, "global_step": global_step, "complete": False, "stopped": None,
            "config": self.cfg.to_dict(), "resolved": self.resolved, "data": self.data,
            "keep": self.cfg.keep, "best": log.best, "history": log.history,
            "optimizer": opt_tree, "mitigations": mit_tree,
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "ema_updates": parts.ema.updates if parts.ema is not None else None,
            "rng": "every epoch's generators derive from (seed, epoch); nothing to store",
        }
        ckpt.commit(self.path, writers, jsonable(manifest))
        ddp.barrier(self.info)

    # ------------------------------------------------------------------ the end
    def load_best(self) -> dict[str, torch.Tensor]:
        return ckpt.load_tensors(self.file("best.safetensors"))

    def finish(self, final: nn.Module, metadata: dict, summary: dict, log: EpochLog, *,
               epoch: int, global_step: int, chosen: int, stopped: str | None) -> None:
        """Write the final model and summary and mark the run complete (main process)."""
        if self.info.is_main:
            writers = {
                "model.safetensors": lambda p: save_model(final, p, metadata=jsonable(metadata)),
                "summary.json": lambda p: ckpt.atomic_write_text(
                    p, json.dumps(jsonable(summary), indent=1)),
            }
            if stopped is not None:  # the collapsed epoch's row is logged, not its weights
                writers["epochs.csv"] = lambda p: ckpt.atomic_write_text(p, log.to_csv())
            previous = ckpt.read_manifest(self.path) or {}
            manifest = {**previous, "epoch": epoch, "global_step": global_step,
                        "config": self.cfg.to_dict(), "data": self.data,
                        "history": log.history, "best": log.best, "complete": True,
                        "stopped": stopped, "chosen_epoch": chosen, "keep": self.cfg.keep}
            manifest.pop("files", None)
            ckpt.commit(self.path, writers, jsonable(manifest))
        ddp.barrier(self.info)

    def load_finished(self, device: torch.device) -> tuple[nn.Module, pd.DataFrame, dict]:
        """A complete run's model, log and summary."""
        model = load_model(self.file("model.safetensors"), device=device)
        try:
            summary = json.loads(self.file("summary.json").read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{self.file('summary.json')} is corrupt") from None
        return model, self.read_log(), summary
