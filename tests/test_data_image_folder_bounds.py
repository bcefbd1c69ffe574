"""A folder of images is refused before allocating when its decoded size (or the size it is
resized to) would not fit in memory: one line naming the size and the bound, exit 2."""
from __future__ import annotations

import json

from PIL import Image

from limited import run_limited


def _folder(tmp_path, n: int, side: int):
    for i in range(n):
        path = tmp_path / "imgs" / ("a" if i % 2 else "b") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (side, side)).save(path)  # flat: a few KiB on disk, side² bytes decoded
    return tmp_path / "imgs"


def test_large_images_or_a_huge_image_size_are_refused_before_allocating(tmp_path):
    big = _folder(tmp_path / "big", 8, 6000)  # 8 x 36 MB decoded, over the 256 MiB cap below
    small = _folder(tmp_path / "small", 2, 8)
    runs = [["--data-dir", str(big)], ["--data-dir", str(small), "--image-size", "100000"]]
    proc = run_limited("import contextlib, io, json\nfrom robustfair.cli import main\n", f"""
for extra in {runs!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["audit", "--model", "small_cnn", "--weights", "none.pt", "--dataset",
                   "image_folder", "--attack", "fgsm", "--out", "never"] + extra)
    print(json.dumps([rc, err.getvalue()]))
""", headroom_mb=256)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (rc_big, err_big), (rc_huge, err_huge) = [json.loads(r) for r in proc.stdout.splitlines()]
    for rc, err in ((rc_big, err_big), (rc_huge, err_huge)):
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("robustfair: error:"), err
        assert "available; pass a smaller --image-size" in err
    assert "8 images decoded at 6000x6000x1 needs" in err_big
    assert "2 images decoded at 100000x100000x1 needs 18.6 GiB" in err_huge
