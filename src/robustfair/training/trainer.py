"""The training loop: ``train(config, out_dir)`` -> :class:`TrainResult`.

One epoch = a seeded pass over the training split (data on the device as uint8, converted and
augmented per batch), then a class-wise evaluation on the held-out validation split (clean and
PGD), one row per class and one per epoch appended to ``epochs.csv``, and an atomic checkpoint
(see :mod:`robustfair.training.checkpoint`). Running again on the same directory resumes after
the last complete epoch; a complete run just reports itself.

Exact resumption rests on one rule: everything random in epoch ``e`` comes from generators
seeded with ``(seed, e)`` (the shuffle, the crops and flips, the attack's random starts, and
the global generator that e.g. dropout draws from), and the learning rate is a function of the
step count. So a run killed mid-epoch and resumed on the same machine (CPU) ends with the same
weights as one never interrupted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

from .._json import jsonable
from ..data import load_dataset, to_float
from .._lock import folder_lock
from ..errors import ConfigError, ModelError
from ..models import attack_view, build_model, load_model, save_model
from ..models.checkpoint import read_checkpoint_metadata
from . import checkpoint as ckpt
from . import distributed as ddp
from .augment import augment, default_flip, default_pad
from .config import TrainConfig
from .ema import EMA
from .evaluate import evaluate_classwise, stratified_holdout, warn_small_validation
from .mitigations import EpochStats, MitigationContext, MitigationStack, build_mitigation
from .objectives import Batch, build_objective
from .optim import build_optimizer, lr_at, set_lr

CSV_COLUMNS = ["epoch", "scope", "class", "n", "clean_acc", "robust_acc", "natural_error",
               "boundary_error", "loss", "train_acc", "lr", "time_s", "worst_class",
               "worst_class_robust_acc", "note"]


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


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (e.g. ``(seed, epoch, "order")``), stable across runs."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def train(config: TrainConfig | dict, out_dir: str | Path, *, resume: bool = True,
          force: bool = False, progress: bool = True) -> TrainResult:
    """Train by ``config`` into the run directory ``out_dir`` (created if needed).

    An existing run with the same config is resumed (``resume=True``) or reported if complete;
    one with a different config is refused with a ConfigError naming the differing settings;
    ``force=True`` deletes the old run's files and starts over.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    info, device = ddp.setup(cfg.device)
    try:
        with _run_dir_lock(Path(out_dir), info.is_main):  # one training run per folder
            return _Run(cfg, Path(out_dir), info, device, progress).run(resume=resume,
                                                                        force=force)
    finally:
        ddp.teardown(info)


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path, main: bool):
    """Hold the run folder's lock (main process only); remove the folder again if this call
    created it and left it empty (a run refused before it wrote anything)."""
    if not main:
        yield
        return
    created = not run_dir.exists()
    try:
        with folder_lock(run_dir, "a training run"):
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only succeeds when nothing was written


