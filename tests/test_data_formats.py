"""Each on-disk format, written tiny and loaded back: shapes, labels, class names, exact pixels."""

import numpy as np
import pytest
import torch

from robustfair.data import load_dataset
from robustfair.errors import DataError

from test_data_writers import (
    cifar_record, pattern_images, stl10_image_bytes, write_cifar10_binary, write_idx,
    write_pickle,
)


def _mnist_files(folder, gz, rng, n_train=5, n_test=3):
    x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n_train, dtype=np.uint8)
    xt = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yt = rng.integers(0, 10, n_test, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", x, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", y, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", xt, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", yt, gz)
    return x, y, xt, yt


@pytest.mark.parametrize("gz,subfolder", [(False, "mnist"), (True, "mnist/raw"),
                                          (True, "MNIST/raw")])
def test_mnist_idx_plain_and_gzipped(tmp_path, gz, subfolder):
    x, y, xt, yt = _mnist_files(tmp_path / subfolder, gz, np.random.default_rng(0))
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert tuple(ds.train.x.shape) == (5, 1, 28, 28) and tuple(ds.test.x.shape) == (3, 1, 28, 28)
    assert np.array_equal(ds.train.x[:, 0].numpy(), x)
    assert np.array_equal(ds.test.x[:, 0].numpy(), xt)
    assert ds.train.y.tolist() == y.tolist() and ds.test.y.tolist() == yt.tolist()
    assert ds.classes == [str(i) for i in range(10)] and ds.train.y.dtype == torch.int64


def test_fashion_mnist_class_names(tmp_path):
    _mnist_files(tmp_path / "fashion_mnist", True, np.random.default_rng(1))
    ds = load_dataset("fashion_mnist", data_dir=tmp_path, download=False)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert len(ds.classes) == 10


def test_cifar10_binary(tmp_path):
    ref = write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert tuple(ds.train.x.shape) == (10, 3, 32, 32) and tuple(ds.test.x.shape) == (3, 3, 32, 32)
    assert np.array_equal(ds.train.x.numpy(), ref["x"])
    assert np.array_equal(ds.test.x.numpy(), ref["xt"])
    assert ds.train.y.tolist() == ref["y"].tolist() and ds.test.y.tolist() == ref["yt"].tolist()
    assert ds.classes == ref["names"]
    assert ds.info["format"] == "binary"


def _cifar100_binary(folder):
    folder.mkdir(parents=True)
    x, xt = pattern_images(4, 32, 5), pattern_images(2, 32, 9)
    coarse, fine = [3, 19, 0, 7], [42, 99, 0, 13]
    (folder / "train.bin").write_bytes(
        b"".join(cifar_record([coarse[j], fine[j]], x[j]) for j in range(4)))
    (folder / "test.bin").write_bytes(
        b"".join(cifar_record([c, f], xt[j]) for j, (c, f) in enumerate([(1, 55), (2, 66)])))
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    (folder / "coarse_label_names.txt").write_text(
        "\n".join(f"coarse{i}" for i in range(20)) + "\n")
    return x, xt, coarse, fine


def test_cifar100_binary_fine_and_coarse(tmp_path):
    x, xt, coarse, fine = _cifar100_binary(tmp_path / "cifar-100-binary")
    ds = load_dataset("cifar100", data_dir=tmp_path, download=False)
    assert np.array_equal(ds.train.x.numpy(), x) and np.array_equal(ds.test.x.numpy(), xt)
    assert ds.train.y.tolist() == fine and ds.test.y.tolist() == [55, 66]
    assert ds.num_classes == 100 and ds.classes[42] == "fine42"
    ds = load_dataset("cifar100", data_dir=tmp_path, download=False, labels="coarse")
    assert ds.train.y.tolist() == coarse and ds.test.y.tolist() == [1, 2]
    assert ds.num_classes == 20 and ds.classes[19] == "coarse19"
    with pytest.raises(DataError, match="'fine' or 'coarse'"):
        load_dataset("cifar100", data_dir=tmp_path, download=False, labels="both")
    # the 20 super-classes under a name of their own (what configs, studies and audits carry)
    ds = load_dataset("cifar100_coarse", data_dir=tmp_path, download=False)
    assert ds.name == "cifar100_coarse" and ds.info["labels"] == "coarse"
    assert ds.train.y.tolist() == coarse and ds.num_classes == 20
    assert np.array_equal(ds.train.x.numpy(), x)


