"""The README's "your own model" example, run as written (a fast attack in place of the default
AutoAttack): its model file and its two commands."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import torch

from robustfair.cli import main
from robustfair.metrics import ClassReport

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """The shell commands of a block, continuation lines joined."""
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_own_model_example_runs(tmp_path, monkeypatch, capsys):
    source = next(b for b in _blocks("python") if b.startswith("# my_net.py"))
    block = next(b for b in _blocks("bash") if "my_net.py:build" in b)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_net.py").write_text(source)
    namespace: dict = {}
    exec(compile(source, "my_net.py", "exec"), namespace)  # the user's file, as the README shows it
    torch.manual_seed(0)
    torch.save(namespace["build"](10, 3).state_dict(), "net.pt")
    rng = np.random.default_rng(0)
    np.savez("test.npz", x=rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), y=np.arange(30) % 10)

    commands = _commands(block)
    assert [c[:2] for c in commands] == [["robustfair", "audit"], ["robustfair", "card"]]
    for command in commands:
        assert "--attack" not in command  # so the default (AutoAttack) would run; here a fast
        # attack stands in for it, to keep the test quick (AutoAttack has its own tests)
        assert main(command[1:] + ["--attack", "apgd-ce", "--steps", "5"]) == 0, capsys.readouterr().err
    report = ClassReport.from_json(tmp_path / "runs" / "mine" / "report.json")
    assert len(report.predictions) == 30 and report.meta["normalize"]["spec"] == "cifar10"
    assert (tmp_path / "runs" / "mine-card" / "card.html").is_file()
    assert (tmp_path / "runs" / "mine-card" / "card.png").is_file()


def test_readme_timm_and_robustbench_commands_parse():
    """Their options all exist here; test_ecosystem.py runs each of them (timm, RobustBench)."""
    from robustfair.cli import build_parser

    blocks = [b for b in _blocks("bash") if "timm:" in b or "rb.py:" in b or "robustbench" in b]
    # the commands that load a model (the leaderboard preset command has its own test in
    # tests/test_readme_leaderboard.py)
    commands = [c for b in blocks for c in _commands(b) if c[0] == "robustfair" and c[1] != "leaderboard"]
    assert len(commands) == 5
    for command in commands:
        args = build_parser().parse_args(command[1:])  # exits 2 on an unknown option
        assert args.model.startswith(("timm:", "rb.py:", "robustbench")) and args.out.startswith("runs/")