class _Run:
    """One call of :func:`train` (split into steps so each reads on its own)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, info: ddp.DistInfo,
                 device: torch.device, progress: bool) -> None:
        self.cfg, self.run_dir, self.info, self.device = cfg, run_dir, info, device
        self.progress = progress and info.is_main

    # ------------------------------------------------------------------ run directory
    def _check_run_dir(self, resume: bool, force: bool) -> dict | None:
        """The manifest to resume from (None: start fresh), after refusing a foreign run."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"output {self.run_dir} exists and is not a directory")
        if force:
            ddp.barrier(self.info)
            if self.info.is_main and self.run_dir.exists():
                ckpt.clear_run(self.run_dir)
            ddp.barrier(self.info)
            return None
        manifest = ckpt.read_manifest(self.run_dir)
        stored = manifest["config"] if manifest else self._stored_config()
        if stored is not None:
            diffs = self.cfg.differences(stored)
            if manifest is None:
                # no epoch was ever committed (the run was refused, e.g. for a mitigation
                # combination, or killed in its first epoch): nothing to lose, start over
                diffs = []
            if diffs:
                raise ConfigError(
                    f"{self.run_dir} holds a run with a different config (differs in: "
                    f"{', '.join(diffs)}); use another --out or --force to start over")
            if not resume and manifest is not None:
                raise ConfigError(f"{self.run_dir} already holds this run; pass resume=True to "
                                  f"continue it or force=True to start over")
        return manifest

    def _stored_config(self) -> dict | None:
        path = self.run_dir / "config.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{path} is corrupt; rerun with --force to start over") from None

    def _path(self, name: str) -> Path:
        return self.run_dir / name

    # ------------------------------------------------------------------ set-up
    def run(self, *, resume: bool, force: bool) -> TrainResult:
        manifest = self._check_run_dir(resume, force)
        if manifest is not None and manifest.get("complete"):
            ckpt.recover(self.run_dir, manifest)
            return self._finished_result(manifest, already_complete=True)
        self._build()
        if manifest is not None:
            ckpt.recover(self.run_dir, manifest)
            self._restore(manifest)
        elif self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.sweep_temporaries(self.run_dir)  # of writes a killed first epoch left
            ckpt.atomic_write_text(self._path("config.json"), json.dumps(
                {"config": self.cfg.to_dict(), "resolved": self.resolved}, indent=1))
        ddp.barrier(self.info)
        return self._loop()

    def _build(self) -> None:
        cfg, device = self.cfg, self.device
        ds = load_dataset(cfg.dataset, **({"data_dir": cfg.data_dir} if cfg.data_dir else {}),
                          **cfg.dataset_options)
        self.classes = list(ds.classes)
        k = ds.num_classes
        train_idx, val_idx = stratified_holdout(ds.train.y, cfg.val_fraction, cfg.val_max,
                                                cfg.val_seed, k, cfg.val_min_per_class)
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise ConfigError(f"dataset {cfg.dataset!r} is too small for val_fraction "
                              f"{cfg.val_fraction}")
        warn_small_validation(ds.train.y[val_idx], k, self.classes)
        self.train_x = ds.train.x[train_idx].to(device)
        self.train_y = ds.train.y[train_idx].to(device)
        self.val_x = ds.train.x[val_idx].to(device)
        self.val_y = ds.train.y[val_idx].to(device)
        self.num_classes = k
        self.dataset_name = ds.name

        mean, std = ds.stats()
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        self.model = build_model(cfg.model, num_classes=k, in_channels=ds.channels,
                                 image_size=ds.image_size, mean=mean, std=std,
                                 **cfg.model_kwargs).to(device)
        # channels_last by default on every device: faster convolutions on CUDA, and on a CPU
        # 4x faster max-pooling and no slower convolutions (benchmarks/README.md).
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else True
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema is not None else None

        self.pad = cfg.pad if cfg.pad is not None else default_pad(ds.image_size)
        self.flip = cfg.flip if cfg.flip is not None else default_flip(ds.name, ds.info)
        self.alpha = cfg.attack_alpha()
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        self.scaler = (torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16
                       else None)

        self.batches_per_epoch = _batches_per_epoch(len(self.train_y), cfg.batch_size,
                                                    self.info.world_size)
        self.total_steps = self.batches_per_epoch * cfg.epochs
        self.mitigations = MitigationStack(
            [build_mitigation(m["name"], **{k2: v for k2, v in m.items() if k2 != "name"})
             for m in cfg.mitigations])
        self.mitigations.setup(MitigationContext(
            num_classes=k, classes=self.classes,
            class_counts=torch.bincount(self.train_y.cpu(), minlength=k), device=device,
            eps=cfg.eps, norm=cfg.norm, objective=cfg.objective, epochs=cfg.epochs,
            steps_per_epoch=self.batches_per_epoch, seed=cfg.seed, beta=cfg.beta))
        self.objective = build_objective(cfg.objective, steps=cfg.steps, norm=cfg.norm,
                                         beta=cfg.beta, trades_start=cfg.trades_start)
        self.optimizer = build_optimizer(cfg, self.model.parameters())

        # what the training forward pass and the attack run through
        fast = torch.compile(self.model) if cfg.compile else self.model
        # The inner attack (eval mode, input gradients only) runs on a view of the live model
        # with BatchNorm folded into the convolutions; it follows every optimizer step. Not
        # with compile: the view's live-weight checks would make torch.compile recompile.
        if cfg.compile:
            self.attack_model, attack_model_applied = fast, "torch.compile"
        else:
            example = to_float(self.train_x[:8]).contiguous(memory_format=self.memory_format)
            view = attack_view(self.model, example, channels_last=self.channels_last)
            self.attack_model, attack_model_applied = view, list(view.applied) or "as is"
        self.train_model: nn.Module = fast
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
            self.train_model = torch.compile(wrapped) if cfg.compile else wrapped

        self.start_epoch, self.global_step = 1, 0
        self.history: list[dict] = []
        self.log = pd.DataFrame(columns=CSV_COLUMNS)
        self.best: dict | None = None
        self.resolved = {"pad": self.pad, "flip": self.flip, "alpha": self.alpha,
                         "eval_alpha": cfg.eval_alpha(), "train_size": len(self.train_y),
                         "val_size": len(self.val_y), "steps_per_epoch": self.batches_per_epoch,
                         "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype
                         else "off", "world_size": self.info.world_size, "device": str(device),
                         "attack_model": attack_model_applied}

    def _eval_net(self) -> nn.Module:
        """The weights that are evaluated and saved: a mitigation's, else the EMA's, else the model."""
        return self.mitigations.eval_model() or (self.ema.model if self.ema else self.model)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._eval_net().state_dict().items()}

    # ------------------------------------------------------------------ resume
    def _restore(self, manifest: dict) -> None:
        path = self._path("checkpoint.safetensors")
        self._load_weights(self.model, path)
        if self.ema is not None:
            self._load_weights(self.ema.model, self._path("ema.safetensors"))
            self.ema.updates = int(manifest.get("ema_updates") or 0)
        tensors = ckpt.load_tensors(self._path("state.safetensors"))
        ckpt.load_optimizer_state(self.optimizer, manifest.get("optimizer"), tensors)
        mit = ckpt.join_tensors(manifest.get("mitigations", {}), tensors)
        self.mitigations.load_state_dict(
            {k: {kk: (vv.to(self.device) if isinstance(vv, torch.Tensor) else vv)
                 for kk, vv in v.items()} for k, v in mit.items()})
        if self.scaler is not None and manifest.get("scaler"):
            self.scaler.load_state_dict(manifest["scaler"])
        self.start_epoch = int(manifest["epoch"]) + 1
        self.global_step = int(manifest["global_step"])
        self.history = list(manifest.get("history", []))
        self.best = manifest.get("best")
        self.log = _read_csv(self._path("epochs.csv"))
        self.last_good = self._snapshot()

    def _load_weights(self, model: nn.Module, path: Path) -> None:
        """Strictly load a checkpoint written by this trainer into ``model``."""
        try:
            info = read_checkpoint_metadata(path)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        saved, mine = info["config"], self.model.robustfair_config
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

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> TrainResult:
        cfg = self.cfg
        if self.start_epoch == 1:
            self.last_good = self._snapshot()
        stopped = None
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_acc, lr = self._train_epoch(epoch)
            stats, totals = self._evaluate(epoch)
            row, class_rows = self._rows(epoch, stats, totals, train_loss, train_acc, lr,
                                         time.perf_counter() - t0)
            stopped = self._collapse(row)
            self._close_bar(row)
            if stopped is not None:
                row["note"] = stopped
                self._append_log(row, class_rows)
                break
            self.mitigations.end_epoch(stats)
            new_best = self._update_best(row)
            if new_best:
                row["note"] = f"best ({cfg.keep})"
            self._append_log(row, class_rows)
            self._commit_epoch(epoch, row, new_best)
            self.last_good = self._snapshot()
        return self._finish(epoch, stopped)

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        cfg, dev, info = self.cfg, self.device, self.info
        torch.manual_seed(derive_seed(cfg.seed, epoch, "global"))
        order_gen = torch.Generator(device=dev).manual_seed(derive_seed(cfg.seed, epoch, "order"))
        noise_gen = torch.Generator(device=dev).manual_seed(
            derive_seed(cfg.seed, epoch, "noise", info.rank))
        n = len(self.train_y)
        sample_w = self.mitigations.sample_weights()
        if sample_w is not None:
            order = torch.multinomial(sample_w[self.train_y], n, replacement=True,
                                      generator=order_gen)
        else:
            order = torch.randperm(n, generator=order_gen, device=dev)
        per_class = self._per_class_settings()
        autocast = self._autocast()
        self.model.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        lr = 0.0
        bar = _progress(self.progress, self.batches_per_epoch, f"epoch {epoch}/{cfg.epochs}")
        for step in range(self.batches_per_epoch):
            chunk = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            idx = chunk[info.rank::info.world_size]
            x = to_float(self.train_x[idx])
            if cfg.augment:
                x = augment(x, pad=self.pad, mode=cfg.pad_mode, flip=self.flip,
                            generator=noise_gen)
            x = x.contiguous(memory_format=self.memory_format)
            y = self.train_y[idx]
            lr = lr_at(cfg, self.global_step, total_steps=self.total_steps,
                       steps_per_epoch=self.batches_per_epoch)
            set_lr(self.optimizer, lr)
            batch = self._batch(x, y, per_class, noise_gen, autocast, epoch, step)
            loss, logits = self.objective(self.train_model, batch)
            # DDP averages the ranks' gradients; weighting each rank's mean by its share of the
            # global batch makes that average the gradient of the global batch's mean
            scaled = loss * (len(idx) * info.world_size / len(chunk)) if info.enabled else loss
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                scaled.backward()
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.mitigations.after_step(self.model)
            self.global_step += 1
            loss_sum += loss.detach().float() * len(idx)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == self.batches_per_epoch - 1:
                    bar.set_postfix(self._postfix(float(loss_sum) / max(1, seen),
                                                  float(correct) / max(1, seen)), refresh=False)
        self._bar = bar
        totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=dev)])
        if info.enabled:
            import torch.distributed as dist

            dist.all_reduce(totals)
        return (float(totals[0] / totals[2].clamp_min(1)), float(totals[1] / totals[2].clamp_min(1)),
                lr)

    def _per_class_settings(self) -> dict[str, torch.Tensor | None]:
        """The mitigations' per-class tensors for this epoch (asked once, see the contract)."""
        m = self.mitigations
        if not m:
            return {"weights": None, "eps": None, "beta": None, "offsets": None}
        return {"weights": m.class_weights(), "eps": m.class_eps(), "beta": m.class_beta(),
                "offsets": m.logit_offsets()}

    def _batch(self, x: torch.Tensor, y: torch.Tensor, per_class: dict, generator, autocast,
               epoch: int, step: int) -> Batch:
        cfg = self.cfg
        if per_class["eps"] is not None:
            eps = per_class["eps"][y]
            # the step keeps its ratio to the radius
            alpha = eps * (self.alpha / cfg.eps) if cfg.eps > 0 else torch.full_like(eps, self.alpha)
        else:
            eps = torch.full((len(y),), cfg.eps, device=x.device)
            alpha = torch.full((len(y),), self.alpha, device=x.device)
        return Batch(
            x=x, y=y, eps=eps, alpha=alpha, generator=generator, attack_model=self.attack_model,
            mitigations=self.mitigations,
            weights=per_class["weights"][y] if per_class["weights"] is not None else None,
            beta=per_class["beta"][y] if per_class["beta"] is not None else None,
            target=self.mitigations.attack_target(y) if self.mitigations else None,
            offsets=per_class["offsets"], label_smoothing=cfg.label_smoothing,
            autocast=autocast, epoch=epoch, step=step)

    def _autocast(self) -> Callable[[], contextlib.AbstractContextManager]:
        if self.amp_dtype is None:
            return contextlib.nullcontext
        dev_type, dtype = self.device.type, self.amp_dtype
        return lambda: torch.autocast(device_type=dev_type, dtype=dtype)

    def _close_bar(self, row: dict) -> None:
        """Show the epoch's validation results on its bar, then close it."""
        bar, self._bar = getattr(self, "_bar", None), None
        if bar is not None:
            bar.set_postfix({"loss": f"{row['loss']:.3f}", "val_clean": f"{row['clean_acc']:.1%}",
                             "val_robust": f"{row['robust_acc']:.1%}",
                             "worst": f"{row['worst_class']} "
                                      f"{row['worst_class_robust_acc']:.0%}"}, refresh=False)
            bar.close()

    def _postfix(self, loss: float, acc: float) -> dict[str, str]:
        out = {"loss": f"{loss:.3f}", "train_acc": f"{acc:.1%}"}
        if self.history:
            last = self.history[-1]
            out.update({"val_clean": f"{last['clean_acc']:.1%}",
                        "val_robust": f"{last['robust_acc']:.1%}",
                        "worst": f"{last['worst_class']} {last['worst_class_robust_acc']:.0%}"})
        return out

    # ------------------------------------------------------------------ per-epoch bookkeeping
    def _evaluate(self, epoch: int) -> tuple[EpochStats, tuple[int, int, int]]:
        net = self._eval_net()
        ddp.broadcast_buffers(net, self.info)
        counts = evaluate_classwise(
            net, self.val_x, self.val_y, num_classes=self.num_classes, eps=self.cfg.eps,
            norm=self.cfg.norm, steps=self.cfg.eval_steps, alpha=self.cfg.eval_alpha(),
            batch_size=self.cfg.eval_batch_size, seed=self.cfg.val_seed, rank=self.info.rank,
            world_size=self.info.world_size, memory_format=self.memory_format)
        totals = (int(counts.n.sum()), int(counts.clean.sum()), int(counts.robust.sum()))
        return counts.stats(epoch), totals

    def _rows(self, epoch: int, stats: EpochStats, totals: tuple[int, int, int], loss: float,
              train_acc: float, lr: float, seconds: float) -> tuple[dict, list[dict]]:
        n, clean, robust = totals
        worst = int(torch.argmin(stats.robust_acc))  # first of the tied worst classes
        row = {"epoch": epoch, "scope": "epoch", "class": "", "n": n,
               "clean_acc": clean / max(1, n), "robust_acc": robust / max(1, n),
               "natural_error": 1 - clean / max(1, n), "boundary_error": (clean - robust) / max(1, n),
               "loss": loss, "train_acc": train_acc, "lr": lr, "time_s": round(seconds, 3),
               "worst_class": self.classes[worst],
               "worst_class_robust_acc": float(stats.robust_acc[worst]), "note": ""}
        class_rows = [{"epoch": epoch, "scope": "class", "class": self.classes[c],
                       "n": int(stats.counts[c]), "clean_acc": float(stats.clean_acc[c]),
                       "robust_acc": float(stats.robust_acc[c]),
                       "natural_error": float(stats.natural_error[c]),
                       "boundary_error": float(stats.boundary_error[c])}
                      for c in range(self.num_classes)]
        return row, class_rows

    def _collapse(self, row: dict) -> str | None:
        """fgsm_rs's catastrophic-overfitting guard: the reason to stop, or None."""
        cfg = self.cfg
        if cfg.objective != "fgsm_rs" or not cfg.co_guard or not self.history:
            return None
        prev, cur = self.history[-1]["robust_acc"], row["robust_acc"]
        if prev - cur > cfg.co_drop or (cur <= cfg.co_floor and prev > 2 * cfg.co_floor):
            return (f"catastrophic overfitting at epoch {row['epoch']}: validation PGD accuracy "
                    f"fell from {prev:.1%} to {cur:.1%} (guard: a drop > {cfg.co_drop:.0%} or to "
                    f"<= {cfg.co_floor:.0%}); stopped and kept epoch {row['epoch'] - 1}")
        return None

    def _score(self, row: dict) -> float:
        if self.cfg.keep == "best_avg_worst":
            return row["robust_acc"] + row["worst_class_robust_acc"]
        return row["robust_acc"]

    def _update_best(self, row: dict) -> bool:
        if self.cfg.keep == "last":
            return False
        score = self._score(row)
        if self.best is None or score > self.best["score"]:
            self.best = {"epoch": row["epoch"], "score": score}
            return True
        return False

    def _append_log(self, row: dict, class_rows: list[dict]) -> None:
        self.history.append(row)
        new = pd.DataFrame(class_rows + [row], columns=CSV_COLUMNS)
        self.log = new if self.log.empty else pd.concat([self.log, new], ignore_index=True)

    def _commit_epoch(self, epoch: int, row: dict, new_best: bool) -> None:
        if not self.info.is_main:
            ddp.barrier(self.info)
            return
        meta = self._model_metadata(epoch)
        writers: dict[str, Callable[[Path], None]] = {
            "checkpoint.safetensors": lambda p: save_model(self.model, p, metadata=meta),
            "epochs.csv": lambda p: ckpt.atomic_write_text(p, self.log.to_csv(index=False)),
        }
        if self.ema is not None:
            writers["ema.safetensors"] = lambda p: save_model(self.ema.model, p, metadata=meta)
        if new_best:
            net = self._eval_net()
            writers["best.safetensors"] = lambda p: save_model(
                net, p, metadata=meta, config=self.model.robustfair_config)
        opt_tensors, opt_tree = ckpt.optimizer_state(self.optimizer)
        mit_tensors, mit_tree = ckpt.split_tensors(self.mitigations.state_dict(), "mitigation")
        writers["state.safetensors"] = lambda p: ckpt.save_tensors(p, {**opt_tensors,
                                                                       **mit_tensors})
        manifest = {
            "epoch": epoch, "global_step": self.global_step, "complete": False, "stopped": None,
            "config": self.cfg.to_dict(), "resolved": self.resolved, "keep": self.cfg.keep,
            "best": self.best, "history": self.history, "optimizer": opt_tree,
            "mitigations": mit_tree,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else None,
            "rng": "every epoch's generators derive from (seed, epoch); nothing to store",
        }
        ckpt.commit(self.run_dir, writers, jsonable(manifest))
        ddp.barrier(self.info)

    def _model_metadata(self, epoch: int) -> dict:
        return {"dataset": self.dataset_name, "classes": self.classes, "epoch": epoch,
                "training": self.cfg.to_dict(), "keep": self.cfg.keep}

    # ------------------------------------------------------------------ the end
    def _finish(self, last_epoch: int, stopped: str | None) -> TrainResult:
        cfg = self.cfg
        done = [h for h in self.history if not _is_stop(h)]
        if cfg.keep != "last" and self.best is not None:
            chosen = int(self.best["epoch"])
            weights = ckpt.load_tensors(self._path("best.safetensors"))
        else:
            chosen = int(done[-1]["epoch"]) if done else 0
            weights = self.last_good
        final = build_model(cfg.model, **_build_args(self.model.robustfair_config))
        final.load_state_dict(weights)
        final = final.to(self.device).eval()
        chosen_row = next((h for h in done if h["epoch"] == chosen), None)
        summary = {
            "config": cfg.to_dict(), "resolved": self.resolved, "keep": cfg.keep,
            "keep_rule": _KEEP_TEXT[cfg.keep], "chosen_epoch": chosen,
            "epochs_run": last_epoch, "stopped": stopped,
            "validation_at_chosen_epoch": chosen_row,
            "eval_attack": f"PGD-{cfg.eval_steps} {cfg.norm} eps={cfg.eps:.6g} "
                           f"alpha={cfg.eval_alpha():.6g} on the validation split",
        }
        meta = {**self._model_metadata(chosen), "summary": jsonable(summary)}
        if self.info.is_main:
            writers = {
                "model.safetensors": lambda p: save_model(final, p, metadata=jsonable(meta)),
                "summary.json": lambda p: ckpt.atomic_write_text(
                    p, json.dumps(jsonable(summary), indent=1)),
            }
            if stopped is not None:  # the collapsed epoch's row is logged, not its weights
                writers["epochs.csv"] = lambda p: ckpt.atomic_write_text(
                    p, self.log.to_csv(index=False))
            previous = ckpt.read_manifest(self.run_dir) or {}
            manifest = {**previous, "epoch": last_epoch, "global_step": self.global_step,
                        "config": cfg.to_dict(), "history": self.history, "best": self.best,
                        "complete": True, "stopped": stopped, "chosen_epoch": chosen,
                        "keep": cfg.keep}
            manifest.pop("files", None)
            ckpt.commit(self.run_dir, writers, jsonable(manifest))
        ddp.barrier(self.info)
        final.robustfair_metadata = jsonable(meta)
        return TrainResult(model=final, log=self.log.reset_index(drop=True),
                           out_dir=self.run_dir, paths=self._paths(), keep=cfg.keep,
                           chosen_epoch=chosen, epochs_run=last_epoch, stopped=stopped,
                           already_complete=False, summary=jsonable(summary))

    def _finished_result(self, manifest: dict, *, already_complete: bool) -> TrainResult:
        model = load_model(self._path("model.safetensors"), device=self.device)
        try:
            summary = json.loads(self._path("summary.json").read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{self._path('summary.json')} is corrupt") from None
        return TrainResult(model=model, log=_read_csv(self._path("epochs.csv")),
                           out_dir=self.run_dir, paths=self._paths(), keep=self.cfg.keep,
                           chosen_epoch=int(summary.get("chosen_epoch", manifest["epoch"])),
                           epochs_run=int(manifest["epoch"]), stopped=manifest.get("stopped"),
                           already_complete=already_complete, summary=summary)

    def _paths(self) -> dict[str, Path]:
        return {name: self._path(name) for name in ckpt.RUN_FILES if self._path(name).exists()}


_KEEP_TEXT = {
    "last": "the last epoch's weights",
    "best_avg": "the epoch with the best validation robust accuracy (earliest on ties)",
    "best_avg_worst": "the epoch with the best validation robust accuracy + worst-class robust "
                      "accuracy (earliest on ties)",
}


def _is_stop(row: dict) -> bool:
    return str(row.get("note", "")).startswith("catastrophic overfitting")


def _batches_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Global batches per epoch; a last batch too small to give every rank a point is dropped."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
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


def _build_args(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("name", "kwargs")} | dict(
        config.get("kwargs", {}))


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=CSV_COLUMNS)
    text_columns = ("scope", "class", "worst_class", "note")
    try:  # class names stay text ("0" is not 0); only numeric columns read "" as missing
        return pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=False,
                           na_values={c: [""] for c in CSV_COLUMNS if c not in text_columns})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is corrupt ({' '.join(str(exc).split())})") from None
