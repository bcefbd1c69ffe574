"""``train(config, out, dataset=Dataset)``: a data set in hand trains like a registered one, the
run records its name and SHA-256, the registry is never touched, and a run resumes only on
the data it was trained on (and then exactly as if never interrupted)."""
import json

import pandas as pd
import pytest
import torch

from robustfair.data import Dataset, Split, list_datasets, load_dataset
from robustfair.errors import ConfigError
from robustfair.training import TrainConfig, train
from robustfair.training import checkpoint as ckpt
from robustfair.training.mitigations import Mitigation, register_mitigation

CFG = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "objective": "standard", "eps": 0,
       "augment": False, "batch_size": 32, "val_fraction": 0.2,
       "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "device": "cpu"}


def toy(flip_label: int | None = None) -> Dataset:
    """Bright vs dark 4x4 images (fresh tensors each call); optionally one label flipped."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127).long()
    if flip_label is not None:
        y[flip_label] = 1 - y[flip_label]
    return Dataset("toy", Split(x, y), Split(x[:40], y[:40]), ["dark", "bright"])


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_dataset_object_trains_is_recorded_and_leaves_the_registry_alone(tmp_path):
    registered = list_datasets()
    out = tmp_path / "run"
    result = train(TrainConfig.from_dict({**CFG, "epochs": 2}), out, dataset=toy(),
                   progress=False)
    assert result.epochs_run == 2 and not result.already_complete
    assert list(result.epoch_log.epoch) == [1, 2]
    assert list_datasets() == registered  # nothing was registered, not even for a while

    # the record: the object's name in the config, its name and digest beside it, everywhere
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    manifest = ckpt.read_manifest(out)
    assert config["config"]["dataset"] == "toy"
    data = config["data"]
    assert data["name"] == "toy" and data["train_points"] == 400 and len(data["sha256"]) == 64
    assert manifest["data"] == data and summary["data"] == data
    assert result.model.robustfair_metadata["dataset"] == "toy"
    assert result.model.robustfair_metadata["classes"] == ["dark", "bright"]

    # the same data in new tensors is the same run; one flipped label is other data
    again = train(TrainConfig.from_dict({**CFG, "epochs": 2}), out, dataset=toy(),
                  progress=False)
    assert again.already_complete and _weights_equal(again.model, result.model)
    with pytest.raises(ConfigError, match=r"trained on other data \('toy'") as err:
        train(TrainConfig.from_dict({**CFG, "epochs": 2}), out, dataset=toy(flip_label=7),
              progress=False)
    assert "\n" not in str(err.value) and "--force" in str(err.value)
    forced = train(TrainConfig.from_dict({**CFG, "epochs": 1}), out, dataset=toy(flip_label=7),
                   force=True, progress=False)
    assert forced.epochs_run == 1
    assert ckpt.read_manifest(out)["data"]["sha256"] != data["sha256"]


CRASH = {"epoch": None}


@register_mitigation("_test_crash_after")
class CrashAfter(Mitigation):
    """Ends the run (as a kill would) after an epoch has been evaluated, before its commit."""

    def end_epoch(self, stats):
        if CRASH["epoch"] == stats.epoch:
            raise RuntimeError("simulated crash")


def test_resume_refuses_other_data_and_on_the_same_data_ends_like_an_uninterrupted_run(
        tmp_path, monkeypatch):
    cfg = TrainConfig.from_dict({**CFG, "epochs": 3, "mitigations": ["_test_crash_after"]})
    whole = train(cfg, tmp_path / "whole", dataset=toy(), progress=False)

    cut = tmp_path / "cut"
    monkeypatch.setitem(CRASH, "epoch", 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, cut, dataset=toy(), progress=False)
    monkeypatch.setitem(CRASH, "epoch", None)
    before = {p.name: p.read_bytes() for p in cut.iterdir()}
    assert ckpt.read_manifest(cut)["epoch"] == 1

    with pytest.raises(ConfigError, match="trained on other data") as err:
        train(cfg, cut, dataset=toy(flip_label=0), progress=False)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in cut.iterdir()} == before  # nothing touched

    resumed = train(cfg, cut, dataset=toy(), progress=False)
    assert resumed.epochs_run == 3 and _weights_equal(resumed.model, whole.model)
    logs = [pd.read_csv(run / "epochs.csv").drop(columns="time_s") for run in (cut, tmp_path / "whole")]
    pd.testing.assert_frame_equal(*logs)


def test_a_run_by_name_continues_with_the_same_data_as_an_object(tmp_path):
    """A registered data set and the same arrays in hand are one run; changed arrays are not."""
    cfg = TrainConfig.from_dict({**CFG, "dataset": "digits", "epochs": 1, "batch_size": 256})
    out = tmp_path / "run"
    by_name = train(cfg, out, progress=False)
    digits = load_dataset("digits")
    assert ckpt.read_manifest(out)["data"]["name"] == "digits"
    in_hand = train(cfg, out, dataset=digits, progress=False)
    assert in_hand.already_complete and _weights_equal(in_hand.model, by_name.model)
    y = digits.train.y.clone()
    y[0] = (y[0] + 1) % 10
    changed = Dataset("digits", Split(digits.train.x, y), digits.test, list(digits.classes))
    with pytest.raises(ConfigError, match="trained on other data"):
        train(cfg, out, dataset=changed, progress=False)

    # a run stored before runs recorded their data is taken on trust
    manifest = json.loads((out / ckpt.MANIFEST).read_text())
    del manifest["data"]
    (out / ckpt.MANIFEST).write_text(json.dumps(manifest))
    assert train(cfg, out, dataset=digits, progress=False).already_complete


def test_bad_dataset_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="must be a robustfair.data.Dataset, got str"):
        train(CFG, tmp_path / "a", dataset="digits", progress=False)
    with pytest.raises(ConfigError, match="a loader's options"):
        train({**CFG, "dataset_options": {"spread": 0.3}}, tmp_path / "b", dataset=toy(),
              progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
