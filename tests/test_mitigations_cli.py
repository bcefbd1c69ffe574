"""Mitigations through the trainer and the CLI: bad input is one line and exit 2; stacks of
mitigations train end to end, store their state, and FAWA's average becomes the final model."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from robustfair.cli import main
from robustfair.training import TrainConfig, train

TINY = ["--dataset", "digits", "--model", "small_cnn", "--model-arg", "width=4",
        "--model-arg", "hidden=16", "--epochs", "2", "--steps", "1", "--eval-steps", "1",
        "--batch-size", "256", "--eps", "0.2", "--no-augment", "--no-progress"]


def run_cli(args, capsys):
    code = main(["train", *args])
    return code, capsys.readouterr()


@pytest.mark.parametrize("extra, message", [
    (["--class-weight", "lion=5"], "unknown class 'lion'"),
    (["--class-weight", "3=-1"], "must be >= 0"),
    (["--mitigation", "frl:tau=1.5"], "tau must lie in [0, 1)"),
    (["--mitigation", "frl:tau=-0.1"], "tau must lie in [0, 1)"),
    (["--mitigation", "frl:tau=abc"], "not a number"),
    (["--mitigation", "nosuch"], "unknown mitigation 'nosuch'"),
    (["--mitigation", "ldam:prior=sometimes"], "unknown prior"),
    (["--mitigation", "class_eps:eps=lion:0.1"], "unknown class 'lion'"),
    (["--mitigation", "class_eps:eps=cat:0.1,dog:0.2"], "KEY=VALUE"),
])
def test_bad_mitigation_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    code, out = run_cli(["--out", str(tmp_path / "run"), *TINY, *extra], capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustfair: error:"), out.err
    assert message in lines[0]


def test_cli_trains_a_stack_of_mitigations_and_stores_their_state(tmp_path, capsys):
    out = tmp_path / "run"
    code, _ = run_cli(["--out", str(out), *TINY, "--objective", "pgd_at",
                       "--mitigation", "dafa:lambda=1.0,warmup=0.5",
                       "--mitigation", "ldam:prior=robust_error,s=1",
                       "--mitigation", "targeted_at:p=0.5",
                       "--mitigation", "fat:lambda=0.2"], capsys)
    assert code == 0
    manifest = json.loads((out / "state.json").read_text())
    assert [m["name"] for m in manifest["config"]["mitigations"]] == \
        ["dafa", "ldam", "targeted_at", "fat"]
    state = manifest["mitigations"]
    tensors = load_file(str(out / "state.safetensors"))
    # DAFA measured its similarity in epoch 1 and fixed weights that average about 1
    weights = tensors[state["0.dafa"]["weights"]["__tensor__"]]
    assert weights.shape == (10,) and 0.3 < float(weights.mean()) < 1.7
    # LDAM's robust-error prior followed the validation robust accuracy
    acc = tensors[state["1.ldam"]["prior"]["acc"]["__tensor__"]]
    assert ((acc >= 0.05) & (acc <= 1)).all()
    # targeted_at picked the worst validation class and saved its generator
    assert 0 <= state["2.targeted_at"]["current"] < 10
    assert "generator" in state["2.targeted_at"]


def test_trades_with_cfa_returns_the_fawa_average(tmp_path):
    cfg = TrainConfig(dataset="digits", model="small_cnn",
                      model_kwargs={"width": 4, "hidden": 16}, objective="trades", eps=0.2,
                      epochs=2, steps=1, eval_steps=1, batch_size=256, augment=False,
                      mitigations=[{"name": "cfa", "threshold": 0.0}, {"name": "focal"},
                                   {"name": "fat"}])
    result = train(cfg, tmp_path / "run", progress=False)
    manifest = json.loads((tmp_path / "run" / "state.json").read_text())
    cfa = manifest["mitigations"]["0.cfa"]
    assert cfa["accepted_epochs"] == 2 and cfa["calibrated"]
    tensors = load_file(str(tmp_path / "run" / "state.safetensors"))
    average = {k: tensors[v["__tensor__"]] for k, v in cfa["average"].items()}
    trained = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))
    final = result.model.state_dict()
    name = "1.classifier.2.weight"
    assert torch.allclose(final[name].cpu(), average[name])
    assert not torch.allclose(final[name].cpu(), trained[name])  # not the trained weights
