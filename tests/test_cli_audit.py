"""``robustfair audit`` end to end on the digits with a model trained and saved in the test."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from robustfair.cli import main
from robustfair.data import load_dataset
from robustfair.metrics import ClassReport
from robustfair.models import build_model, save_model

from digits_model import train_small_cnn


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A SmallCNN trained for a few epochs on the digits, and an untrained 5-class one."""
    ds = load_dataset("digits")
    net = train_small_cnn(ds, epochs=3)
    root = tmp_path_factory.mktemp("ckpt")
    good = save_model(net, root / "digits.safetensors", metadata={"dataset": "digits", "classes": ds.classes})
    five = build_model("small_cnn", num_classes=5, in_channels=1, image_size=8, width=8, hidden=32)
    wrong = save_model(five, root / "five.safetensors")
    corrupt = root / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not a safetensors file")
    return {"good": good, "five": wrong, "corrupt": corrupt}


def _args(checkpoint, out, *extra):
    return ["audit", "--checkpoint", str(checkpoint), "--dataset", "digits", "--limit", "120",
            "--out", str(out), *extra]


def test_cli_audit_end_to_end(checkpoints, tmp_path, capsys):
    out = tmp_path / "run" / "audit"
    rc = main(_args(checkpoints["good"], out, "--attack", "pgd,fgsm", "--eps", "32/255", "--steps", "5",
                    "--batch-size", "50"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # the visible files (the stored version and its pointer are hidden)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["by_class.csv", "confusion.csv", "report.json", "report.md"]

    report = ClassReport.from_json(out / "report.json")
    lines = captured.out.splitlines()
    for name in report.classes:  # the table has a row for every class
        assert any(line.split()[:1] == [name] for line in lines), name
    worst = report.worst_class()[0]
    marked = [line for line in lines if line.endswith("<- worst")]
    assert len(marked) == 1 and marked[0].split()[0] == worst
    assert "32/255" in captured.out and "eps=0.12549" in captured.out and "steps=5" in captured.out
    assert "worst_deviation" in captured.out  # the discrepancy measures

    assert report.attack_names == ["pgd", "fgsm"] and len(report.predictions) == 120
    assert report.attacks[0]["eps"] == pytest.approx(32 / 255) and report.attacks[0]["steps"] == 5
    assert report.meta["dataset"] == "digits" and report.meta["split"] == "test"
    table = pd.read_csv(out / "by_class.csv", dtype={"class": str}).set_index("class")
    assert list(table.index) == report.classes and list(table.columns) == list(report.by_class.columns)
    np.testing.assert_allclose(table.to_numpy(dtype=float), report.by_class.to_numpy(dtype=float), equal_nan=True)
    assert f"| {worst} |" in (out / "report.md").read_text()


def test_cli_audit_targeted_runs(checkpoints, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(_args(checkpoints["good"], out, "--attack", "fgsm", "--eps", "0.2", "--targeted-to", "3")) == 0
    text = capsys.readouterr().out
    assert "target=3" in text and "fgsm hit target" in text
    report = ClassReport.from_json(out / "report.json")
    assert report.targeted and (report.predictions["target"] == 3).all()

    out = tmp_path / "all"
    assert main(_args(checkpoints["good"], out, "--attack", "fgsm", "--eps", "0.2", "--targeted-all",
                      "--limit", "20")) == 0
    assert "source \\ target" in capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    assert len(data["target_predictions"]["index"]) == 20 * 9


def test_cli_audit_runs_apgd_t_as_autoattacks_untargeted_attack(checkpoints, tmp_path, capsys):
    out = tmp_path / "aa"
    assert main(_args(checkpoints["good"], out, "--attack", "apgd-ce,apgd-t", "--eps", "0.2",
                      "--steps", "5", "--limit", "40")) == 0
    report = ClassReport.from_json(out / "report.json")
    assert not report.targeted
    (apgd_t,) = [a for a in report.attacks if a["attack"] == "apgd-t"]
    assert apgd_t["targeted"] is False and apgd_t["top_k"] == 9
    assert "top_k=9" in capsys.readouterr().out  # the settings are printed with the result


@pytest.mark.parametrize(
    "change,match",
    [
        (["--eps", "8/0"], "--eps '8/0' is not a number"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--attack", "nope"], "unknown attack 'nope'"),
        (["--checkpoint", "MISSING"], "checkpoint not found"),
        (["--checkpoint", "CORRUPT"], "corrupt.safetensors"),
        (["--checkpoint", "FIVE"], "has 5 classes but dataset 'digits' has 10"),
        (["--targeted-to", "eleven"], "unknown class 'eleven'"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--no-optimize", "--layout", "contiguous"], "--no-optimize runs no view"),
    ],
)
def test_cli_audit_errors_exit_2_with_one_line_and_no_output(checkpoints, tmp_path, capsys, change, match):
    out = tmp_path / "never"
    paths = {"MISSING": str(tmp_path / "missing.safetensors"), "CORRUPT": str(checkpoints["corrupt"]),
             "FIVE": str(checkpoints["five"])}
    change = [paths.get(c, c) for c in change]
    rc = main(_args(checkpoints["good"], out, "--attack", "fgsm", "--eps", "0.1", *change))
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustfair: error:") and match in err[0], err
    assert not out.exists()


def test_cli_steps_default_is_pgd20_and_apgd_keeps_its_100(checkpoints, tmp_path, capsys):
    out = tmp_path / "defaults"
    rc = main(_args(checkpoints["good"], out, "--attack", "pgd,apgd-ce", "--eps", "8/255",
                    "--limit", "20"))
    assert rc == 0, capsys.readouterr().err
    settings = {a["attack"]: a for a in ClassReport.from_json(out / "report.json").attacks}
    assert settings["pgd"]["steps"] == 20
    assert settings["apgd-ce"]["steps"] == 100


def test_cli_threads_option_applies_for_the_command_only(checkpoints, tmp_path, capsys, monkeypatch):
    import torch

    import robustfair.auditing as auditing

    seen = []
    real_audit = auditing.audit

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_audit(*args, **kwargs)

    monkeypatch.setattr(auditing, "audit", spy)
    torch.set_num_threads(2)  # conftest sets one thread again before the next test
    rc = main(_args(checkpoints["good"], tmp_path / "t", "--attack", "fgsm", "--limit", "20",
                    "--threads", "1"))
    assert rc == 0, capsys.readouterr().err
    assert seen == [1] and torch.get_num_threads() == 2
    assert main(_args(checkpoints["good"], tmp_path / "u", "--threads", "0")) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "u").exists()


def test_cli_speed_options_reach_the_report(checkpoints, tmp_path, capsys):
    out = tmp_path / "fast"
    assert main(_args(checkpoints["good"], out, "--attack", "fgsm", "--limit", "30",
                      "--batch-size", "auto")) == 0
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["batch_size"] == 30
    assert "batchnorm folded into 4 convolutions" in meta["model_optimizations"]
    out = tmp_path / "as_is"
    assert main(_args(checkpoints["good"], out, "--attack", "fgsm", "--limit", "30",
                      "--no-optimize", "--amp")) == 0
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["model_optimizations"] == [] and meta["amp"] is True
    for layout in ("channels_last", "contiguous"):  # a pinned layout is the one recorded
        out = tmp_path / layout
        assert main(_args(checkpoints["good"], out, "--attack", "fgsm", "--limit", "30",
                          "--layout", layout)) == 0
        meta = json.loads((out / "report.json").read_text())["meta"]
        assert ("channels_last" in meta["model_optimizations"]) == (layout == "channels_last")


def test_cli_batch_size_that_is_neither_a_number_nor_auto(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_args(checkpoints["good"], tmp_path / "never", "--batch-size", "big"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected an integer or 'auto', got 'big'" in err[0]
    assert not (tmp_path / "never").exists()
