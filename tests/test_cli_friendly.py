"""What a new user meets first: ``train --help`` lists the choices and defaults, options that
would do nothing are errors, bars stay out of logs, a useless run says so."""
from __future__ import annotations

import argparse
import inspect
import io
import re

import pytest

from robustfair.cli import main
from robustfair.cli._checks import progress_said
from robustfair.cli.train import chance_level_warning, lost_class_warning
from robustfair.data import list_datasets
from robustfair.errors import ConfigError
from robustfair.models import list_models
from robustfair.training import TrainConfig
from robustfair.training.mitigations import list_mitigations, mitigation_options

TINY = ["--dataset", "digits", "--model", "small_cnn", "--model-arg", "width=4",
        "--model-arg", "hidden=16", "--epochs", "1", "--eval-steps", "1", "--batch-size", "256",
        "--eps", "0.2", "--no-augment"]


def train_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_train_help_lists_every_mitigation_with_its_options_and_defaults(capsys):
    text = train_help(capsys)
    section = text[text.index("mitigations (--mitigation"):]
    for name in list_mitigations():
        summary, options = mitigation_options(name)
        block = section[section.index(f"  {name}: ") + 2:]
        block = re.split(r"\n  (?=\S)", block)[0]  # up to the next mitigation
        assert summary.split()[0] in block
        for key, default in options.items():
            if default is None:
                assert f"{key}=(not set)" in block, (name, key)
            elif isinstance(default, float):
                assert f"{key}={default:.4g}" in block, (name, key)
            elif default is not inspect.Parameter.empty:
                assert f"{key}={default}" in block, (name, key)
    assert "tau=0.05" in section and "gamma=2" in section  # frl's and focal's defaults


def test_train_help_lists_choices_and_training_defaults(capsys):
    text = " ".join(train_help(capsys).split())  # argparse wraps lines
    for name in ("standard", "pgd_at", "trades", "fgsm_rs", *list_models(), *list_datasets()):
        assert name in text
    defaults = TrainConfig()
    assert f"optimiser, one of: sgd, adam, adamw (default: {defaults.optimizer})" in text
    assert f"e.g. 0.1 or 2e-3 (default: {defaults.lr:g})" in text
    assert f"--epochs N training epochs (default: {defaults.epochs})" in text
    assert "--augment, --no-augment random crops and flips (default: on)" in text
    assert "(default: None)" not in text


@pytest.mark.parametrize("extra, message", [
    (["--mitigation", "class_weight"], "class_weight needs weights"),
    (["--objective", "standard", "--mitigation", "class_eps:adaptive=true"],
     "objective 'standard' has no training attack"),
])
def test_mitigations_that_would_do_nothing_are_one_line_errors(tmp_path, capsys, extra, message):
    code = main(["train", "--out", str(tmp_path / "run"), *TINY, "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("robustfair: error:"), err
    assert message in err[0]
    assert not (tmp_path / "run").exists()


def test_class_eps_with_standard_is_refused_by_the_config_itself():
    with pytest.raises(ConfigError, match="no training attack"):
        TrainConfig(objective="standard", mitigations=[{"name": "class_eps", "adaptive": True}])
    TrainConfig(objective="pgd_at", mitigations=[{"name": "class_eps", "adaptive": True}])


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_said_on_a_terminal_or_not_unless_no_progress(monkeypatch, tty):
    # off a terminal progress is plain lines (robustfair._progress), so it stays on
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    assert progress_said(argparse.Namespace(progress=None)) is True
    assert progress_said(argparse.Namespace(progress=True)) is True
    assert progress_said(argparse.Namespace(progress=False)) is False


def test_chance_level_warning_threshold():
    assert chance_level_warning(0.10, 10) and chance_level_warning(0.15, 10)
    assert chance_level_warning(0.16, 10) is None
    assert chance_level_warning(0.55, 2) and chance_level_warning(0.56, 2) is None
    assert chance_level_warning(0.015, 100) and chance_level_warning(0.02, 100) is None


def test_a_run_at_chance_level_warns_in_one_line_and_draws_no_bars_into_a_log(tmp_path, capsys):
    # lr 1e-6 leaves the initial weights as they are: the model guesses
    code = main(["train", "--out", str(tmp_path / "run"), *TINY, "--objective", "standard",
                 "--lr", "1e-6", "--seed", "1"])  # no progress flag; capsys is not a terminal
    captured = capsys.readouterr()
    assert code == 0
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "chance level for 10 classes" in warnings[0], captured.err
    assert "it/s" not in captured.err and "\r" not in captured.err  # no tqdm bar


def test_a_run_that_loses_one_class_warns_in_one_line(tmp_path, capsys):
    # class 8 weighted 0 is never learned; the other nine are, so no chance-level warning
    code = main(["train", "--out", str(tmp_path / "run"), *TINY, "--epochs", "3", "--batch-size",
                 "64", "--objective", "standard", "--optimizer", "adam", "--lr", "0.01",
                 "--mitigation", "class_weight:weights=8=0", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 0
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "of class 8: 0.0%" in warnings[0], captured.err


def test_lost_class_warning_needs_some_classes_to_have_learned():
    import pandas as pd

    assert "class b: 40.0%" in lost_class_warning(pd.Series([0.9, 0.4], index=["a", "b"]))
    assert lost_class_warning(pd.Series([0.05, 0.02], index=["a", "b"])) is None  # all lost
    assert lost_class_warning(pd.Series([0.9, 0.95, 0.34], index=list("abc"))) is None
    assert "class c: 33.0%" in lost_class_warning(pd.Series([0.9, 0.95, 0.33], index=list("abc")))


def test_an_interrupted_train_says_that_rerunning_resumes(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("robustfair.training.train", interrupted, raising=False)
    code = main(["train", "--out", str(tmp_path / "run"), *TINY, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1
    assert err[0] == ("robustfair: interrupted; rerun the same command to resume after the last "
                      "complete epoch")
