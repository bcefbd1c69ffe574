"""``robustfair audit`` without ``--attack`` runs AutoAttack, the reliable evaluation."""
from __future__ import annotations

import pytest

from robustfair.cli import main
from robustfair.data import load_dataset
from robustfair.metrics import ClassReport
from robustfair.models import save_model

from digits_model import train_small_cnn


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ds = load_dataset("digits")
    net = train_small_cnn(ds, epochs=3)
    path = tmp_path_factory.mktemp("ckpt") / "digits.safetensors"
    return save_model(net, path, metadata={"dataset": "digits", "classes": ds.classes})


def _audit(checkpoint, out, *extra):
    # eps 0.3 breaks every point of this standard model early on, which keeps the full
    # AutoAttack budget (recorded in the settings) cheap to run here
    return main(["audit", "--checkpoint", str(checkpoint), "--dataset", "digits", "--limit", "40",
                 "--eps", "0.3", "--out", str(out), *extra])


def test_the_default_attack_is_autoattack_standard(checkpoint, tmp_path, capsys):
    assert _audit(checkpoint, tmp_path / "a") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    report = ClassReport.from_json(tmp_path / "a" / "report.json")
    (settings,) = report.attacks
    assert settings["attack"] == "autoattack" and settings["version"] == "standard"
    assert [p["attack"] for p in settings["parts"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert settings["steps"] == 100 and settings["n_queries"] == 5000
    assert "Sanity flags" in out and "autoattack / square" in out
    assert "autoattack:apgd-ce" in out  # which part broke how many points, per class
    assert report.overall["robust_acc"] == 0
    assert list(report.broken_by().columns)[:4] == [
        "autoattack:apgd-ce", "autoattack:apgd-t", "autoattack:fab-t", "autoattack:square"]


def test_aa_version_and_targeted_default(checkpoint, tmp_path, capsys):
    assert _audit(checkpoint, tmp_path / "r", "--aa-version", "plus", "--steps", "5") == 0
    (settings,) = ClassReport.from_json(tmp_path / "r" / "report.json").attacks
    assert settings["version"] == "plus" and settings["steps"] == 5
    # AutoAttack is untargeted: a targeted audit defaults to targeted APGD-T
    assert _audit(checkpoint, tmp_path / "t", "--targeted-to", "3", "--steps", "5") == 0
    (settings,) = ClassReport.from_json(tmp_path / "t" / "report.json").attacks
    assert settings["attack"] == "apgd-t" and settings["targeted"] is True
    capsys.readouterr()
