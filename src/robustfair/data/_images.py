"""Decode image files (PNG, JPEG, ...) with Pillow into one uint8 N×C×H×W array."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ._download import one_line

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
DECODE_THREADS = min(8, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(Pillow mode, (width, height)) without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception as exc:  # Pillow raises many types for files it cannot identify
        raise DataError(f"{path}: not a readable image ({one_line(exc)})") from None


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if im.size != size:
                resample = getattr(Image, "Resampling", Image).BILINEAR  # antialiased downscale
                im = im.resize(size, resample)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as exc:
        raise DataError(f"{path}: not a readable image ({one_line(exc)})") from None
    return a[:, :, None] if a.ndim == 2 else a


def read_images(
    paths: list[Path], channels: int, height: int, width: int, *, progress: bool = False,
    desc: str = "decoding images",
) -> np.ndarray:
    """Decode ``paths`` as ``channels`` (1 = grey, 3 = RGB) images of height×width.

    Images of another size are resized (bilinear). Decoding runs on a few threads: Pillow
    releases the GIL while it decodes.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(paths), height, width, channels), dtype=np.uint8)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        decoded = pool.map(lambda p: _decode(p, mode, (width, height)), paths)
        for i, a in enumerate(tqdm(decoded, total=len(paths), desc=desc, disable=not progress)):
            out[i] = a
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # N×H×W×C -> N×C×H×W
