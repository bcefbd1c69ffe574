"""The built-in synthetic/bundled data sets (digits, gaussian) and the registry's errors."""
import numpy as np
import pytest
import torch

import robustfair
from robustfair.data import list_datasets, load_dataset
from robustfair.errors import DataError

BUILTIN = ["cifar10", "cifar100", "digits", "fashion_mnist", "gaussian", "image_folder", "mnist",
           "stl10", "svhn", "tiny_imagenet"]


def test_importing_the_package_registers_every_loader():
    assert set(BUILTIN) <= set(list_datasets())


def test_unknown_dataset_name_is_a_one_line_error():
    with pytest.raises(DataError, match="unknown dataset 'imagenet-9000'") as err:
        load_dataset("imagenet-9000")
    assert "\n" not in str(err.value) and "cifar10" in str(err.value)
    assert isinstance(err.value, robustfair.RobustfairError)


def test_unknown_option_names_the_loaders_options():
    with pytest.raises(DataError, match=r"no option\(s\) colour.*num_classes"):
        load_dataset("gaussian", colour=True)


def test_digits_is_the_sklearn_data_scaled_and_split_stratified():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits()
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    assert tuple(ds.train.x.shape[1:]) == (1, 8, 8)
    assert len(ds.train) + len(ds.test) == 1797
    # same images and labels as sklearn's, each exactly once, values round(v * 255 / 16)
    expected = np.floor(ref.images * 255 / 16 + 0.5).astype(np.uint8)
    ours = sorted(
        x.numpy().tobytes() + bytes([int(y)])
        for split in (ds.train, ds.test) for x, y in zip(split.x, split.y)
    )
    theirs = sorted(im.tobytes() + bytes([int(t)]) for im, t in zip(expected, ref.target))
    assert ours == theirs
    assert {int(v) for v in ds.train.x.unique()} <= {round(v * 255 / 16 + 1e-9) for v in range(17)}
    assert int(ds.train.x.max()) == 255
    # stratified: every class gives round(30%) of its images to the test split
    total = np.bincount(ref.target, minlength=10)
    test_counts = np.bincount(ds.test.y.numpy(), minlength=10)
    assert test_counts.tolist() == [int(n * 0.3 + 0.5) for n in total]


def test_digits_is_deterministic_and_returns_fresh_tensors():
    a = load_dataset("digits")
    a.train.x.zero_()  # a caller scribbling on its copy must not change the next load
    b, c = load_dataset("digits"), load_dataset("digits")
    assert int(b.train.x.max()) == 255
    assert torch.equal(b.train.x, c.train.x) and torch.equal(b.test.y, c.test.y)


def _per_class_std(split, k):
    """Std of each class's pixels around that class's own per-pixel mean (in 0..255 units)."""
    x = split.x.double()
    return torch.stack([(x[split.y == c] - x[split.y == c].mean(0)).std() for c in range(k)])


def test_gaussian_spread_sets_each_class_difficulty():
    spread = [0.01] * 5 + [0.5] * 5
    ds = load_dataset("gaussian", spread=spread, n_train_per_class=200, n_test_per_class=50)
    assert ds.num_classes == 10 and tuple(ds.train.x.shape) == (2000, 1, 8, 8)
    assert torch.equal(torch.bincount(ds.train.y), torch.full((10,), 200))
    std = _per_class_std(ds.train, 10)
    # tight classes: never clipped (means lie in [0.25, 0.75]); noise 0.01*255 plus rounding
    expected_tight = (2.55**2 + 1 / 12) ** 0.5
    assert torch.allclose(std[:5], torch.full((5,), expected_tight, dtype=torch.float64),
                          atol=0.15)
    assert (std[5:] > 50).all()  # diffuse classes spread over much of 0..255
    # the class means lie in the middle of the range, whatever the spread
    means = torch.stack([ds.train.x[ds.train.y == c].double().mean() for c in range(5)])
    assert ((means > 0.25 * 255) & (means < 0.75 * 255)).all()


def test_gaussian_is_deterministic_given_seed_and_validates_options():
    opts = dict(num_classes=3, n_train_per_class=5, n_test_per_class=4, image_size=4,
                channels=3)
    a = load_dataset("gaussian", seed=1, **opts)
    b = load_dataset("gaussian", seed=1, **opts)
    c = load_dataset("gaussian", seed=2, **opts)
    assert tuple(a.train.x.shape) == (15, 3, 4, 4) and tuple(a.test.x.shape) == (12, 3, 4, 4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, c.train.x)
    with pytest.raises(DataError, match="one per class"):
        load_dataset("gaussian", num_classes=3, spread=[0.1, 0.2])
    with pytest.raises(DataError, match=">= 0"):
        load_dataset("gaussian", num_classes=2, spread=[0.1, -1])
    with pytest.raises(DataError, match="num_classes"):
        load_dataset("gaussian", num_classes=0)
