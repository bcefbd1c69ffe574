"""The README's leaderboard example, run as written (a fast attack in place of the default
AutoAttack, which has its own tests), and its preset command."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

import robustfair as rf
from robustfair.cli import build_parser, main
from robustfair.models import save_model

from digits_model import train_small_cnn

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.slow  # the README's leaderboard, end to end
def test_readme_leaderboard_example_runs(tmp_path, monkeypatch, capsys):
    spec = next(b for b in _blocks("yaml") if b.startswith("# digits-board.yaml"))
    (command,) = [shlex.split(line.split("#")[0]) for b in _blocks("bash") for line in b.splitlines()
                  if line.startswith("robustfair leaderboard digits-board.yaml")]
    monkeypatch.chdir(tmp_path)
    ds = rf.load_dataset("digits")
    for seed, name in enumerate(("at", "frl")):  # stand-ins for the README's two trained models
        save_model(train_small_cnn(ds, epochs=2, seed=seed), Path("runs", name, "model.safetensors"),
                   metadata={"classes": ds.classes})
    assert "attack: autoattack" in spec
    Path("digits-board.yaml").write_text(spec.replace("attack: autoattack", "attack: {apgd-ce: {steps: 5}}"))
    assert main(command[1:] + ["--threads", "1"]) == 0, capsys.readouterr().err
    table = pd.read_csv("runs/board/leaderboard.csv")
    assert sorted(table["model"]) == ["frl", "pgd-at"] and (table["n_points"] == 200).all()
    assert Path("runs/board/leaderboard.html").is_file()
    assert main(command[1:]) == 0 and "2 already done, 0 audited now" in capsys.readouterr().out


def test_readme_preset_command_parses_and_presets_list(capsys):
    (line,) = [line for b in _blocks("bash") for line in b.splitlines() if "--preset" in line]
    args = build_parser().parse_args(shlex.split(line.replace("[--executor ray]", ""))[1:])
    assert args.preset == "robustbench-cifar10-linf" and args.out == "runs/rb-c10"
    assert main(["leaderboard", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "robustbench-cifar10-linf: 12 models on cifar10" in out and "robustbench-cifar100-linf" in out
