"""Writers for tiny files in each real on-disk data set format, used by the data tests.

Each writer follows the format's published description byte by byte (explicit loops where the
layout is the point), so the loaders are checked against an independent rendering.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """IDX: 0x00 0x00, type 0x08 (uint8), ndim, big-endian uint32 dims, then the values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)


def cifar_record(labels: list[int], image: np.ndarray) -> bytes:
    """Label byte(s), then the red plane, green plane, blue plane, each row by row."""
    out = bytearray(labels)
    for c in range(3):
        for row in range(32):
            for col in range(32):
                out.append(int(image[c, row, col]))
    return bytes(out)


def stl10_image_bytes(image: np.ndarray) -> bytes:
    """STL-10: per channel, the 96×96 pixels column by column (MATLAB order)."""
    out = bytearray()
    for c in range(3):
        for col in range(96):
            for row in range(96):
                out.append(int(image[c, row, col]))
    return bytes(out)


def pattern_images(n: int, side: int, offset: int = 0) -> np.ndarray:
    """Images whose every pixel value tells its (image, channel, row, column)."""
    i, c, r, k = np.meshgrid(np.arange(n), np.arange(3), np.arange(side), np.arange(side),
                             indexing="ij")
    return ((offset + 31 * i + 80 * c + 3 * r + 7 * k) % 256).astype(np.uint8)


def write_cifar10_binary(folder: Path, per_batch: int = 2, n_test: int = 3,
                         names: list[str] | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"class{i}" for i in range(10)]
    xs, ys = [], []
    for b in range(1, 6):
        x = pattern_images(per_batch, 32, offset=b)
        y = [(b * per_batch + j) % 10 for j in range(per_batch)]
        (folder / f"data_batch_{b}.bin").write_bytes(
            b"".join(cifar_record([y[j]], x[j]) for j in range(per_batch)))
        xs.append(x)
        ys += y
    xt = pattern_images(n_test, 32, offset=100)
    yt = [(7 * j) % 10 for j in range(n_test)]
    (folder / "test_batch.bin").write_bytes(
        b"".join(cifar_record([yt[j]], xt[j]) for j in range(n_test)))
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n\n")  # as released: blank tail
    return {"x": np.concatenate(xs), "y": np.array(ys), "xt": xt, "yt": np.array(yt),
            "names": names}


def write_pickle(path: Path, obj, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


# The writers themselves, checked against the formats' published byte layouts.

def test_idx_writer_matches_the_published_header(tmp_path):
    write_idx(tmp_path / "f", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert (tmp_path / "f").read_bytes() == (
        b"\x00\x00\x08\x02" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03" + bytes([1, 2, 3, 4, 5, 6])
    )


def test_cifar_record_is_label_then_red_green_blue_planes():
    image = np.zeros((3, 32, 32), dtype=np.uint8)
    image[0, 0, 1], image[1, 1, 0], image[2, 31, 31] = 11, 22, 33
    rec = cifar_record([7], image)
    assert len(rec) == 3073 and rec[0] == 7
    assert rec[1 + 1] == 11 and rec[1 + 1024 + 32] == 22 and rec[-1] == 33


def test_stl10_writer_stores_columns_first():
    image = np.zeros((3, 96, 96), dtype=np.uint8)
    image[0, 1, 0], image[0, 0, 1] = 5, 9  # row 1 col 0, row 0 col 1
    data = stl10_image_bytes(image)
    assert len(data) == 3 * 96 * 96 and data[1] == 5 and data[96] == 9
