"""Bring-your-own data: from_tensors and image_folder (also through the registry)."""
import numpy as np
import pytest
import torch
from PIL import Image

from robustfair.data import from_tensors, image_folder, load_dataset
from robustfair.errors import DataError


def test_from_tensors_float_is_scaled_and_split_stratified():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 3, 5, 5, generator=g)
    y = torch.arange(60) % 3
    ds = from_tensors(x, y, ["a", "b", "c"], test_fraction=0.2, seed=1, name="mine")
    assert ds.name == "mine" and ds.classes == ["a", "b", "c"]
    assert len(ds.train) == 48 and len(ds.test) == 12
    assert torch.bincount(ds.test.y).tolist() == [4, 4, 4]
    # every sample lands in exactly one split, with its pixels as round(255 * v)
    expected = (x.double() * 255).round().to(torch.uint8)
    rows = sorted(bytes(a.flatten().tolist()) + bytes([int(b)])
                  for s in (ds.train, ds.test) for a, b in zip(s.x, s.y))
    assert rows == sorted(bytes(a.flatten().tolist()) + bytes([int(b)])
                          for a, b in zip(expected, y))
    again = from_tensors(x, y, ["a", "b", "c"], test_fraction=0.2, seed=1)
    assert torch.equal(again.test.x, ds.test.x)


def test_from_tensors_uint8_numpy_grey_and_explicit_test_split():
    x = np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6)  # N×H×W: one grey channel
    ds = from_tensors(x, np.array([0, 1, 0, 1]), x_test=x[:2], y_test=[1, 1])
    assert tuple(ds.train.x.shape) == (4, 1, 6, 6) and ds.classes == ["0", "1"]
    assert np.array_equal(ds.train.x[:, 0].numpy(), x) and ds.test.y.tolist() == [1, 1]


@pytest.mark.parametrize("x,y,match", [
    (torch.full((4, 1, 2, 2), 1.5), [0, 1, 0, 1], r"\[0, 1\].*1\.5"),
    (torch.zeros(4, 2), [0, 1, 0, 1], "N×C×H×W"),
    (torch.zeros(4, 1, 2, 2, dtype=torch.int32), [0, 1, 0, 1], "uint8"),
    (torch.full((4, 1, 2, 2), float("nan")), [0, 1, 0, 1], "NaN"),
    (torch.zeros(4, 1, 2, 2), [0, 1, 0], "4 images but 3 labels"),
    (torch.zeros(4, 1, 2, 2), [0.0, 1.0, 0.0, 1.0], "integer"),
    (torch.zeros(4, 1, 2, 2), [0, -1, 0, 1], ">= 0"),
])
def test_from_tensors_rejects_bad_input(x, y, match):
    with pytest.raises(DataError, match=match):
        from_tensors(x, y)


def test_from_tensors_class_names_must_cover_labels():
    with pytest.raises(DataError, match="labels go up to 2"):
        from_tensors(torch.zeros(6, 1, 2, 2), [0, 1, 2, 0, 1, 2], ["a", "b"])
    with pytest.raises(DataError, match="test_fraction"):
        from_tensors(torch.zeros(6, 1, 2, 2), [0, 1, 2, 0, 1, 2], test_fraction=1.5)


def _save(path, array, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def test_image_folder_without_split_is_split_stratified(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for cls in ("cat", "dog"):
        for j in range(5):
            a = rng.integers(0, 256, (6, 6), dtype=np.uint8)
            _save(tmp_path / cls / f"{j}.png", a)
            images[a.tobytes()] = cls
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = image_folder(tmp_path, test_fraction=0.4, seed=0)
    assert ds.classes == ["cat", "dog"] and ds.channels == 1
    assert len(ds.train) == 6 and len(ds.test) == 4
    assert torch.bincount(ds.test.y).tolist() == [2, 2]
    for split in (ds.train, ds.test):  # every image with its own folder's label, exact pixels
        for a, label in zip(split.x, split.y):
            assert images[a[0].numpy().tobytes()] == ds.classes[int(label)]


def test_image_folder_train_test_layout_rgb_and_registry(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    _save(tmp_path / "train" / "b" / "x.png", a)
    _save(tmp_path / "train" / "a" / "y.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    _save(tmp_path / "train" / "a" / "sub" / "z.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    _save(tmp_path / "test" / "b" / "t.jpg", np.full((8, 8, 3), 120, np.uint8), fmt="JPEG")
    ds = load_dataset("image_folder", path=tmp_path)
    assert ds.classes == ["a", "b"] and ds.channels == 3  # one colour image: all become RGB
    assert ds.train.y.tolist() == [0, 0, 1] and ds.test.y.tolist() == [1]
    assert np.array_equal(ds.train.x[2].numpy(), a.transpose(2, 0, 1))
    assert (ds.test.x.int() - 120).abs().max() <= 2  # JPEG is lossy, but barely on a flat image
    assert ds.name == tmp_path.name


def test_image_folder_sizes_must_agree_unless_resized(tmp_path):
    _save(tmp_path / "a" / "1.png", np.zeros((8, 8), np.uint8))
    _save(tmp_path / "a" / "2.png", np.zeros((8, 8), np.uint8))
    _save(tmp_path / "b" / "1.png", np.full((16, 12), 200, np.uint8))
    _save(tmp_path / "b" / "2.png", np.full((16, 12), 200, np.uint8))
    with pytest.raises(DataError, match="differ in size.*pass image_size"):
        image_folder(tmp_path)
    ds = image_folder(tmp_path, image_size=4, test_fraction=0.5, channels=3)
    assert tuple(ds.train.x.shape) == (2, 3, 4, 4)
    assert all(int(v) == (200 if int(c) == 1 else 0)
               for x, c in zip(ds.train.x, ds.train.y) for v in x.flatten())


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="pass the folder as path"):
        load_dataset("image_folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        image_folder(tmp_path)
    _save(tmp_path / "empty" / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "empty" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png: not a readable image") as err:
        image_folder(tmp_path)
    assert "\n" not in str(err.value)
