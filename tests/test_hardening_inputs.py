"""Hardening of what users type (issue 16, items 6, 7, 8, 16, 17, 20, 22, 23a, 24): each case
is one clear line (exit 2 from the CLI), never a traceback, a hang or a memory blow-up."""
from __future__ import annotations

import math

import pytest
import torch

from robustfair._parse import check_eps
from robustfair.attacks import build_attack
from robustfair.auditing import audit
from robustfair.errors import AttackError, ConfigError, ModelError, RobustfairError
from robustfair.models import build_model
from robustfair.study.spec import parse_spec
from robustfair.training import TrainConfig

from limited import assert_one_line_error, cli, run_limited

SPEC = "grid: {{seed: [0]}}\nfixed: {{dataset: digits, model: small_cnn, eps: {eps}}}\n"


# ---------------------------------------------------------------------------------- item 8
PARSED = {
    "1e99999999/1": "out of range",        # Fraction would build a 100-million-digit number
    "1/1e-99999999": "out of range",
    "1e308/1e-308": "not a finite number",  # float() of the exact quotient overflows
    "1e99999999": "not a finite number",
    "9" * 500 + "/1": "not a number",
    "8/255": "0.03137254901960784",
}


def test_8_eps_parsing_neither_hangs_nor_overflows():
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


def test_8_audit_train_and_study_refuse_an_overflowing_eps_in_one_line(tmp_path, capsys):
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


# ---------------------------------------------------------------------------------- item 24
def test_24_one_eps_rule_for_audit_train_and_study(tmp_path, capsys):
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


# ---------------------------------------------------------------------------------- item 6
BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
               for a, b in zip("abcdefgh", "bcdefghi"))
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB  # 9^9 values when expanded, 520 bytes


def test_6_yaml_alias_bombs_are_refused_with_bounded_memory(tmp_path):
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


# ---------------------------------------------------------------------------------- item 17
@pytest.mark.parametrize("value", ["!!python/name:os.system x", "!custom 3", "!!binary ~~~",
                                   "!!timestamp 2024-13-99", "!!python/object/apply:os.system [ls]"])
def test_17_spec_tags_are_one_line(tmp_path, capsys, value):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"grid: {{seed: [0]}}\nfixed: {{dataset: digits}}\ndescription: {value}\n")
    code, err = cli(["study", "run", spec, "--out", tmp_path / "out", "--dry-run"], capsys)
    assert_one_line_error(code, err, "is not allowed")
    assert f"{spec}:3:" in err and not (tmp_path / "out").exists()


def test_17_unquoted_dates_stay_text():
    spec = parse_spec("grid: {seed: [0]}\nfixed: {dataset: digits, eps: 0.1}\n"
                      "description: 2024-01-01")
    assert spec.description == "2024-01-01"


# ---------------------------------------------------------------------------------- item 16
@pytest.mark.parametrize("content, message", [
    (b"1: 2\n", "names must be text, got 1"),
    (b"model_kwargs: {1: 2}\n", "model_kwargs key names must be text"),
    (b"epochs: 3\n# caf\xe9 in latin-1\n", "is not UTF-8 text"),
    (b"mitigations: [{name: class_weight, weights: !!set {a}}]\n", "is not allowed"),
])
def test_16_bad_config_files_are_one_line(tmp_path, capsys, content, message):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    code, err = cli(["train", "--config", config, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- item 7
def test_7_a_huge_grid_is_refused_before_it_is_expanded(tmp_path):
    values = ", ".join(str(i) for i in range(100))
    spec = tmp_path / "big.yaml"
    spec.write_text(f"grid: {{seed: [{values}], val_seed: [{values}], eval_steps: "
                    f"[{', '.join(str(i + 1) for i in range(100))}]}}\nfixed: {{dataset: digits}}\n")
    proc = run_limited("from robustfair.cli import main\nimport robustfair.study.grid\n", f"""
print(main(["study", "run", {str(spec)!r}, "--out", {str(tmp_path / "s")!r}, "--dry-run"]))
""", headroom_mb=512, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2"
    assert "100x100x100 points, more than 10000 runs" in proc.stderr


# ---------------------------------------------------------------------------------- item 20
def test_20_a_model_beyond_memory_is_one_line(tmp_path, capsys):
    with pytest.raises(ModelError, match="more than this machine's"):
        build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=100_000_000)
    code, err = cli(["train", "--out", tmp_path / "o", "--dataset", "digits", "--model",
                     "small_cnn", "--model-arg", "width=100000000", "--epochs", "1"], capsys)
    assert_one_line_error(code, err, "more than this machine's")


# ---------------------------------------------------------------------------------- item 22
@pytest.fixture(scope="module")
def grey_model():
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=4,
                       hidden=8).eval()


def test_22_colour_images_into_a_grey_model_are_one_line(grey_model):
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    with pytest.raises(ModelError, match="takes 1-channel images, got 3-channel"):
        build_attack("pgd", eps=0.1, steps=2).perturb(grey_model, x, y)
    with pytest.raises(ModelError, match="takes 1-channel images, got 3-channel"):
        audit(grey_model, x, y, attacks=[build_attack("pgd", eps=0.1, steps=2)], progress=False)


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "fgsm"])
def test_22_an_infinite_eps_is_refused_not_nan(name):
    with pytest.raises(AttackError, match="finite"):
        build_attack(name, eps=float("inf"), norm="l2")
    with pytest.raises(AttackError, match="finite"):
        build_attack(name, eps=torch.tensor([0.1, float("inf")]), norm="l2")


# ---------------------------------------------------------------------------------- item 23a
@pytest.mark.parametrize("device", ["mps", "meta", "cuda:7"])
def test_23_an_unavailable_device_is_one_line(tmp_path, capsys, device):
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
