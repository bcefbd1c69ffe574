"""Experiment trackers on the callback protocol: TensorBoard and MLflow.

``robustfair train ... --logger tensorboard`` writes event files under the run folder's
``tensorboard/``; ``--logger mlflow[:URI]`` logs to an MLflow tracking store (default: the
``MLFLOW_TRACKING_URI`` variable, else ``file:./mlruns``). Both record, per epoch (the step is
the epoch number): the validation clean and robust accuracy overall and per class, the worst
class (its robust accuracy and index), the training loss and accuracy, and the learning rate.
MLflow also gets the config as parameters and, at the end, ``summary.json``, ``epochs.csv`` and
``config.json`` (and, in a study, the run's audit ``report.json``) as artifacts.

Each is an optional extra (``pip install 'robustfair[tensorboard]'`` / ``'robustfair[mlflow]'``),
imported only when a logger is built; a missing one is a one-line ConfigError naming the extra.

A resumed run continues the same curves with each epoch once: TensorBoard's writer starts with
a purge at the resumed epoch (its reader drops what a killed epoch had written from there on),
and MLflow logs an epoch only once it is committed, into the run id kept in the run folder
(``mlflow_run.json``), after logging any committed epoch that it had missed.

>>> parse_logger("mlflow:file:/tmp/mlruns")
('mlflow', 'file:/tmp/mlruns')
>>> parse_logger("tensorboard")
('tensorboard', None)
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..errors import ConfigError
from .callbacks import Callback, Checkpoint, EpochEnd, RunStart

__all__ = ["LOGGERS", "MLflowLogger", "TensorBoardLogger", "build_logger", "epoch_metrics",
           "parse_logger", "resolved_logger"]

LOGGERS = ("tensorboard", "mlflow")
MLFLOW_RUN_FILE = "mlflow_run.json"


def parse_logger(text: str) -> tuple[str, str | None]:
    """``"tensorboard"`` / ``"mlflow"`` / ``"mlflow:URI"`` -> ``(name, uri or None)``."""
    name, _, uri = str(text).strip().partition(":")
    name = name.strip().lower()
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger {text!r}; choose from: tensorboard, mlflow[:URI]")
    if name == "tensorboard" and uri:
        raise ConfigError("--logger tensorboard takes no URI: its files go under the run "
                          "folder's tensorboard/")
    return name, (uri.strip() or None)


def resolved_logger(text: str) -> str:
    """``--logger text`` with MLflow's default or relative URI made absolute, for other
    processes (a study's workers) to log to the same store; checks the package too."""
    _require(parse_logger(text)[0])
    logger = build_logger(text)
    return f"mlflow:{logger.uri}" if isinstance(logger, MLflowLogger) else "tensorboard"


def build_logger(text: str, *, run_name: str | None = None, tags: dict | None = None,
                 experiment: str = "robustfair") -> Callback:
    """The callback for ``--logger text``; ``tags`` (e.g. a study run's axes) label the run."""
    name, uri = parse_logger(text)
    _require(name)
    if name == "tensorboard":
        return TensorBoardLogger(tags=tags)
    return MLflowLogger(uri, experiment=experiment, run_name=run_name, tags=tags)


def _require(name: str) -> None:
    """Import the tracker's package now, so a missing one is one line before any training."""
    try:
        if name == "tensorboard":
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        else:
            import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"--logger {name} needs the {name} package: "
                          f"pip install 'robustfair[{name}]'") from None


def epoch_metrics(row: dict, class_rows: list[dict], classes: list[str]) -> dict[str, float]:
    """An epoch's numbers by tracker name: overall, per class, worst class, loss and lr.

    >>> m = epoch_metrics({"clean_acc": 0.9, "robust_acc": 0.5, "worst_class": "b",
    ...                    "worst_class_robust_acc": 0.2, "loss": 1.0, "train_acc": 0.8, "lr": 0.1},
    ...                   [{"class": "a", "clean_acc": 1.0, "robust_acc": 0.8},
    ...                    {"class": "b", "clean_acc": 0.8, "robust_acc": 0.2}], ["a", "b"])
    >>> m["val/robust_acc"], m["robust_acc/b"], m["val/worst_class_index"]
    (0.5, 0.2, 1.0)
    """
    out = {"val/clean_acc": row["clean_acc"], "val/robust_acc": row["robust_acc"],
           "val/worst_class_robust_acc": row["worst_class_robust_acc"],
           "train/loss": row["loss"], "train/acc": row["train_acc"], "lr": row["lr"]}
    worst = str(row.get("worst_class"))
    if worst in classes:
        out["val/worst_class_index"] = float(classes.index(worst))
    for c in class_rows:
        name = _tag(str(c["class"]))
        out[f"clean_acc/{name}"] = c["clean_acc"]
        out[f"robust_acc/{name}"] = c["robust_acc"]
    return {k: float(v) for k, v in out.items()
            if v is not None and v == v and math.isfinite(float(v))}


