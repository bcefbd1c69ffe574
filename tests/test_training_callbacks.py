"""The training callback protocol and the experiment trackers built on it (TensorBoard, MLflow).

The trackers' files are read back with the trackers' own readers: TensorBoard's
``EventAccumulator`` and an ``MlflowClient`` on a ``file:`` store. Resumption is tested by
killing a run (an exception from a callback) at the two places where a tracker and the run
folder can disagree: after the trackers saw an epoch but before it was committed, and after
the commit but before the trackers heard of it. Either way every epoch is read back once.
"""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch

from robustfair.data import Dataset, Split
from robustfair.training import TrainConfig, train
from robustfair.training.callbacks import Callback

EPOCHS = 4


def toy() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (300, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127).long()  # bright or dark
    return Dataset("toy", Split(x, y), Split(x[:50], y[:50]), ["dark", "bright"])


CFG = TrainConfig(model="mlp", objective="pgd_at", eps=0.1, steps=2, eval_steps=2,
                  epochs=EPOCHS, augment=False, batch_size=50, val_fraction=0.2,
                  val_min_per_class=10, optimizer="adam", lr=0.01, device="cpu")


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_run_start(self, start):
        self.calls.append(("run_start", start.start_epoch, tuple(start.classes)))

    def on_epoch_start(self, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_step_end(self, step):
        self.calls.append(("step", step.step))

    def on_epoch_end(self, end):
        self.calls.append(("epoch_end", end.epoch, [r["class"] for r in end.class_rows],
                           end.row["robust_acc"]))

    def on_checkpoint(self, saved):
        assert (saved.out_dir / "epochs.csv").exists()
        self.calls.append(("checkpoint", saved.epoch))

    def on_run_end(self, result):
        self.calls.append(("run_end", result.epochs_run))


class Kill(Callback):
    """Stops the process (as a kill would) at one point of one epoch."""

    def __init__(self, epoch, where):
        self.epoch, self.where = epoch, where

    def on_epoch_end(self, end):
        if self.where == "epoch_end" and end.epoch == self.epoch:
            raise KeyboardInterrupt

    def on_checkpoint(self, saved):
        if self.where == "checkpoint" and saved.epoch == self.epoch:
            raise KeyboardInterrupt


def test_callbacks_are_called_in_the_documented_order(tmp_path):
    rec = Recorder()
    result = train(CFG.replace(epochs=2), tmp_path / "run", dataset=toy(), progress=False,
                   callbacks=[rec])
    steps = [c for c in rec.calls if c[0] == "step"]
    assert len(steps) == 2 * 5  # 240 training points / batch 50 -> 5 steps an epoch
    calls = [c for c in rec.calls if c[0] != "step"]
    log = result.epoch_log
    assert calls == [
        ("run_start", 1, ("dark", "bright")),
        ("epoch_start", 1), ("epoch_end", 1, ["dark", "bright"], log["robust_acc"][0]),
        ("checkpoint", 1),
        ("epoch_start", 2), ("epoch_end", 2, ["dark", "bright"], log["robust_acc"][1]),
        ("checkpoint", 2),
        ("run_end", 2)]
    again = Recorder()  # a complete run only reports itself: no callback is called
    assert train(CFG.replace(epochs=2), tmp_path / "run", dataset=toy(), progress=False,
                 callbacks=[again]).already_complete
    assert again.calls == []


def _tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


@pytest.mark.parametrize("where", ["epoch_end", "checkpoint"])
def test_trackers_read_back_every_epoch_once_after_an_interrupted_run(tmp_path, where):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from robustfair.training.loggers import build_logger

    uri = f"file:{tmp_path / 'mlruns'}"
    run_dir = tmp_path / "run"

    def trackers():
        return [build_logger("tensorboard"), build_logger(f"mlflow:{uri}", run_name="toy")]

    # epoch_end: the trackers saw epoch 3, the run folder never committed it
    # checkpoint: epoch 2 is committed, the trackers were not told (the kill comes first)
    kill = Kill(3, "epoch_end") if where == "epoch_end" else Kill(2, "checkpoint")
    first = trackers() + [kill] if where == "epoch_end" else [kill] + trackers()
    with pytest.raises(KeyboardInterrupt):
        train(CFG, run_dir, dataset=toy(), progress=False, callbacks=first)
    result = train(CFG, run_dir, dataset=toy(), progress=False, callbacks=trackers())
    assert result.epochs_run == EPOCHS
    frame = pd.read_csv(run_dir / "epochs.csv", dtype={"class": str})
    epochs = frame[frame["scope"] == "epoch"].set_index("epoch")
    classes = frame[frame["scope"] == "class"]

    acc = _tensorboard(run_dir)
    tags = acc.Tags()["scalars"]
    for tag in ("val/clean_acc", "val/robust_acc", "val/worst_class_robust_acc", "lr",
                "train/loss", "robust_acc/dark", "clean_acc/bright"):
        assert tag in tags, tag
    robust = acc.Scalars("val/robust_acc")
    assert [e.step for e in robust] == list(range(1, EPOCHS + 1))  # each epoch once
    assert [e.value for e in robust] == pytest.approx(epochs["robust_acc"].tolist(), abs=1e-6)
    dark = classes[classes["class"] == "dark"]["robust_acc"].tolist()
    assert [e.value for e in acc.Scalars("robust_acc/dark")] == pytest.approx(dark, abs=1e-6)
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx(epochs["lr"].tolist(), rel=1e-5)

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("robustfair").experiment_id])
    history = client.get_metric_history(run.info.run_id, "val/robust_acc")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # each epoch once
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        epochs["robust_acc"].tolist())
    worst = client.get_metric_history(run.info.run_id, "val/worst_class_robust_acc")
    assert len(worst) == EPOCHS
    assert run.data.params["objective"] == "pgd_at" and run.data.params["epochs"] == str(EPOCHS)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "epochs.csv", "config.json"} <= artifacts


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch,
                                                                name):
    from robustfair.cli import main

    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    code = main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--logger", name, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"pip install 'robustfair[{name}]'" in err[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_unknown_logger_is_one_line(tmp_path, capsys):
    from robustfair.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), "--logger", "wandb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown logger 'wandb'" in err[0], err


def test_the_core_imports_no_tracker():
    code = ("import sys, robustfair, robustfair.training, robustfair.training.loggers, "
            "robustfair.study, robustfair.cli; "
            "print(sorted(m for m in ('tensorboard', 'mlflow', 'torch.utils.tensorboard') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_off_a_terminal_training_says_one_line_per_epoch(tmp_path, capsys):
    """stderr captured (not a terminal): a line per finished epoch with its numbers and the
    time left, and no tqdm carriage returns."""
    train(CFG.replace(epochs=1), tmp_path / "run", dataset=toy(), progress=True, force=True)
    first = capsys.readouterr().err
    train(CFG.replace(epochs=2), tmp_path / "run2", dataset=toy(), progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("robustfair train: epoch")]
    assert [line.split(" done")[0] for line in lines] == ["robustfair train: epoch 1/2",
                                                         "robustfair train: epoch 2/2"]
    assert "val_robust" in lines[0] and "1 epoch left" in lines[0] and "\r" not in err
    assert "robustfair train: epoch 1/1 done" in first
    train(CFG.replace(epochs=2), tmp_path / "run2", dataset=toy(), progress=False)  # done: no lines
    assert "robustfair train" not in capsys.readouterr().err
