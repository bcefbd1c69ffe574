"""Hardening of what robustfair reads and writes as a whole (issue 16, items 4, 11, 12, 21,
23b): a checkpoint's header is checked before any model is built, multi-file outputs are one
unit, a study folder keeps its own study, and an unreachable Ray cluster fails at once."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from robustfair.data import load_dataset
from robustfair.explain.report import Explanation
from robustfair.models import build_model, save_model
from robustfair.study.grid import expand
from robustfair.study.spec import parse_spec
from robustfair.study.store import StudyStore

from digits_model import train_small_cnn
from limited import assert_one_line_error, cli, cli_all, run_limited


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ds = load_dataset("digits")
    net = train_small_cnn(ds, epochs=1)
    path = tmp_path_factory.mktemp("ckpt") / "digits.safetensors"
    return save_model(net, path, metadata={"dataset": "digits", "classes": ds.classes})


# ---------------------------------------------------------------------------------- item 4
def _lying_checkpoint(path, hidden):
    """A few hundred bytes: a tiny MLP's weights under a header whose config is a huge MLP."""
    tiny = build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[2])
    header = json.loads(__import__("safetensors").safe_open(
        str(save_model(tiny, path)), framework="pt").metadata()["robustfair"])
    header["config"]["kwargs"] = {"hidden": hidden}
    tensors = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    save_file(tensors, str(path), metadata={"robustfair": json.dumps(header)})
    return path


def test_4_a_small_checkpoint_describing_a_huge_model_costs_nothing(tmp_path):
    big = _lying_checkpoint(tmp_path / "big.safetensors", [30000, 30000])      # ~3.6 GB
    huge = _lying_checkpoint(tmp_path / "huge.safetensors", [1000000, 1000000])  # ~4 TB
    assert big.stat().st_size < 2000
    proc = run_limited("from robustfair.models import load_model\nfrom robustfair.cli import main\n"
                       "from robustfair.errors import ModelError\n", f"""
for path in ({str(big)!r}, {str(huge)!r}):
    try:
        load_model(path, device="cpu")
    except ModelError as exc:
        print("refused:", exc)
print(main(["audit", "--checkpoint", {str(big)!r}, "--dataset", "digits",
            "--out", {str(tmp_path / "o")!r}]))
""", headroom_mb=512)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused:") and "do not match the 'mlp' model" in lines[0]
    assert lines[1].startswith("refused:") and "more than this machine's" in lines[1]
    assert lines[2] == "2" and not (tmp_path / "o").exists()
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "do not match the 'mlp' model" in errors[0], proc.stderr


# ---------------------------------------------------------------------------------- item 12
# superseded: a kill at every publication step is tested in test_outputs_kill_safe.py (the
# old result now survives whole, where before only a mix of two results was ruled out)


# ---------------------------------------------------------------------------------- item 23b
def test_23_explain_with_a_tiny_limit_writes_strict_json(checkpoint, tmp_path, capsys):
    out = tmp_path / "explain"
    code, stdout, err = cli_all(["explain", "--checkpoint", checkpoint, "--dataset", "digits",
                                 "--limit", "5", "--steps", "2", "--margin-steps", "2",
                                 "--n-perm", "10", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err

    def refuse(constant):
        raise AssertionError(f"{constant} in explain.json")

    data = json.loads((out / "explain.json").read_text(), parse_constant=refuse)
    assert data["settings"]["n"] == 5
    nan = Explanation.to_json(SimpleNamespace(to_dict=lambda: {"a": float("nan"), "b": [
        torch.tensor(float("inf")).numpy().item(), 1.5]}))
    assert json.loads(nan, parse_constant=refuse) == {"a": None, "b": [None, 1.5]}


# ---------------------------------------------------------------------------------- item 11
SPEC = "name: {name}\ngrid: {{seed: [{seeds}]}}\nfixed: {{dataset: digits, eps: 0.1}}\n"


def test_11_a_different_spec_is_refused_in_an_existing_study_folder(tmp_path, capsys):
    root = tmp_path / "study"
    spec = parse_spec(SPEC.format(name="first", seeds="0, 1"))
    StudyStore(root).prepare(spec.text, spec.name, expand(spec))
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    other = tmp_path / "other.yaml"
    for text, why in ((SPEC.format(name="first", seeds="5"), "2 of its 2 runs are not in this spec"),
                      (SPEC.format(name="second", seeds="0, 1"), "this spec is named 'second'")):
        other.write_text(text)
        code, err = cli(["study", "run", other, "--out", root, "--no-progress"], capsys)
        assert_one_line_error(code, err, why)
        assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == before
    # the same study with more runs orphans nothing: allowed
    more = parse_spec(SPEC.format(name="first", seeds="0, 1, 2"))
    StudyStore(root).prepare(more.text, more.name, expand(more))
    assert len(StudyStore(root).read_index()["runs"]) == 3


# ---------------------------------------------------------------------------------- item 21
def test_21_an_unreachable_ray_address_fails_at_once(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="ray", seeds="0"))
    proc = run_limited("from robustfair.cli import main\n", f"""
print(main(["study", "run", {str(spec)!r}, "--out", {str(tmp_path / "out")!r},
            "--executor", "ray", "--address", "127.0.0.1:1", "--no-progress"]))
""", headroom_mb=4096, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2"
    assert proc.stderr.strip().startswith("robustfair: error: cannot reach Ray at 127.0.0.1:1")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
