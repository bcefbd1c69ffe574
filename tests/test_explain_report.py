"""explain_model, the feature data sets and the ``robustfair explain`` command, end to end on digits;
its JSON stays strict (no NaN) when a tiny sample leaves statistics undefined."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robustfair as rf
from robustfair.cli import main
from robustfair.data import list_datasets, to_float
from robustfair.explain.feature_datasets import (_derangement, class_accuracy, feature_dataset_study,
                                                 non_robust_dataset, profile_cosine, robust_dataset)
from robustfair.explain.report import Explanation

from digits_model import train_small_cnn
from limited import cli_all


@pytest.fixture(scope="module")
def digits():
    return rf.load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A small MLP trained for a few epochs on digits (well under a second)."""
    torch.manual_seed(0)
    model = rf.build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[32])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = to_float(digits.train.x), digits.train.y
    for _ in range(5):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.robustfair_metadata = {"dataset": "digits", "classes": list(digits.classes)}
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory):
    return rf.save_model(trained, tmp_path_factory.mktemp("ckpt") / "mlp.safetensors")


def test_cli_writes_the_report_figures_and_json(checkpoint, tmp_path, capsys):
    out = tmp_path / "explain"
    code = main(["explain", "--checkpoint", str(checkpoint), "--dataset", "digits", "--eps", "0.1",
                 "--limit", "80", "--steps", "5", "--margin-steps", "5", "--n-perm", "500", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Least robust class" in printed and "Spearman" in printed
    for name in ("explain.md", "explain.json", "similarity.png", "margins.png", "robust_vs_eps.png",
                 "corruption_vs_attack.png"):
        assert (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "explain.json").read_text())
    assert data["settings"]["n"] == 80 and data["dataset"] == "digits"
    # the targeted class defaults to the least robust one
    robust = np.array([np.inf if v is None else v for v in data["audit"]["robust_acc"]])
    assert data["targeted"]["target"] == data["classes"][int(np.argmin(robust))]
    # robust accuracy read off the margins at eps agrees with the audit's (both PGD)
    curve = data["margins"]["curve"]
    assert curve["eps"][0] == 0.0
    clean = np.nanmean([v for v in data["audit"]["clean_acc"]])
    assert 0 < clean <= 1
    md = (out / "explain.md").read_text()
    assert "## Confusion sinks" in md and "![similarity](similarity.png)" in md
    assert not list(tmp_path.glob(".explain.*"))  # no staging directory left behind


def test_cli_rejects_an_unknown_class_with_one_line(checkpoint, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["explain", "--checkpoint", str(checkpoint), "--dataset", "digits", "--class", "12",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "class index 12" in err
    assert not out.exists()
    assert main(["explain", "--checkpoint", str(checkpoint), "--class", "cat", "--out", str(out)]) == 2
    assert "unknown class 'cat'" in capsys.readouterr().err  # --dataset came from the checkpoint


def test_explain_model_agrees_with_its_parts(trained, digits):
    ex = rf_explain(trained, digits)
    by_class = ex.report.by_class
    # the sinks come from the audit's own adversarial predictions
    p = ex.report.predictions
    fooled = (p["clean_pred"] == p["y_true"]) & (p["pgd_pred"] != p["y_true"])
    assert ex.sinks.counts.to_numpy().sum() == int(fooled.sum())
    assert ex.sinks.sinks["fooled"].tolist() == [int((fooled & (p["y_true"] == k)).sum()) for k in range(10)]
    # corruption table and similarity carry the audit's robust accuracy per class
    assert np.allclose(ex.corruptions.robust_acc.to_numpy(), by_class["robust_acc"].to_numpy(), equal_nan=True)
    assert np.allclose(ex.similarity.nearest["robust_acc"].to_numpy(), by_class["robust_acc"].to_numpy(),
                       equal_nan=True)
    text = ex.to_json()
    assert json.loads(text)["schema"] == "robustfair.Explanation"
    with pytest.raises(rf.RobustfairError, match="unknown class"):
        rf_explain(trained, digits, target_class="eleven")


def rf_explain(model, ds, **kw):
    from robustfair.explain import explain_model

    return explain_model(model, ds, eps=0.1, limit=60, attack_steps=3, margin_steps=3, n_perm=200,
                         severities=(1, 5), **kw)


def test_robust_dataset_matches_features_and_non_robust_dataset_is_relabelled(trained, digits):
    x, y = digits.train.x[:24], digits.train.y[:24]
    start = _derangement(24, torch.Generator().manual_seed(0))
    assert (start != torch.arange(24)).all()
    d_r = robust_dataset(trained, x, y, steps=60, step_size=0.5)
    assert d_r.x.dtype == torch.uint8 and d_r.x.shape == x.shape and torch.equal(d_r.y, y)
    assert d_r.info["feature_distance"] < 0.5  # the optimisation closed most of the feature gap
    d_nr = non_robust_dataset(trained, x, y, num_classes=10, eps=0.3, steps=10)
    assert torch.equal(d_nr.y, (y + 1) % 10)
    assert (d_nr.x.float() - x.float()).abs().max() <= 0.3 * 255 + 0.5  # inside the eps-ball (8-bit)
    assert 0 < d_nr.info["attack_success"] <= 1


def test_feature_dataset_study_trains_on_each_set_and_compares_profiles(trained, digits, tmp_path):
    study = feature_dataset_study(trained, trained, digits, eps=0.1, n_images=60, robust_steps=10,
                                  attack_steps=3, test_limit=100, out_dir=tmp_path,
                                  train_config={"epochs": 1, "model": "mlp", "model_kwargs": {"hidden": [16]}})
    profiles = study.profiles
    assert list(profiles.columns) == ["robust_model_clean", "standard_model_clean", "trained_on_robust",
                                      "trained_on_non_robust"]
    direct = class_accuracy(trained, digits.test.x[:100], digits.test.y[:100], 10)
    assert np.allclose(profiles["robust_model_clean"], direct, equal_nan=True)
    key = "trained_on_robust ~ robust_model_clean"
    assert study.similarity[key] == pytest.approx(profile_cosine(profiles["trained_on_robust"], direct),
                                                  nan_ok=True)
    assert (tmp_path / "trained_on_robust" / "model.safetensors").exists()
    assert not [d for d in list_datasets() if d.startswith("explain-")]  # the temporary name is gone
    assert profile_cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert profile_cosine([2.0, 2.0], [1.0, 1.0]) == pytest.approx(1.0)


def test_cli_explains_a_model_spec_with_weights(trained, tmp_path, capsys):
    """``--model FILE.py:factory --weights`` (the audit's model options) instead of a checkpoint."""
    (tmp_path / "net.py").write_text(
        "import robustfair as rf\n\n\ndef build(num_classes, in_channels, image_size):\n"
        "    return rf.build_model('mlp', num_classes=num_classes, in_channels=in_channels,\n"
        "                          image_size=image_size, hidden=[32])\n")
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "explain"
    code = main(["explain", "--model", f"{tmp_path / 'net.py'}:build", "--weights", str(tmp_path / "w.pt"),
                 "--dataset", "digits", "--eps", "0.1", "--limit", "40", "--steps", "3",
                 "--margin-steps", "3", "--n-perm", "200", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "net.py:build + " in capsys.readouterr().out
    data = json.loads((out / "explain.json").read_text())
    assert data["settings"]["n"] == 40 and data["meta"]["weights"] == str(tmp_path / "w.pt")
    # the same model through --checkpoint: the same audit
    ref = tmp_path / "ref"
    ckpt = rf.save_model(trained, tmp_path / "m.safetensors")
    assert main(["explain", "--checkpoint", str(ckpt), "--dataset", "digits", "--eps", "0.1", "--limit", "40",
                 "--steps", "3", "--margin-steps", "3", "--n-perm", "200", "--out", str(ref)]) == 0
    assert json.loads((ref / "explain.json").read_text())["audit"] == data["audit"]
    capsys.readouterr()  # the runs' progress lines
    # --model without --dataset, and --weights with --checkpoint: one line, exit 2
    assert main(["explain", "--model", f"{tmp_path / 'net.py'}:build", "--out", str(out)]) == 2
    assert main(["explain", "--checkpoint", str(ckpt), "--weights", "w.pt", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["robustfair: error: --model needs --dataset (only a robustfair checkpoint records its data set)",
                   "robustfair: error: --weights goes with --model SPEC; a --checkpoint carries its own"]


@pytest.fixture(scope="module")
def cnn_checkpoint(digits, tmp_path_factory):
    """A small CNN after one epoch on digits, saved with its data set."""
    net = train_small_cnn(digits, epochs=1)
    path = tmp_path_factory.mktemp("ckpt") / "digits.safetensors"
    return rf.save_model(net, path, metadata={"dataset": "digits", "classes": digits.classes})


def test_explain_with_a_tiny_limit_writes_strict_json(cnn_checkpoint, tmp_path, capsys):
    out = tmp_path / "explain"
    code, stdout, err = cli_all(["explain", "--checkpoint", cnn_checkpoint, "--dataset", "digits",
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
