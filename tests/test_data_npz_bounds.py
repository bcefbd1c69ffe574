"""An npz test set reads only the members it uses, checks each one's declared shape and size
before reading it, and derives its classes from the labels, bounded: a small hostile file is
one line and exit 2, with memory bounded (each case runs under an address-space cap)."""
from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from robustfair.data.npz import load_npz
from robustfair.errors import DataError

from limited import assert_one_line_error, cli, run_limited

X = np.zeros((2, 1, 8, 8), np.uint8)


def _npy(array=None, *, header=None, data=b"") -> bytes:
    """An .npy file's bytes: an array, or a bare header (a declared shape) and some data."""
    fh = io.BytesIO()
    if array is not None:
        np.save(fh, array)
        return fh.getvalue()
    np.lib.format.write_array_header_1_0(fh, header)
    return fh.getvalue() + data


def _npz(path, members: dict[str, bytes], compress: bool = False):
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _audit_argv(path):
    return ["audit", "--model", "small_cnn", "--weights", "none.pt", "--dataset", f"npz:{path}",
            "--attack", "fgsm", "--out", f"{path}.out"]


def _audits_limited(paths, headroom_mb=512) -> list[str]:
    """``robustfair audit --dataset npz:PATH`` for each path, in one child process under an
    address-space cap; each must exit 2 with one line: the lines."""
    proc = run_limited("import contextlib, io, json\nfrom robustfair.cli import main\n", f"""
for argv in {[_audit_argv(p) for p in paths]!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    print(json.dumps([rc, err.getvalue()]))
""", headroom_mb=headroom_mb)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = []
    for row in proc.stdout.strip().splitlines():
        rc, err = json.loads(row)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("robustfair: error:")
        lines.append(err.strip())
    assert len(lines) == len(paths)
    return lines


def _audit(path, capsys) -> str:
    code, err = cli(_audit_argv(path), capsys)
    assert_one_line_error(code, err, "")
    return err.strip()


def test_a_huge_label_or_a_lying_header_is_one_line_with_bounded_memory(tmp_path):
    labels = [2_000_000_000, np.iinfo(np.int64).max, np.iinfo(np.uint64).max]
    paths = []
    for i, label in enumerate(labels):
        y = np.array([0, label], dtype=np.uint64 if label > np.iinfo(np.int64).max else np.int64)
        paths.append(_npz(tmp_path / f"t{i}.npz", {"x.npy": _npy(X), "y.npy": _npy(y)}))
    lying = _npy(header={"descr": "|u1", "fortran_order": False, "shape": (10**12, 1, 8, 8)},
                 data=bytes(128))  # an image header declaring a trillion rows
    paths.append(_npz(tmp_path / "rows.npz", {"x.npy": lying, "y.npy": _npy(np.array([0, 1]))}))
    *label_lines, rows_line = _audits_limited(paths)  # one child process: they are slow to start
    for label, line in zip(labels, label_lines):
        assert f"labels go up to {int(label)} (2 distinct label(s) present)" in line
        assert "beyond the bound of 100000 classes" in line
    assert "member 'x' declares shape (1000000000000, 1, 8, 8)" in rows_line
    assert "holds 128 bytes of data" in rows_line


def test_an_unused_member_declaring_a_terabyte_is_never_read(tmp_path):
    huge = _npy(header={"descr": "<f8", "fortran_order": False, "shape": (10**12, 1)}, data=b"0" * 64)
    path = _npz(tmp_path / "t.npz", {"x.npy": _npy(X), "y.npy": _npy(np.array([0, 1])),
                                     "extra.npy": huge})
    ds = load_npz(path)  # reading the member would ask for 8 TB
    assert ds.classes == ["0", "1"] and tuple(ds.test.x.shape) == (2, 1, 8, 8)


def test_an_unused_member_that_is_not_an_array_does_not_matter(tmp_path):
    broken = b"\x93NUMPY\x01\x00" + b"\x10\x00" + b"{not a header}\n"  # a .npy start, then junk
    path = _npz(tmp_path / "t.npz", {"x.npy": _npy(X), "y.npy": _npy(np.array([0, 1])),
                                     "notes.npy": broken})
    assert load_npz(path).classes == ["0", "1"]


def test_a_compressed_unused_member_is_not_inflated(tmp_path):
    bomb = _npy(np.zeros(64 << 20, np.uint8))  # 64 MiB of zeros, about 64 KiB deflated
    path = _npz(tmp_path / "t.npz", {"x.npy": _npy(X), "y.npy": _npy(np.array([0, 1])),
                                     "padding.npy": bomb}, compress=True)
    del bomb
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        load_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # numpy reports its arrays to tracemalloc: the member was never read


def test_a_large_honest_array_beyond_the_memory_bound_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((64, 1, 32, 32), np.uint8), y=np.zeros(64, np.int64))
    monkeypatch.setenv("ROBUSTFAIR_MAX_MEMORY", "10000")
    with pytest.raises(DataError, match=r"x \(64x1x32x32 uint8 images\) needs 64.0 KiB of memory, "
                                        r"more than the 9.8 KiB available"):
        load_npz(path)


def test_a_plain_npy_named_npz_is_one_line(tmp_path, capsys):
    path = tmp_path / "t.npz"
    path.write_bytes(_npy(X))
    line = _audit(path, capsys)
    assert "is not an .npz file (a single .npy array named .npz)" in line


def test_a_member_that_is_not_a_npy_is_one_line(tmp_path, capsys):
    path = _npz(tmp_path / "t.npz", {"x": b"raw bytes, no .npy header", "y.npy": _npy(np.array([0, 1]))})
    line = _audit(path, capsys)
    assert "member 'x' is not a .npy array" in line


def test_a_member_named_npy_without_a_npy_header_is_one_line(tmp_path, capsys):
    path = _npz(tmp_path / "t.npz", {"x.npy": b"not an array at all", "y.npy": _npy(np.array([0, 1]))})
    line = _audit(path, capsys)
    assert "member 'x' is not a .npy array" in line


def test_an_object_array_member_is_refused_without_unpickling(tmp_path):
    path = _npz(tmp_path / "t.npz", {"x.npy": _npy(X),
                                     "y.npy": _npy(np.array([0, {"a": 1}], dtype=object))})
    with pytest.raises(DataError, match="holds Python objects"):
        load_npz(path)
