"""The data layer against files it cannot trust: a download never writes through a planted link
and can be switched off, archive names stay inside their folder, a gzip bomb or a cache with a
lying header costs neither memory nor a crash."""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zipfile

import numpy as np
import pytest

from robustfair.data import _download
from robustfair.data._download import NO_DOWNLOAD_ENV, Remote, download_file, find_or_download
from robustfair.data.mnist import read_idx
from robustfair.data.tiny_imagenet import _file_lists, _load_cache
from robustfair.errors import DataError

from limited import assert_one_line_error, cli, run_limited


def _served(tmp_path, payload: bytes) -> Remote:
    src = tmp_path / "server" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(payload)
    return Remote(src.as_uri(), md5=hashlib.md5(payload).hexdigest())


# ---------------------------------------------------------------- downloads
def test_a_planted_part_symlink_is_never_written_through(tmp_path):
    remote = _served(tmp_path, b"the real data")
    folder = tmp_path / "data"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (folder / "data.bin.part").symlink_to(victim)
    path = download_file(remote, folder)
    assert path.read_bytes() == b"the real data"
    assert victim.read_text() == "precious"
    # a tampered download is discarded, and the victim is still untouched
    bad = Remote(remote.url.replace("data.bin", "other.bin"), md5="0" * 32)
    (tmp_path / "server" / "other.bin").write_bytes(b"evil")
    (folder / "other.bin.part").symlink_to(victim)
    with pytest.raises(DataError, match="checksum mismatch"):
        download_file(bad, folder)
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in folder.iterdir()) == ["data.bin", "data.bin.part", "other.bin.part"]


def test_the_no_download_env_forbids_every_fetch(tmp_path, monkeypatch):
    remote = _served(tmp_path, b"payload")
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    with pytest.raises(DataError, match="switched off"):
        download_file(remote, tmp_path / "direct")
    with pytest.raises(DataError, match="downloads are switched off"):
        find_or_download("thing", [tmp_path / "t"], lambda d: (d / "data.bin").is_file(),
                         "data.bin", [remote], tmp_path / "t", download=True)
    assert not (tmp_path / "t" / "data.bin").exists()
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "0")  # an explicit 0 allows them again
    assert find_or_download("thing", [tmp_path / "t"], lambda d: (d / "data.bin").is_file(),
                            "data.bin", [remote], tmp_path / "t", download=True) == tmp_path / "t"


def test_the_no_download_flag_is_one_line_and_fetches_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(NO_DOWNLOAD_ENV, raising=False)
    fetched = []
    monkeypatch.setattr(_download.urllib.request, "urlopen",
                        lambda *a, **k: fetched.append(a) or (_ for _ in ()).throw(OSError("net")))
    code, err = cli(["audit", "--checkpoint", tmp_path / "none.safetensors", "--dataset", "mnist",
                     "--data-dir", tmp_path / "empty", "--out", tmp_path / "o", "--no-download"],
                    capsys)
    assert_one_line_error(code, err, "switched off")
    assert fetched == [] and NO_DOWNLOAD_ENV not in os.environ  # restored after the command


# ---------------------------------------------------------------- archive names
@pytest.mark.parametrize("name", ["../../secret.JPEG", "/etc/passwd", "..", "a/../../b.JPEG"])
def test_tiny_imagenet_val_names_outside_val_images_are_refused(tmp_path, name):
    folder = tmp_path / "tiny-imagenet-200"
    (folder / "train" / "n01" / "images").mkdir(parents=True)
    (folder / "val").mkdir()
    (folder / "val" / "val_annotations.txt").write_text(f"{name}\tn01\t0\t0\t8\t8\n")
    with pytest.raises(DataError, match="refusing image name"):
        _file_lists(folder, ["n01"])


# ---------------------------------------------------------------- gzip bombs
def _idx_gz(path, dims, payload_mib: int) -> None:
    """An IDX .gz whose header promises ``dims`` and which inflates to ``payload_mib`` MiB of
    zeros: gzip members may follow one another, so one small member repeated is a bomb."""
    header = b"\x00\x00\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    mib_of_zeros = gzip.compress(bytes(1 << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(payload_mib):
            f.write(mib_of_zeros)


def test_a_gzip_bomb_in_mnist_is_refused_with_bounded_memory(tmp_path):
    promise_big = tmp_path / "promise" / "train-images-idx3-ubyte.gz"
    hidden_big = tmp_path / "hidden" / "train-images-idx3-ubyte.gz"
    promise_big.parent.mkdir()
    hidden_big.parent.mkdir()
    _idx_gz(promise_big, (4096, 1024, 1024), 2)  # 4 GiB promised by a 2 MiB file
    _idx_gz(hidden_big, (1000, 28, 28), 1024)    # a small promise, 1 GiB inside
    assert promise_big.stat().st_size < 1 << 20 and hidden_big.stat().st_size < 2 << 20
    proc = run_limited("from pathlib import Path\nfrom robustfair.data.mnist import read_idx\n"
                       "from robustfair.errors import DataError\n", f"""
for bomb in ({str(promise_big)!r}, {str(hidden_big)!r}):
    try:
        read_idx(Path(bomb))
    except DataError as exc:
        print("refused:", exc)
""", headroom_mb=256)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused:") for line in lines), proc.stdout
    assert "the header promises 4096x1024x1024" in lines[0]
    assert "wrong size" in lines[1] and "more than 784000" in lines[1]


def test_a_real_sized_gzip_idx_still_reads(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels = np.arange(1000, dtype=np.uint8) % 10
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 1000) + labels.tobytes()))
    assert np.array_equal(read_idx(path), labels)


# ---------------------------------------------------------------- caches
def _npz_with_lying_header(path, claimed_rows: int) -> None:
    """A cache whose train_x header claims ``claimed_rows`` images but holds a handful."""
    def member(a, shape=None):
        header = {"descr": a.dtype.str, "fortran_order": False, "shape": shape or a.shape}
        out = bytearray()
        np.lib.format.write_array_header_1_0(_Buf(out), header)
        return b"\x93NUMPY\x01\x00"[:0] + bytes(out) + a.tobytes()

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train_x.npy", member(np.zeros((2, 3, 64, 64), np.uint8),
                                           (claimed_rows, 3, 64, 64)))
        zf.writestr("train_y.npy", member(np.zeros(2, np.int64)))
        zf.writestr("test_x.npy", member(np.zeros((1, 3, 64, 64), np.uint8)))
        zf.writestr("test_y.npy", member(np.zeros(1, np.int64)))


class _Buf:
    def __init__(self, out: bytearray) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out += data


def test_a_tiny_imagenet_cache_with_a_lying_header_is_ignored_not_fatal(tmp_path):
    cache = tmp_path / ".robustfair-cache-64.npz"
    _npz_with_lying_header(cache, claimed_rows=1 << 28)  # 3 TiB claimed
    assert _load_cache(cache, n_train=2, n_test=1) is None  # decoded again, then rewritten
    _npz_with_lying_header(cache, claimed_rows=2)  # an honest one of the same layout loads
    arrays = _load_cache(cache, n_train=2, n_test=1)
    assert arrays is not None and arrays[0].shape == (2, 3, 64, 64)
    cache.write_bytes(b"PK\x03\x04 truncated")
    assert _load_cache(cache, n_train=2, n_test=1) is None