@pytest.mark.parametrize("protocol,bytes_keys", [(2, True), (4, False), (5, False)])
def test_cifar10_python_release_through_the_safe_unpickler(tmp_path, protocol, bytes_keys):
    folder = tmp_path / "cifar-10-batches-py"
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)  # Python 2 pickles: bytes keys
    xs, ys = [], []
    for b in range(1, 6):
        x = pattern_images(2, 32, offset=10 * b)
        y = [b, (b + 3) % 10]
        write_pickle(folder / f"data_batch_{b}", {k("data"): x.reshape(2, -1), k("labels"): y},
                     protocol)
        xs.append(x)
        ys += y
    xt = pattern_images(1, 32, offset=77)
    write_pickle(folder / "test_batch", {k("data"): xt.reshape(1, -1), k("labels"): [9]}, protocol)
    names = [f"n{i}".encode() if bytes_keys else f"n{i}" for i in range(10)]
    write_pickle(folder / "batches.meta", {k("label_names"): names}, protocol)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.info["format"] == "python"
    assert np.array_equal(ds.train.x.numpy(), np.concatenate(xs))
    assert np.array_equal(ds.test.x.numpy(), xt)
    assert ds.train.y.tolist() == ys and ds.test.y.tolist() == [9]
    assert ds.classes == [f"n{i}" for i in range(10)]


def test_cifar100_python_release_coarse_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    x = pattern_images(3, 32, 1)
    write_pickle(folder / "train", {"data": x.reshape(3, -1), "fine_labels": [5, 6, 7],
                                    "coarse_labels": [0, 1, 19]}, 4)
    write_pickle(folder / "test", {"data": x[:1].reshape(1, -1), "fine_labels": [99],
                                   "coarse_labels": [4]}, 4)
    write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                                   "coarse_label_names": [f"c{i}" for i in range(20)]}, 4)
    ds = load_dataset("cifar100", data_dir=tmp_path, download=False, labels="coarse")
    assert ds.train.y.tolist() == [0, 1, 19] and ds.classes[19] == "c19"
    assert np.array_equal(ds.train.x.numpy(), x)
    ds = load_dataset("cifar100", data_dir=tmp_path, download=False)
    assert ds.test.y.tolist() == [99] and ds.classes[99] == "f99"


