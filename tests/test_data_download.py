"""Missing files, verified downloads (from local file:// URLs: no network), corrupt files."""
import gzip
import hashlib
import io
import tarfile

import numpy as np
import pytest

from robustfair.data import cifar, load_dataset, mnist
from robustfair.data._download import Remote, download_file, extract_archive
from robustfair.errors import DataError

from test_data_writers import write_cifar10_binary, write_idx


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _one_line_error(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name,expected", [
    ("mnist", "train-images-idx3-ubyte"), ("fashion_mnist", "t10k-labels-idx1-ubyte"),
    ("svhn", "train_32x32.mat"), ("cifar10", "data_batch_1.bin"), ("cifar100", "train.bin"),
    ("stl10", "train_X.bin"), ("tiny_imagenet", "wnids.txt"),
])
def test_missing_files_without_download_say_what_where_and_how(tmp_path, name, expected):
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path, download=False)
    msg = _one_line_error(err)
    assert msg.startswith(f"{name}: files not found") and expected in msg
    assert str(tmp_path) in msg and "download=False" in msg and "http" in msg


def _cifar10_archive(tmp_path):
    src = tmp_path / "src"
    ref = write_cifar10_binary(src / "cifar-10-batches-bin")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return archive, ref


def test_download_verifies_extracts_and_loads(tmp_path, monkeypatch):
    archive, ref = _cifar10_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_REMOTE", Remote(archive.as_uri(), md5=_md5(archive)))
    data_dir = tmp_path / "data"
    ds = load_dataset("cifar10", data_dir=data_dir, download=True)
    assert np.array_equal(ds.train.x.numpy(), ref["x"]) and ds.classes == ref["names"]
    assert (data_dir / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-bin"]  # archive gone
    # a second load finds the files and never downloads
    monkeypatch.setattr(cifar, "CIFAR10_REMOTE", Remote("file:///nonexistent.tar.gz", md5="0"))
    assert len(load_dataset("cifar10", data_dir=data_dir, download=True).test) == 3


def test_checksum_mismatch_discards_the_download(tmp_path, monkeypatch):
    archive, _ = _cifar10_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_REMOTE", Remote(archive.as_uri(), md5="0" * 32))
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_dataset("cifar10", data_dir=data_dir, download=True)
    assert _md5(archive) in _one_line_error(err)
    assert list(data_dir.iterdir()) == []  # no .part, no archive, nothing extracted


def test_sha256_is_checked_too(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"robustfair")
    good = hashlib.sha256(b"robustfair").hexdigest()
    out = download_file(Remote(src.as_uri(), sha256=good), tmp_path / "dl")
    assert out.read_bytes() == b"robustfair"
    with pytest.raises(DataError, match="sha256"):
        download_file(Remote(src.as_uri(), sha256="1" * 64), tmp_path / "dl2")
    with pytest.raises(DataError, match="no checksum"):
        download_file(Remote(src.as_uri()), tmp_path / "dl3")


def test_failed_download_is_one_line_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_REMOTE",
                        Remote((tmp_path / "absent.tar.gz").as_uri(), md5="0" * 32))
    with pytest.raises(DataError, match="download failed") as err:
        load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    msg = _one_line_error(err)
    assert "cifar-10-batches-bin" in msg and "absent.tar.gz" in msg and "extract it into" in msg


def test_fetch_function_can_be_replaced(tmp_path, monkeypatch):
    """Download logic is independent of the transport: a fake fetch writes the bytes."""
    from robustfair.data import _download

    payload = {}
    rng = np.random.default_rng(0)
    for stem, arr in [("train-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28))),
                      ("train-labels-idx1-ubyte", np.array([1, 2, 3, 4])),
                      ("t10k-images-idx3-ubyte", rng.integers(0, 256, (2, 28, 28))),
                      ("t10k-labels-idx1-ubyte", np.array([5, 6]))]:
        write_idx(tmp_path / "src" / (stem + ".gz"), arr.astype(np.uint8), gz=True)
        gz = (tmp_path / "src" / (stem + ".gz")).read_bytes()
        payload[f"https://example.invalid/{stem}.gz"] = gz
    remotes = [Remote(url, md5=hashlib.md5(data).hexdigest()) for url, data in payload.items()]
    monkeypatch.setattr(mnist, "MNIST_REMOTES", remotes)
    fetched = []

    def fake_fetch(url, dest, progress):
        fetched.append(url)
        dest.write_bytes(payload[url])

    monkeypatch.setattr(_download, "_fetch", fake_fetch)
    ds = load_dataset("mnist", data_dir=tmp_path / "data", download=True)
    assert sorted(fetched) == sorted(payload)
    assert ds.train.y.tolist() == [1, 2, 3, 4] and ds.test.y.tolist() == [5, 6]
    assert (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_archive_members_escaping_the_folder_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(DataError, match="unsafe path"):
        extract_archive(archive, target)
    assert not (tmp_path / "escaped.txt").exists() and list(target.iterdir()) == []


# ---- corrupt files: one line naming the file -------------------------------------------------

def _mnist_folder(folder, gz=False):
    for stem, arr in [("train-images-idx3-ubyte", np.zeros((2, 28, 28))),
                      ("train-labels-idx1-ubyte", np.zeros(2)),
                      ("t10k-images-idx3-ubyte", np.zeros((1, 28, 28))),
                      ("t10k-labels-idx1-ubyte", np.zeros(1))]:
        write_idx(folder / (stem + (".gz" if gz else "")), arr.astype(np.uint8), gz)


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:-5], "wrong size"),
    (lambda b: b"\x08\x03" + b[2:], "bad magic"),
    (lambda b: b[:6], "truncated IDX header"),
])
def test_corrupt_idx_files(tmp_path, damage, match):
    folder = tmp_path / "mnist"
    _mnist_folder(folder)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=match) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(path) in _one_line_error(err)


def test_bad_gzip_and_label_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    _mnist_folder(folder, gz=True)
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"x" * 100)[:-12])  # cut off: a truncated download
    with pytest.raises(DataError, match="not a valid gzip file") as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(bad) in _one_line_error(err)
    _mnist_folder(folder, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), gz=True)
    with pytest.raises(DataError, match="2 images but train-labels-idx1-ubyte.gz has 3 labels"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_truncated_cifar_binary(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10_binary(folder)
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="whole number of 3073-byte records") as err:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert str(path) in _one_line_error(err)


def test_cifar_label_out_of_range_and_wrong_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10_binary(folder)
    raw = bytearray((folder / "test_batch.bin").read_bytes())
    raw[0] = 12
    (folder / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="test_batch.bin: label 12 outside 0..9"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    (folder / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="expected 10 class names, found 2"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_corrupt_svhn_mat_and_stl10_sizes(tmp_path):
    (tmp_path / "svhn").mkdir()
    for f in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "svhn" / f).write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)
    with pytest.raises(DataError, match="train_32x32.mat: not a readable MATLAB file") as err:
        load_dataset("svhn", data_dir=tmp_path, download=False)
    _one_line_error(err)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "train_X.bin").write_bytes(b"\0" * (3 * 96 * 96 + 1))
    for f in ("train_y.bin", "test_X.bin", "test_y.bin"):
        (folder / f).write_bytes(b"\1")
    (folder / "class_names.txt").write_text("\n".join("abcdefghij"))
    with pytest.raises(DataError, match="train_X.bin: size 27649 bytes"):
        load_dataset("stl10", data_dir=tmp_path, download=False)


def test_garbled_cifar_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / f).write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="batches.meta: not a readable pickle") as err:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    _one_line_error(err)
