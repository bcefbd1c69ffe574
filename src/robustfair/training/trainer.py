"""The training loop: ``train(config, out_dir)`` -> :class:`TrainResult`.

One epoch = a seeded pass over the training split (data on the device as uint8, converted and
augmented per batch), then a class-wise evaluation on the held-out validation split (clean and
PGD), one row per class and one per epoch appended to ``epochs.csv``, and an atomic checkpoint.
Running again on the same directory resumes after the last complete epoch; a complete run just
reports itself.

Exact resumption rests on one rule: everything random in epoch ``e`` comes from generators
seeded with ``(seed, e)`` (the shuffle, the crops and flips, the attack's random starts, and
the global generator that e.g. dropout draws from), and the learning rate is a function of the
step count. So a run killed mid-epoch and resumed on the same machine (CPU) ends with the same
weights as one never interrupted.

The pieces: :mod:`~robustfair.training.parts` builds the data splits, the model and its
optimiser; :mod:`~robustfair.training.run_folder` owns the run directory (identity checks,
commits, resume); :mod:`~robustfair.training.epoch_log` evaluates and logs each epoch;
:mod:`~robustfair.training.callbacks` holds what runs beside the loop (progress bar, EMA,
mitigation hooks, the fgsm_rs guard). This module is the loop itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from .._json import jsonable
from ..data import Dataset, load_dataset, to_float
from ..errors import ConfigError
from ..models import build_model
from . import distributed as ddp
from .augment import augment
from .callbacks import (Callback, Checkpoint, CollapseGuard, EMAUpdate, EpochEnd,
                        MitigationHooks, ProgressBar, RunStart, StepEnd, epoch_end)
from .config import TrainConfig
from .epoch_log import CSV_COLUMNS, KEEP_TEXT, EpochLog
from .objectives import Batch
from .optim import lr_at, set_lr
from .parts import Parts, TrainData, build_parts, data_record, derive_seed, split_data
from .run_folder import RunFolder

__all__ = ["CSV_COLUMNS", "TrainResult", "derive_seed", "train"]


@dataclass
class TrainResult:
    """What a training run produced.

    ``model``: the final model (eval mode), chosen by the ``keep`` rule; ``log``: the rows of
    ``epochs.csv``; ``paths``: the run's files; ``chosen_epoch``: the epoch whose weights the
    final model holds; ``stopped``: why training stopped early (None if it ran to the end);
    ``already_complete``: the directory held a finished run and nothing was trained.
    """

    model: nn.Module
    log: pd.DataFrame
    out_dir: Path
    paths: dict[str, Path]
    keep: str
    chosen_epoch: int
    epochs_run: int
    stopped: str | None
    already_complete: bool
    summary: dict = field(default_factory=dict)

    @property
    def epoch_log(self) -> pd.DataFrame:
        """One row per epoch (the averages)."""
        return self.log[self.log["scope"] == "epoch"].reset_index(drop=True)

    @property
    def class_log(self) -> pd.DataFrame:
        """One row per epoch × class."""
        return self.log[self.log["scope"] == "class"].reset_index(drop=True)


def train(config: TrainConfig | dict, out_dir: str | Path, *, dataset: Dataset | None = None,
          resume: bool = True, force: bool = False, progress: bool = True,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train by ``config`` into the run directory ``out_dir`` (created if needed).

    The data is the config's ``dataset`` (loaded by name), or ``dataset``, a
    :class:`~robustfair.data.Dataset` in hand, whose name then replaces the config's. Either
    way the run records the data's name and the SHA-256 of its train split, and resumes only
    on the same data. An existing run with the same config is resumed (``resume=True``) or
    reported if complete; one with a different config or data is refused with a ConfigError
    naming the difference; ``force=True`` deletes the old run's files and starts over.
    ``callbacks``: :class:`~robustfair.training.callbacks.Callback` objects told of the run's
    start, every epoch (with its class-wise rows), every checkpoint and the end (the protocol
    is in :mod:`robustfair.training.callbacks`; experiment trackers in
    :mod:`robustfair.training.loggers`).

    >>> import json, tempfile, torch
    >>> from robustfair.data import Split
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8, generator=g)
    >>> y = (x.float().mean(dim=(1, 2, 3)) > 127).long()  # bright or dark
    >>> toy = Dataset("toy", Split(x, y), Split(x[:50], y[:50]), ["dark", "bright"])
    >>> cfg = TrainConfig(model="mlp", objective="standard", eps=0, epochs=1, augment=False,
    ...                   batch_size=32, val_fraction=0.2, device="cpu")
    >>> with tempfile.TemporaryDirectory() as out:
    ...     result = train(cfg, out, dataset=toy, progress=False)
    ...     data = json.loads((Path(out) / "config.json").read_text())["data"]
    >>> result.epochs_run, data["name"], data["train_points"], len(data["sha256"])
    (1, 'toy', 400, 64)
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if dataset is not None:
        cfg = _naming(cfg, dataset)
    info, device = ddp.setup(cfg.device)
    try:
        folder = RunFolder(Path(out_dir), cfg, info)
        with folder.locked():  # one training run per folder
            return _Trainer(cfg, folder, info, device, progress, list(callbacks)).run(
                dataset, resume=resume, force=force)
    finally:
        ddp.teardown(info)


def _naming(cfg: TrainConfig, dataset: Dataset) -> TrainConfig:
    """The config of a run on ``dataset``, an object in hand rather than a registered name."""
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"dataset must be a robustfair.data.Dataset, got "
                          f"{type(dataset).__name__}")
    if cfg.dataset_options:
        raise ConfigError(f"dataset_options {sorted(cfg.dataset_options)} are a loader's "
                          f"options; a Dataset object passed to train() is not loaded")
    return cfg.replace(dataset=dataset.name)


class _Trainer:
    """One call of :func:`train`: set up or resume, then the epoch loop."""

    def __init__(self, cfg: TrainConfig, folder: RunFolder, info: ddp.DistInfo,
                 device: torch.device, progress: bool, user_callbacks: list[Callback]) -> None:
        self.cfg, self.folder, self.info, self.device = cfg, folder, info, device
        self.user_callbacks = user_callbacks
        self.progress = progress and info.is_main
        self.global_step = 0
        # set by run() once it knows there is training to do
        self.data: TrainData
        self.parts: Parts
        self.log: EpochLog

    def run(self, dataset: Dataset | None, *, resume: bool, force: bool) -> TrainResult:
        cfg, folder = self.cfg, self.folder
        manifest = folder.open(resume=resume, force=force)
        record = data_record(dataset) if dataset is not None else None
        if record is not None:
            folder.check_data(manifest, record)
        if manifest is not None and manifest.get("complete"):
            folder.recover(manifest)
            return self._report(manifest)
        if dataset is None:  # a data set by name is loaded only when there is training to do
            dataset = load_dataset(cfg.dataset, **cfg.dataset_options,
                                   **({"data_dir": cfg.data_dir} if cfg.data_dir else {}))
            record = data_record(dataset)
            folder.check_data(manifest, record)
        self.data = split_data(cfg, dataset, self.device)
        self.parts = build_parts(cfg, dataset, self.data, self.info, self.device)
        folder.describe(self.parts.resolved, record)
        history, best, frame = None, None, None
        if manifest is None:
            folder.start()
        else:
            folder.recover(manifest)
            self.global_step = folder.restore(manifest, self.parts)
            history, best, frame = manifest.get("history"), manifest.get("best"), folder.read_log()
        self.log = EpochLog(cfg, self.data, self.info, self.parts.memory_format,
                            history=history, best=best, frame=frame)
        ddp.barrier(self.info)
        return self._loop(start=int(manifest["epoch"]) + 1 if manifest else 1)

    def _callbacks(self) -> list[Callback]:
        """In the order they are called (see callbacks.py: a stopping callback ends the list)."""
        cfg, parts = self.cfg, self.parts
        callbacks: list[Callback] = []
        if self.progress:
            last = self.log.history[-1] if self.log.history else None
            callbacks.append(ProgressBar(cfg.epochs, parts.steps_per_epoch, last))
        callbacks += self.user_callbacks  # before the loop's own: they see every logged epoch
        if parts.ema is not None:
            callbacks.append(EMAUpdate(parts.ema))
        if cfg.objective == "fgsm_rs" and cfg.co_guard:
            callbacks.append(CollapseGuard(cfg))
        callbacks.append(MitigationHooks(parts.mitigations))
        return callbacks

    # ------------------------------------------------------------------ the loop
    def _loop(self, start: int) -> TrainResult:
        cfg, parts, log = self.cfg, self.parts, self.log
        callbacks = self._callbacks()
        last_good = _snapshot(parts.eval_net())  # what the run keeps if it stops now
        stopped, epoch = None, start - 1
        begin = RunStart(self.folder.path, cfg, list(self.data.classes), start,
                         list(log.history), self.info.is_main)
        for callback in callbacks:
            callback.on_run_start(begin)
        for epoch in range(start, cfg.epochs + 1):
            started = time.perf_counter()
            for callback in callbacks:
                callback.on_epoch_start(epoch)
            loss, train_acc, lr = self._train_epoch(epoch, callbacks)
            row, class_rows, stats = log.evaluate(parts.eval_net(), epoch, loss=loss,
                                                  train_acc=train_acc, lr=lr, started=started)
            stopped = epoch_end(callbacks, EpochEnd(epoch, row, stats, log.history, class_rows))
            if stopped is not None:  # logged, but its weights are not kept
                row["note"] = stopped
                log.append(row, class_rows)
                break
            new_best = log.update_best(row)
            if new_best:
                row["note"] = f"best ({cfg.keep})"
            log.append(row, class_rows)
            self.folder.commit_epoch(epoch, self.global_step, parts, log, new_best,
                                     self._metadata(epoch))
            for callback in callbacks:
                callback.on_checkpoint(Checkpoint(epoch, self.folder.path, row))
            last_good = _snapshot(parts.eval_net())
        result = self._finish(epoch, stopped, last_good)
        for callback in callbacks:
            callback.on_run_end(result)
        return result

    def _train_epoch(self, epoch: int, callbacks: list[Callback]) -> tuple[float, float, float]:
        """One pass over the training split: ``(mean loss, accuracy, last learning rate)``."""
        cfg, dev, info, parts, data = self.cfg, self.device, self.info, self.parts, self.data
        torch.manual_seed(derive_seed(cfg.seed, epoch, "global"))
        order_gen = torch.Generator(device=dev).manual_seed(derive_seed(cfg.seed, epoch, "order"))
        noise_gen = torch.Generator(device=dev).manual_seed(
            derive_seed(cfg.seed, epoch, "noise", info.rank))
        n = len(data.train_y)
        sample_w = parts.mitigations.sample_weights()
        if sample_w is not None:
            order = torch.multinomial(sample_w[data.train_y], n, replacement=True,
                                      generator=order_gen)
        else:
            order = torch.randperm(n, generator=order_gen, device=dev)
        per_class = self._per_class_settings()
        parts.model.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen, lr = 0, 0.0
        for step in range(parts.steps_per_epoch):
            chunk = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            idx = chunk[info.rank::info.world_size]  # this rank's share of the global batch
            x = to_float(data.train_x[idx])
            if cfg.augment:
                x = augment(x, pad=parts.pad, mode=cfg.pad_mode, flip=parts.flip,
                            generator=noise_gen)
            x = x.contiguous(memory_format=parts.memory_format)
            y = data.train_y[idx]
            lr = lr_at(cfg, self.global_step, total_steps=parts.total_steps,
                       steps_per_epoch=parts.steps_per_epoch)
            set_lr(parts.optimizer, lr)
            batch = self._batch(x, y, per_class, noise_gen, epoch, step)
            loss, logits = parts.objective(parts.train_model, batch)
            # DDP averages the ranks' gradients; weighting each rank's mean by its share of the
            # global batch makes that average the gradient of the global batch's mean
            scaled = loss * (len(idx) * info.world_size / len(chunk)) if info.enabled else loss
            parts.optimizer.zero_grad(set_to_none=True)
            if parts.scaler is not None:
                parts.scaler.scale(scaled).backward()
                parts.scaler.step(parts.optimizer)
                parts.scaler.update()
            else:
                scaled.backward()
                parts.optimizer.step()
            self.global_step += 1
            loss_sum += loss.detach().float() * len(idx)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += len(idx)
            done = StepEnd(parts.model, step, loss_sum, correct, seen)
            for callback in callbacks:
                callback.on_step_end(done)
        totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=dev)])
        if info.enabled:
            import torch.distributed as dist

            dist.all_reduce(totals)
        return (float(totals[0] / totals[2].clamp_min(1)), float(totals[1] / totals[2].clamp_min(1)),
                lr)

    def _per_class_settings(self) -> dict[str, torch.Tensor | None]:
        """The mitigations' per-class tensors for this epoch (asked once, see the contract)."""
        m = self.parts.mitigations
        if not m:
            return {"weights": None, "eps": None, "beta": None, "offsets": None}
        return {"weights": m.class_weights(), "eps": m.class_eps(), "beta": m.class_beta(),
                "offsets": m.logit_offsets()}

    def _batch(self, x: torch.Tensor, y: torch.Tensor, per_class: dict,
               generator: torch.Generator, epoch: int, step: int) -> Batch:
        cfg, parts = self.cfg, self.parts
        if per_class["eps"] is not None:
            eps = per_class["eps"][y]
            # the step keeps its ratio to the radius
            alpha = (eps * (parts.alpha / cfg.eps) if cfg.eps > 0
                     else torch.full_like(eps, parts.alpha))
        else:
            eps = torch.full((len(y),), cfg.eps, device=x.device)
            alpha = torch.full((len(y),), parts.alpha, device=x.device)
        mitigations = parts.mitigations
        return Batch(
            x=x, y=y, eps=eps, alpha=alpha, generator=generator, attack_model=parts.attack_model,
            mitigations=mitigations,
            weights=per_class["weights"][y] if per_class["weights"] is not None else None,
            beta=per_class["beta"][y] if per_class["beta"] is not None else None,
            target=mitigations.attack_target(y) if mitigations else None,
            offsets=per_class["offsets"], label_smoothing=cfg.label_smoothing,
            autocast=parts.autocast, epoch=epoch, step=step)

    def _metadata(self, epoch: int) -> dict:
        """What every saved model of the run says about itself."""
        return {"dataset": self.data.name, "classes": self.data.classes, "epoch": epoch,
                "training": self.cfg.to_dict(), "keep": self.cfg.keep}

    # ------------------------------------------------------------------ the end
    def _finish(self, last_epoch: int, stopped: str | None,
                last_good: dict[str, torch.Tensor]) -> TrainResult:
        cfg, log, parts = self.cfg, self.log, self.parts
        done = log.completed()
        if cfg.keep != "last" and log.best is not None:
            chosen = int(log.best["epoch"])
            weights = self.folder.load_best()
        else:
            chosen = int(done[-1]["epoch"]) if done else 0
            weights = last_good
        final = build_model(cfg.model, **_build_args(parts.model.robustfair_config))
        final.load_state_dict(weights)
        final = final.to(self.device).eval()
        summary = jsonable({
            "config": cfg.to_dict(), "resolved": parts.resolved, "data": self.folder.data,
            "keep": cfg.keep, "keep_rule": KEEP_TEXT[cfg.keep], "chosen_epoch": chosen,
            "epochs_run": last_epoch, "stopped": stopped,
            "validation_at_chosen_epoch": next((h for h in done if h["epoch"] == chosen), None),
            "eval_attack": f"PGD-{cfg.eval_steps} {cfg.norm} eps={cfg.eps:.6g} "
                           f"alpha={cfg.eval_alpha():.6g} on the validation split",
        })
        meta = jsonable({**self._metadata(chosen), "summary": summary})
        self.folder.finish(final, meta, summary, log, epoch=last_epoch,
                           global_step=self.global_step, chosen=chosen, stopped=stopped)
        final.robustfair_metadata = meta
        return TrainResult(model=final, log=log.frame.reset_index(drop=True),
                           out_dir=self.folder.path, paths=self.folder.paths(), keep=cfg.keep,
                           chosen_epoch=chosen, epochs_run=last_epoch, stopped=stopped,
                           already_complete=False, summary=summary)

    def _report(self, manifest: dict) -> TrainResult:
        """The result of a run that was already complete."""
        model, frame, summary = self.folder.load_finished(self.device)
        return TrainResult(model=model, log=frame, out_dir=self.folder.path,
                           paths=self.folder.paths(), keep=self.cfg.keep,
                           chosen_epoch=int(summary.get("chosen_epoch", manifest["epoch"])),
                           epochs_run=int(manifest["epoch"]), stopped=manifest.get("stopped"),
                           already_complete=True, summary=summary)


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _build_args(config: dict) -> dict:
    """``build_model`` arguments from a model's ``robustfair_config``."""
    return {k: v for k, v in config.items() if k not in ("name", "kwargs")} | dict(
        config.get("kwargs", {}))