class _Malicious:
    """Unpickling this would call open(marker, "w"): a harmless but visible side effect."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    marker = tmp_path / "pwned"
    for b in range(1, 6):
        write_pickle(folder / f"data_batch_{b}",
                     {"data": _Malicious(marker), "labels": [0]}, protocol)
    write_pickle(folder / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "labels": [0]},
                 protocol)
    write_pickle(folder / "batches.meta", {"label_names": [str(i) for i in range(10)]}, protocol)
    with pytest.raises(DataError, match="refusing to unpickle .*open") as err:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "\n" not in str(err.value) and "data_batch_1" in str(err.value)
    assert not marker.exists()
    # the payload is live: plain pickle would have run it
    import pickle

    pickle.loads((folder / "data_batch_1").read_bytes())["data"].close()
    assert marker.exists()


def test_pickled_non_array_object_is_refused(tmp_path):
    from robustfair.data._safe_pickle import load_restricted_pickle

    path = tmp_path / "batch"
    write_pickle(path, {"data": torch.zeros(2)}, 4)  # a torch tensor: any global but numpy's
    with pytest.raises(DataError, match="refusing to unpickle torch"):
        load_restricted_pickle(path)


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    folder = tmp_path / "svhn"
    folder.mkdir()
    X = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    Xt = rng.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8)
    savemat(folder / "train_32x32.mat", {"X": X, "y": y})
    savemat(folder / "test_32x32.mat", {"X": Xt, "y": np.array([[3], [10]], dtype=np.uint8)})
    ds = load_dataset("svhn", data_dir=tmp_path, download=False)
    assert tuple(ds.train.x.shape) == (4, 3, 32, 32) and tuple(ds.test.x.shape) == (2, 3, 32, 32)
    assert ds.train.y.tolist() == [0, 1, 9, 0] and ds.test.y.tolist() == [3, 0]
    for n in range(4):
        for c in range(3):
            assert np.array_equal(ds.train.x[n, c].numpy(), X[:, :, c, n])
    assert ds.classes == [str(i) for i in range(10)]


def _stl10(folder, n_train=2, n_test=1):
    folder.mkdir(parents=True)
    x, xt = pattern_images(n_train, 96, 0), pattern_images(n_test, 96, 200)
    (folder / "train_X.bin").write_bytes(b"".join(stl10_image_bytes(im) for im in x))
    (folder / "test_X.bin").write_bytes(b"".join(stl10_image_bytes(im) for im in xt))
    (folder / "train_y.bin").write_bytes(bytes([1, 10][:n_train]))
    (folder / "test_y.bin").write_bytes(bytes([4]))
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return x, xt, names


def test_stl10_binary_layout(tmp_path):
    x, xt, names = _stl10(tmp_path / "stl10_binary")
    ds = load_dataset("stl10", data_dir=tmp_path, download=False)
    assert tuple(ds.train.x.shape) == (2, 3, 96, 96)
    assert np.array_equal(ds.train.x.numpy(), x) and np.array_equal(ds.test.x.numpy(), xt)
    # the pattern rises by 3 per row and 7 per column: a swapped layout would show 7 per row
    assert int(ds.train.x[0, 0, 1, 0]) - int(ds.train.x[0, 0, 0, 0]) == 3
    assert ds.train.y.tolist() == [0, 9] and ds.test.y.tolist() == [3]
    assert ds.classes == names


def test_stl10_image_size_resizes_with_antialiasing(tmp_path):
    folder = tmp_path / "stl10_binary"
    _stl10(folder)
    # blocky images (constant per 3×3 block): a 3:1 downscale stays close to the blocks
    blocks = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    big = blocks.repeat(3, axis=2).repeat(3, axis=3)
    (folder / "train_X.bin").write_bytes(b"".join(stl10_image_bytes(im) for im in big))
    ds = load_dataset("stl10", data_dir=tmp_path, download=False, image_size=32)
    assert tuple(ds.train.x.shape) == (2, 3, 32, 32) and tuple(ds.test.x.shape) == (1, 3, 32, 32)
    # torch's antialiased bilinear is meant to match Pillow's BILINEAR downscale: compare
    from PIL import Image

    expected = np.stack([
        np.stack([np.asarray(Image.fromarray(big[n, c]).resize((32, 32), Image.BILINEAR))
                  for c in range(3)])
        for n in range(2)
    ])
    diff = np.abs(ds.train.x.numpy().astype(int) - expected.astype(int))
    assert diff.max() <= 1 and ds.info["image_size"] == 32
    assert np.abs(ds.train.x.numpy().astype(int) - blocks.astype(int)).mean() < 40


def _tiny_imagenet(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # listed unsorted; classes come out sorted by wnid
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text(
        "n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tsalamander\n"
        "n03\tbullfrog, Rana catesbeiana\n")
    train = {}
    for w in wnids:
        d = folder / "train" / w / "images"
        d.mkdir(parents=True)
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
        for j in range(2):
            a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            # PNG bytes under the .JPEG name: lossless, so pixels can be compared exactly
            Image.fromarray(a).save(d / f"{w}_{j}.JPEG", format="PNG")
            train[(w, j)] = a
    grey = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "val" / "images" / "val_0.JPEG", format="PNG")
    smooth = np.full((64, 64, 3), (200, 100, 50), dtype=np.uint8)
    Image.fromarray(smooth).save(folder / "val" / "images" / "val_1.JPEG", format="JPEG",
                                 quality=95)
    (folder / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn03\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t2\t3\t4\n")
    return train, grey


def test_tiny_imagenet_folder_and_cache(tmp_path):
    train, grey = _tiny_imagenet(tmp_path)
    ds = load_dataset("tiny_imagenet", data_dir=tmp_path, download=False)
    assert ds.classes == ["goldfish", "salamander", "bullfrog"]
    assert tuple(ds.train.x.shape) == (6, 3, 64, 64) and tuple(ds.test.x.shape) == (2, 3, 64, 64)
    assert ds.train.y.tolist() == [0, 0, 1, 1, 2, 2] and ds.test.y.tolist() == [2, 0]
    assert np.array_equal(ds.train.x[2].numpy(), train[("n02", 0)].transpose(2, 0, 1))
    assert all(np.array_equal(ds.test.x[0, c].numpy(), grey) for c in range(3))  # grey -> RGB
    assert (ds.test.x[1].float().mean((1, 2)) - torch.tensor([200.0, 100, 50])).abs().max() < 3
    cache = tmp_path / "tiny-imagenet-200" / ".robustfair-cache-64.npz"
    assert cache.is_file()
    again = load_dataset("tiny_imagenet", data_dir=tmp_path, download=False)
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)
    small = load_dataset("tiny_imagenet", data_dir=tmp_path, download=False, image_size=32,
                         cache=False)
    assert tuple(small.train.x.shape) == (6, 3, 32, 32)
    assert not (tmp_path / "tiny-imagenet-200" / ".robustfair-cache-32.npz").exists()