def _tag(name: str) -> str:
    """A class name as a metric name part (MLflow allows letters, digits, ``_-. /``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


# ------------------------------------------------------------------------------ TensorBoard
class TensorBoardLogger(Callback):
    """Event files under ``<run folder>/tensorboard/``, one scalar curve per metric."""

    def __init__(self, tags: dict | None = None) -> None:
        self.tags = dict(tags or {})
        self.writer = None
        self.classes: list[str] = []

    def on_run_start(self, start: RunStart) -> None:
        if not start.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.classes = start.classes
        # the purge makes the reader drop what an interrupted epoch wrote from here on
        self.writer = SummaryWriter(str(Path(start.out_dir) / "tensorboard"),
                                    purge_step=start.start_epoch)
        if start.start_epoch == 1:
            self.writer.add_text("config", _markdown(start.config.to_dict()), 0)
            if self.tags:
                self.writer.add_text("tags", _markdown(self.tags), 0)

    def on_epoch_end(self, end: EpochEnd) -> None:
        if self.writer is None:
            return
        for name, value in epoch_metrics(end.row, end.class_rows, self.classes).items():
            self.writer.add_scalar(name, value, end.epoch)
        self.writer.add_text("val/worst_class", str(end.row.get("worst_class")), end.epoch)
        self.writer.flush()  # before the epoch's commit: a committed epoch is on disk

    def on_run_end(self, result) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _markdown(mapping: dict) -> str:
    return "\n".join(f"- {k}: `{json.dumps(v)}`" for k, v in mapping.items())


# ------------------------------------------------------------------------------ MLflow
class MLflowLogger(Callback):
    """One MLflow run per training run: params, per-epoch metrics, artifacts at the end."""

    def __init__(self, uri: str | None = None, *, experiment: str = "robustfair",
                 run_name: str | None = None, tags: dict | None = None) -> None:
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "file:./mlruns"
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store behind this switch; asking for file: is opting in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            path = uri[len("file:"):]
            uri = "file:" + str(Path(path).resolve()) if not path.startswith("//") else uri
        elif "://" not in uri:  # a plain folder
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = "file:" + str(Path(uri).resolve())
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.client = None
        self.run_id: str | None = None
        self.out_dir: Path | None = None
        self.classes: list[str] = []
        self.logged: set[int] = set()
        self.pending: dict[int, dict[str, float]] = {}

    def on_run_start(self, start: RunStart) -> None:
        if not start.is_main:
            return
        from mlflow.tracking import MlflowClient

        self.client, self.out_dir, self.classes = MlflowClient(self.uri), Path(start.out_dir), \
            start.classes
        self.run_id = self._resumed_run() if start.start_epoch > 1 else None
        if self.run_id is None:
            self._new_run(start)
        else:
            self.logged = {int(m.step) for m in
                           self.client.get_metric_history(self.run_id, "val/robust_acc")}
        self._backfill(start.start_epoch)

    def _resumed_run(self) -> str | None:
        """The MLflow run this run folder logged to before, if it is in this store."""
        try:
            stored = json.loads((self.out_dir / MLFLOW_RUN_FILE).read_text())
            if stored.get("uri") != self.uri:
                return None
            return self.client.get_run(stored["run_id"]).info.run_id
        except Exception:  # noqa: BLE001 - no usable record: a new MLflow run
            return None

    def _new_run(self, start: RunStart) -> None:
        from mlflow.entities import Param

        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            self.experiment)
        tags = {**self.tags, "run_folder": str(self.out_dir)}
        run = self.client.create_run(exp_id, run_name=self.run_name or self.out_dir.name,
                                     tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, _param(v)) for k, v in start.config.to_dict().items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        atomic_write_text(self.out_dir / MLFLOW_RUN_FILE,
                          json.dumps({"uri": self.uri, "run_id": self.run_id}))

    def _backfill(self, start_epoch: int) -> None:
        """Log the committed epochs this MLflow run lacks (killed between commit and log)."""
        from .epoch_log import read_log

        frame = read_log(self.out_dir / "epochs.csv")
        for epoch in sorted(set(int(e) for e in frame["epoch"])):
            if epoch >= start_epoch or epoch in self.logged:
                continue
            rows = frame[frame["epoch"] == epoch]
            row = rows[rows["scope"] == "epoch"].iloc[0].to_dict()
            class_rows = rows[rows["scope"] == "class"].to_dict("records")
            self._log(epoch, epoch_metrics(row, class_rows, self.classes))

    def on_epoch_end(self, end: EpochEnd) -> None:
        if self.client is not None:
            self.pending[end.epoch] = epoch_metrics(end.row, end.class_rows, self.classes)

    def on_checkpoint(self, saved: Checkpoint) -> None:
        if self.client is not None and saved.epoch in self.pending:
            self._log(saved.epoch, self.pending.pop(saved.epoch))

    def _log(self, epoch: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        if epoch in self.logged:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, epoch) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])
        self.logged.add(epoch)

    def on_run_end(self, result) -> None:
        if self.client is None:
            return
        for epoch in sorted(self.pending):  # an epoch a callback stopped: logged, not kept
            self._log(epoch, self.pending.pop(epoch))
        for name in ("summary.json", "epochs.csv", "config.json"):
            if (self.out_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.out_dir / name))
        self.client.set_tag(self.run_id, "chosen_epoch", str(result.chosen_epoch))
        self.client.set_terminated(self.run_id, "FINISHED")

    def log_file(self, path: str | Path) -> None:
        """Attach one more file (e.g. a study run's audit report) to this MLflow run."""
        if self.client is not None and self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path))


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's longest parameter value
