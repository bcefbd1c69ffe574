"""Common corruptions computed on tensors (no image libraries), and class-wise accuracy under them.

Six corruptions of images in [0, 1], N×C×H×W, at severities 1-5 (severity 0 is the identity):
Gaussian noise, shot (Poisson) noise, Gaussian blur, contrast, brightness and a JPEG-like
compression (8×8 block DCT, quantisation by the standard JPEG tables scaled to a quality,
inverse DCT, rounding to 8 bits; colour images go through YCbCr first, without the chroma
subsampling real JPEG adds). Everything runs on the images' device.

The question for class-wise robustness: is the class that suffers most from natural
corruptions the same one that suffers most from adversarial attacks?

>>> x = torch.full((1, 1, 8, 8), 0.5)
>>> torch.equal(corrupt(x, "contrast", 0), x)
True
>>> round(float(corrupt(x, "brightness", 2).mean()), 6)  # V + 0.1
0.6
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import is_int
from .._device import model_device
from .._tensor_checks import as_float_images
from ..attacks import eval_mode
from ..errors import RobustfairError
from ._common import check_inputs, float_batches, records, resolve_classes

__all__ = [
    "CORRUPTIONS",
    "SEVERITY_PARAMS",
    "CorruptionResult",
    "corrupt",
    "corruption_accuracy",
    "jpeg_quantization_table",
]

# One parameter per severity 1..5, from the CIFAR-10-C corruption code (Hendrycks & Dietterich
# 2019, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"), whose
# CIFAR-10-C settings are the ImageNet-C ones scaled down for 32×32 images; we use those small-
# image settings for every data set:
#   gaussian_noise: std of the added noise       shot_noise: photons per unit intensity (Poisson)
#   gaussian_blur:  std of the kernel in pixels  contrast:   factor on the deviation from the mean
#   brightness:     added to the HSV value       jpeg:       JPEG quality (1-100)
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "jpeg": (80, 65, 58, 50, 40),
}
CORRUPTIONS = tuple(SEVERITY_PARAMS)

# The JPEG standard's example quantisation tables (ITU T.81, Annex K), for quality 50.
_JPEG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
_JPEG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0.0, 1.0)


def shot_noise(x: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    """Poisson noise: each pixel counts ``photons·x`` photons; fewer photons, more noise."""
    return (torch.poisson(x * photons, generator=generator) / photons).clamp(0.0, 1.0)


def gaussian_kernel(std: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A normalised 1-D Gaussian kernel reaching 3 std on each side."""
    radius = max(1, math.ceil(3 * std))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / std) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, std: float) -> torch.Tensor:
    """Separable Gaussian blur per channel, reflecting at the border (replicating for tiny images)."""
    k = gaussian_kernel(std, x.dtype, x.device)
    r = len(k) // 2
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    out = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(F.pad(out, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out.clamp(0.0, 1.0)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Shrink each image's deviation from its own mean (over all pixels and channels)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0.0, 1.0)


def brightness(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Add ``shift`` to the HSV value (the channel maximum) keeping hue and saturation.

    Scaling every channel by ``V'/V`` changes V to V' and keeps the channel ratios, hence hue
    and saturation; a black pixel (V = 0, no hue) becomes grey at V'. For one channel this is
    ``clip(x + shift)``.
    """
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + shift).clamp(0.0, 1.0)
    scaled = x * (v_new / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp(0.0, 1.0)


def jpeg_quantization_table(quality: int, *, chroma: bool = False, device=None) -> torch.Tensor:
    """The 8×8 quantisation table for ``quality`` (1-100), scaled as the IJG libjpeg does."""
    if not 1 <= quality <= 100:
        raise RobustfairError(f"JPEG quality must lie in 1..100, got {quality}")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_JPEG_CHROMA if chroma else _JPEG_LUMA, dtype=torch.float64, device=device)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255).view(8, 8)


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix D: ``D @ block @ D.T`` is JPEG's 2-D DCT of a block."""
    n = torch.arange(8, dtype=torch.float64, device=device)
    d = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d.to(dtype)


def _rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr on a 0-255 scale, centred (Y - 128, Cb - 128, Cr - 128)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.stack([y - 128, cb, cr], dim=1)


def _ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    y, cb, cr = x[:, 0] + 128, x[:, 1], x[:, 2]
    return torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-like compression at ``quality``: 8×8 block DCT, quantise, dequantise, inverse DCT.

    Images are taken to 0..255 and centred at 128 (colour images in YCbCr, luminance table for
    Y and chrominance table for Cb/Cr), padded to a multiple of 8 by repeating the edge, and
    the input and the result are rounded to 8 bits like a JPEG's samples. Computed in float64 so
    that the only other loss is the quantisation.
    """
    n, c, h, w = x.shape
    device = x.device
    v = torch.round(x.double() * 255.0)  # a JPEG encoder sees 8-bit samples
    colour = c == 3
    v = _rgb_to_ycbcr(v) if colour else v - 128.0
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        v = F.pad(v, (0, pw, 0, ph), mode="replicate")
    hh, ww = v.shape[-2:]
    # N×C×H×W -> N×C×(H/8)×(W/8)×8×8 blocks
    blocks = v.view(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)
    d = _dct_matrix(torch.float64, device)
    coef = d @ blocks @ d.T
    q = torch.stack([jpeg_quantization_table(int(quality), chroma=colour and ch > 0, device=device)
                     for ch in range(c)]).view(1, c, 1, 1, 8, 8)
    coef = torch.round(coef / q) * q
    blocks = d.T @ coef @ d
    v = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)[..., :h, :w]
    v = _ycbcr_to_rgb(v) if colour else v + 128.0
    return (torch.round(v).clamp(0, 255) / 255.0).to(x.dtype)


def corrupt(x: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """``x`` (float in [0, 1] or uint8) corrupted by ``name`` at ``severity`` 0-5 (0: unchanged).

    The noise corruptions draw from a generator seeded with ``seed`` on ``x``'s device.
    """
    if name not in SEVERITY_PARAMS:
        raise RobustfairError(f"unknown corruption {name!r}; choose from: {', '.join(CORRUPTIONS)}")
    if not is_int(severity) or not 0 <= severity <= 5:
        raise RobustfairError(f"severity must be an integer 0..5, got {severity!r}")
    x = as_float_images(x)
    if severity == 0:
        return x.clone()
    p = SEVERITY_PARAMS[name][severity - 1]
    if name == "gaussian_noise":
        return gaussian_noise(x, p, _generator(seed, x.device))
    if name == "shot_noise":
        return shot_noise(x, p, _generator(seed, x.device))
    if name == "gaussian_blur":
        return gaussian_blur(x, p)
    if name == "contrast":
        return contrast(x, p)
    if name == "brightness":
        return brightness(x, p)
    return jpeg(x, int(p))


@dataclass
class CorruptionResult:
    """Class-wise accuracy under each corruption and severity, beside the clean and robust ones.

    ``accuracy``: rows = classes, columns = ``(corruption, severity)``; ``by_corruption``: mean
    over severities per corruption, plus ``"mean"`` over all corruptions; ``clean_acc`` and
    ``robust_acc`` (if given) per class; ``worst``: the worst class under each.
    """

    classes: list[str]
    accuracy: pd.DataFrame
    clean_acc: pd.Series
    robust_acc: pd.Series | None
    severities: list[int]
    seed: int

    @property
    def by_corruption(self) -> pd.DataFrame:
        frame = self.accuracy.T.groupby(level=0, sort=False).mean().T
        frame["mean"] = frame.mean(axis=1)
        return frame

    def worst_classes(self) -> dict[str, str]:
        """The worst class clean, under each corruption (mean over severities), under all of them
        together (``"corruption"``), and under attack (``"attack"``, if robust accuracy is known)."""
        table = self.by_corruption
        out = {"clean": str(self.clean_acc.idxmin())}
        out.update({c: str(table[c].idxmin()) for c in table.columns if c != "mean"})
        out["corruption"] = str(table["mean"].idxmin())
        if self.robust_acc is not None:
            out["attack"] = str(self.robust_acc.idxmin())
        return out

    def to_dict(self) -> dict:
        table = self.by_corruption.copy()
        table.insert(0, "clean", self.clean_acc)
        if self.robust_acc is not None:
            table["robust"] = self.robust_acc
        return {
            "severities": self.severities,
            "seed": self.seed,
            "params": {name: list(SEVERITY_PARAMS[name])
                       for name in self.accuracy.columns.get_level_values(0).unique()},
            "by_class": records(table),
            "by_severity": {f"{c}@{s}": self.accuracy[(c, s)].round(6).tolist() for c, s in self.accuracy.columns},
            "worst": self.worst_classes(),
        }


@torch.no_grad()
def corruption_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    classes: Sequence[str] | None = None,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    robust_acc: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> CorruptionResult:
    """Class-wise accuracy of ``model`` on ``(x, y)`` under each corruption at each severity."""
    names = resolve_classes(model, classes, x)
    k = len(names)
    y = check_inputs(x, y, k)
    for c in corruptions:
        if c not in SEVERITY_PARAMS:
            raise RobustfairError(f"unknown corruption {c!r}; choose from: {', '.join(CORRUPTIONS)}")
    severities = [int(s) for s in severities]
    if not severities or any(not 1 <= s <= 5 for s in severities):
        raise RobustfairError(f"severities must lie in 1..5, got {severities}")
    device = model_device(model)
    settings = [(c, s) for c in corruptions for s in severities]
    hits = torch.zeros(len(settings) + 1, k, dtype=torch.float64, device=device)  # row 0: clean
    counts = torch.zeros(k, dtype=torch.float64, device=device)
    with eval_mode(model):
        for start, xb in float_batches(x, batch_size, device):
            yb = y[start:start + len(xb)].to(device)
            counts += torch.bincount(yb, minlength=k)
            runs: list[Callable[[], torch.Tensor]] = [lambda: xb]
            # a distinct seed per batch and corruption, so noise is not repeated across batches
            runs += [lambda c=c, s=s: corrupt(xb, c, s, seed=seed + 7919 * start + 31 * CORRUPTIONS.index(c) + s)
                     for c, s in settings]
            for row, make in enumerate(runs):
                right = (model(make()).argmax(dim=1) == yb).double()
                hits[row].index_add_(0, yb, right)
    acc = (hits / counts).cpu().numpy()
    columns = pd.MultiIndex.from_tuples(settings, names=["corruption", "severity"])
    index = pd.Index(names, name="class")
    robust = None
    if robust_acc is not None:
        r = np.asarray(robust_acc, dtype=float)
        if r.shape != (k,):
            raise RobustfairError(f"robust_acc needs one value per class ({k}), got shape {r.shape}")
        robust = pd.Series(r, index=index, name="robust_acc")
    return CorruptionResult(
        classes=names,
        accuracy=pd.DataFrame(acc[1:].T, index=index, columns=columns),
        clean_acc=pd.Series(acc[0], index=index, name="clean_acc"),
        robust_acc=robust,
        severities=severities,
        seed=seed,
    )
