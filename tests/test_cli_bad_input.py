"""What users type on the command line: a bad number, radius, YAML file or device is one clear
line and exit 2, never a traceback, a hang or a memory blow-up, and nothing is created."""
from __future__ import annotations

import math

import pytest
import torch

from robustfair._parse import check_eps
from robustfair.errors import ConfigError, RobustfairError
from robustfair.study.spec import parse_spec
from robustfair.training import TrainConfig

from limited import assert_one_line_error, cli, run_limited

SPEC = "grid: {{seed: [0]}}\nfixed: {{dataset: digits, model: small_cnn, eps: {eps}}}\n"


# ---------------------------------------------------------------- numbers
PARSED = {
    "1e99999999/1": "out of range",        # Fraction would build a 100-million-digit number
    "1/1e-99999999": "out of range",
    "1e308/1e-308": "not a finite number",  # float() of the exact quotient overflows
    "1e99999999": "not a finite number",
    "9" * 500 + "/1": "not a number",
    "8/255": "0.03137254901960784",
}


def test_eps_parsing_neither_hangs_nor_overflows():
    # in a child: a regression would hang inside one C call that no signal interrupts
    proc = run_limited("from robustfair._parse import parse_number\n"
                       "from robustfair.errors import ConfigError\n", f"""
for text in {list(PARSED)!r}:
    try:
        print(repr(parse_number(text, what="--eps")))
    except ConfigError as exc:
        print(exc)
""", headroom_mb=256, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(PARSED)
    for line, (text, message) in zip(lines, PARSED.items()):
        assert message in line, (text, line)


def test_audit_train_and_study_refuse_an_overflowing_eps_in_one_line(tmp_path, capsys):
    code, err = cli(["audit", "--checkpoint", tmp_path / "m.safetensors", "--dataset", "digits",
                     "--eps", "1e308/1e-308", "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, "not a finite number")
    code, err = cli(["train", "--out", tmp_path / "t", "--eps", "1e308/1e-308"], capsys)
    assert_one_line_error(code, err, "not a finite number")
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(eps="1e308/1e-308"))
    code, err = cli(["study", "run", spec, "--out", tmp_path / "s", "--dry-run"], capsys)
    assert_one_line_error(code, err, "not a finite number")
    assert not any(tmp_path.glob("[ats]"))  # nothing was created


def test_one_eps_rule_for_audit_train_and_study(tmp_path, capsys):
    rule = "an L-inf --eps above 1 is meaningless"
    code, err = cli(["audit", "--checkpoint", tmp_path / "m.safetensors", "--dataset", "digits",
                     "--eps", "5", "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, rule)
    with pytest.raises(ConfigError, match="L-inf eps above 1 is meaningless"):
        TrainConfig.from_dict({"eps": 5})
    with pytest.raises(ConfigError, match="L-inf eps above 1 is meaningless"):
        from robustfair.study.grid import expand
        expand(parse_spec(SPEC.format(eps=5)))
    # the same radius under L2 is fine for both
    assert check_eps(5.0, "l2") == 5.0 and TrainConfig.from_dict({"eps": 5, "norm": "l2"}).eps == 5
    with pytest.raises(ConfigError, match="finite"):
        check_eps(math.inf, "l2")


# ---------------------------------------------------------------- YAML
BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
               for a, b in zip("abcdefgh", "bcdefghi"))
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB  # 9^9 values when expanded, 520 bytes


def test_yaml_alias_bombs_are_refused_with_bounded_memory(tmp_path):
    assert len(BOMB) < 600
    spec = tmp_path / "spec.yaml"  # the spec reader walks every node before it checks keys
    spec.write_text("grid: {seed: [0]}\nfixed: {dataset: digits}\n" + BOMB)
    config = tmp_path / "train.yaml"  # the run's identity (JSON of the config) expands it
    config.write_text("model_kwargs:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()))
    mitigation = tmp_path / "mitigation.yaml"  # a mitigation's options are copied as JSON
    mitigation.write_text("mitigations: [{name: class_weight, "
                          + BOMB.replace("\n", ", ") + "weights: *i}]\n")
    proc = run_limited("from robustfair.cli import main\nimport robustfair.training\n"
                       "import robustfair.study.grid\n", f"""
print(main(["study", "run", {str(spec)!r}, "--out", {str(tmp_path / "s")!r}, "--dry-run"]))
print(main(["train", "--config", {str(config)!r}, "--out", {str(tmp_path / "t")!r}]))
print(main(["train", "--config", {str(mitigation)!r}, "--out", {str(tmp_path / "m")!r}]))
""", headroom_mb=512, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "2", "2"], proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all("expands to more than" in e for e in errors), proc.stderr


@pytest.mark.parametrize("content, message", [
    (b"1: 2\n", "names must be text, got 1"),
    (b"model_kwargs: {1: 2}\n", "model_kwargs key names must be text"),
    (b"epochs: 3\n# caf\xe9 in latin-1\n", "is not UTF-8 text"),
    (b"mitigations: [{name: class_weight, weights: !!set {a}}]\n", "is not allowed"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, content, message):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    code, err = cli(["train", "--config", config, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["mps", "meta", "cuda:7"])
def test_an_unavailable_device_is_one_line(tmp_path, capsys, device):
    if device == "mps" and torch.backends.mps.is_available():  # pragma: no cover - a Mac
        pytest.skip("this machine has MPS")
    if device.startswith("cuda") and torch.cuda.device_count() > 7:  # pragma: no cover
        pytest.skip("this machine has 8 GPUs")
    code, err = cli(["train", "--out", tmp_path / "o", "--dataset", "digits", "--epochs", "1",
                     "--device", device], capsys)
    assert_one_line_error(code, err, device)
    assert not (tmp_path / "o").exists()
    with pytest.raises(RobustfairError):
        from robustfair._device import resolve_device
        resolve_device(device)
