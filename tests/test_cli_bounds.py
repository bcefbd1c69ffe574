"""Numbers and conditions the CLI refuses or reports in one line: absurd seeds and attack
budgets (with the bound stated), a MemoryError anywhere, Python warnings before an error; and a
long audit says its worst-case work at the start."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import robustfair.cli.audit as audit_cli

from limited import SRC, assert_one_line_error, cli, cli_all

NET = "from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"


@pytest.fixture
def base(tmp_path):
    """An audit that works as it stands (a small linear model on digits)."""
    (tmp_path / "net.py").write_text(NET)
    return ["audit", "--model", f"{tmp_path / 'net.py'}:build", "--dataset", "digits",
            "--limit", "4", "--eps", "0.1"]


@pytest.mark.parametrize("seed", [2**70, 2**64])
def test_a_seed_out_of_range_is_one_line_with_the_bound(tmp_path, capsys, base, seed):
    code, err = cli(base + ["--attack", "fgsm", "--seed", seed, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, f"--seed must lie in 0..9223372036854775807 (2**63 - 1), got {seed}")


@pytest.mark.parametrize("flag, attack, value, bound", [
    ("--steps", "pgd", 10**10, 100_000),
    ("--queries", "square", 10**12, 10_000_000),
    ("--restarts", "pgd", 10**9, 10_000),
])
def test_a_budget_that_could_never_finish_is_refused_with_the_bound(tmp_path, capsys, base, flag,
                                                                    attack, value, bound):
    code, err = cli(base + ["--attack", attack, flag, value, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, f"{flag} {value} is beyond the bound of {bound}")
    assert not (tmp_path / "o").exists()


def test_a_memory_error_anywhere_is_one_line_saying_what_was_too_large(tmp_path, capsys, base,
                                                                      monkeypatch):
    def too_large(args):
        raise MemoryError("Unable to allocate 3.27 GiB for an array with shape (2000000001,) "
                          "and data type <U10")

    monkeypatch.setattr(audit_cli, "run_audit", too_large)
    code, err = cli(base + ["--attack", "fgsm", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "out of memory: Unable to allocate 3.27 GiB for an array")


@pytest.mark.slow  # a real robustfair process
def test_python_warnings_add_no_line_before_a_one_line_error(tmp_path):
    model = tmp_path / "warns.py"
    model.write_text(
        "import warnings\nfrom torch import nn\n"
        "warnings.warn('this module is deprecated')\n"
        "def build():\n"
        "    warnings.warn('building an old model', UserWarning)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # 3 classes, digits has 10\n")
    # a real process: pytest would otherwise catch the warnings itself
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-W", "default", "-m", "robustfair", "audit", "--model",
                           f"{model}:build", "--dataset", "digits", "--limit", "4", "--attack",
                           "fgsm", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, "outputs 3 class scores but")


def test_warnings_of_a_run_that_worked_follow_it_one_line_each(tmp_path, capsys):
    model = tmp_path / "warns.py"
    model.write_text(
        "import warnings\nfrom torch import nn\n"
        "def build():\n"
        "    warnings.warn('building an old model\\nsecond line', UserWarning)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    code, err = cli(["audit", "--model", f"{model}:build", "--dataset", "digits", "--limit", "4",
                     "--attack", "fgsm", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "robustfair: warning: UserWarning: building an old model" in err.splitlines()
    assert "second line" not in err


def test_a_long_audit_prints_its_worst_case_work_at_the_start(tmp_path, capsys, monkeypatch):
    from robustfair import _work_estimate

    monkeypatch.setattr(_work_estimate, "SAY_ABOVE_SECONDS", 0.0)  # "long": any length here
    model = tmp_path / "net.py"
    model.write_text(NET)
    code, out, err = cli_all(["audit", "--model", f"{model}:build", "--dataset", "digits",
                              "--limit", "6", "--batch-size", "4", "--attack", "pgd", "--steps",
                              "600", "--eps", "0.1", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    line = next(x for x in err.splitlines() if "model passes" in x)
    assert line.startswith("robustfair audit: at most 1,200 model passes (6 points in 2 batch(es) "
                           "x 600 passes per point); a first pass took"), line
