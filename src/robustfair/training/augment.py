"""Batched augmentation on the device: random crop with padding, and horizontal flip.

Whole batches are cropped with one gather, using the epoch's own seeded generator, so training
stays fast on a GPU and a resumed run draws the same crops. Flipping only makes sense for
natural images (a flipped "3" is not a 3): the data set decides, ``flip`` overrides.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.rand(5, 3, 8, 8)
>>> random_crop(x, pad=0, mode="zeros", generator=g).equal(x)
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# data sets of natural photographs, where a mirror image is still the same class
_FLIP_PREFIXES = ("cifar", "stl", "tiny", "imagenet")


def default_flip(dataset_name: str, info: dict | None = None) -> bool:
    """Whether horizontal flips suit a data set: its ``info["hflip"]`` if given, else its name."""
    if info and "hflip" in info:
        return bool(info["hflip"])
    return dataset_name.lower().startswith(_FLIP_PREFIXES)


def default_pad(image_size: int) -> int:
    """Crop padding of one eighth of the side: 4 for 32 px, 1 for 8 px, 8 for 64 px."""
    return max(1, image_size // 8)


def random_crop(x: torch.Tensor, *, pad: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by ``pad`` (``reflect`` or ``zeros``) and crop it back at a random offset."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if mode == "reflect" else "constant")
    off = torch.randint(0, 2 * pad + 1, (2, n), device=x.device, generator=generator)
    rows = off[0, :, None] + torch.arange(h, device=x.device)        # N×H
    cols = off[1, :, None] + torch.arange(w, device=x.device)        # N×W
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts the channel dim last: N×H×W×C
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment(x: torch.Tensor, *, pad: int, mode: str, flip: bool,
            generator: torch.Generator) -> torch.Tensor:
    """Crop (and flip, when ``flip``) a float batch N×C×H×W."""
    x = random_crop(x, pad=pad, mode=mode, generator=generator)
    return random_flip(x, generator=generator) if flip else x
