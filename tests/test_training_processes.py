"""Training as separate processes: a run killed with SIGKILL mid-epoch and resumed ends with the
same weights as one never interrupted; ``torchrun`` with 2 CPU processes (DDP over Gloo)
matches the single-process run."""
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from robustfair.training import TrainConfig, train
from robustfair.training import checkpoint as ckpt


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COMMON = ["--dataset", "digits", "--model", "small_cnn", "--model-arg", "width=8",
          "--model-arg", "hidden=32", "--eps", "0.1", "--steps", "2", "--eval-steps", "2",
          "--device", "cpu", "--no-progress"]


def _cli(out, *extra):
    return [sys.executable, "-m", "robustfair", "train", *COMMON, *extra, "--out", str(out)]


def _epochs_logged(path) -> int:
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for line in lines if ",epoch," in line)


@pytest.mark.slow  # a reference run, a killed run and its resume, each a process
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    extra = ["--objective", "pgd_at", "--epochs", "4", "--batch-size", "32", "--optimizer", "sgd",
             "--lr", "0.05", "--schedule", "onecycle", "--ema", "0.9", "--class-weight", "3=2"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    done = subprocess.run(_cli(ref, *extra), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(_cli(cut, *extra), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while _epochs_logged(cut / "epochs.csv") < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "epoch 2 never finished"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # epoch 3 has just begun
    finally:
        proc.wait(timeout=60)
    manifest = ckpt.read_manifest(cut)
    assert not manifest["complete"] and manifest["epoch"] in (2, 3)

    resumed = subprocess.run(_cli(cut, *extra), env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {cut} after epoch {manifest['epoch']}" in resumed.stderr

    for name in ("model.safetensors", "checkpoint.safetensors", "ema.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(cut / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    log_a = pd.read_csv(ref / "epochs.csv").drop(columns="time_s")
    log_b = pd.read_csv(cut / "epochs.csv").drop(columns="time_s")
    pd.testing.assert_frame_equal(log_a, log_b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two training processes under torchrun
def test_torchrun_two_cpu_processes_match_the_single_process_run(tmp_path):
    # no BatchNorm (its statistics are per rank) and no augmentation, so the two runs see the
    # same global batches and take the same steps up to float summation order
    extra = ["--objective", "standard", "--epochs", "2", "--batch-size", "64", "--optimizer",
             "adam", "--lr", "0.01", "--no-augment", "--model-arg", "batch_norm=false"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "robustfair", "train", *COMMON, *extra, "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 2 epoch(s)" in done.stdout  # printed once, by rank 0

    cfg = TrainConfig(dataset="digits", model="small_cnn",
                      model_kwargs={"width": 8, "hidden": 32, "batch_norm": False},
                      eps=0.1, steps=2, eval_steps=2, objective="standard", epochs=2,
                      batch_size=64, optimizer="adam", lr=0.01, augment=False, device="cpu")
    single = train(cfg, tmp_path / "single", progress=False)
    ddp = pd.read_csv(tmp_path / "ddp" / "epochs.csv")
    one = single.log
    assert list(ddp.columns) == list(one.columns) and len(ddp) == len(one)
    assert ckpt.read_manifest(tmp_path / "ddp")["resolved"]["world_size"] == 2
    epochs_ddp, epochs_one = ddp[ddp.scope == "epoch"], one[one.scope == "epoch"]
    assert epochs_ddp["loss"].to_numpy() == pytest.approx(epochs_one["loss"].to_numpy(), rel=1e-3)
    assert epochs_ddp["train_acc"].to_numpy() == pytest.approx(
        epochs_one["train_acc"].to_numpy(), abs=0.01)
    cls_ddp, cls_one = ddp[ddp.scope == "class"], one[one.scope == "class"]
    # one validation point of a class is 1/12 or 1/13 of it
    assert cls_ddp["clean_acc"].to_numpy() == pytest.approx(cls_one["clean_acc"].to_numpy(), abs=0.09)
    assert abs(cls_ddp["clean_acc"].mean() - cls_one["clean_acc"].mean()) < 0.02
    # the evaluation's random starts are split across ranks differently: a looser match
    assert abs(epochs_ddp["robust_acc"].iloc[-1] - epochs_one["robust_acc"].iloc[-1]) < 0.05
