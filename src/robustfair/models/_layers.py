"""Small pieces shared by the model bodies: argument checks, weight init, size-aware pooling.

Every body must work for any image size (8×8 digits up to 96×96 STL-10), so downsampling
layers are only added while the feature map is still at least 2 pixels wide, and the
classifier sits behind adaptive average pooling.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from .._checks import is_int, is_real


def check_geometry(in_channels: int, image_size: int) -> None:
    """Reject channel counts and image sizes no network can use."""
    if not is_int(in_channels) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if not is_int(image_size) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")


def check_positive(value: object, what: str) -> int:
    """An integer architecture argument (width, depth, ...) that must be at least 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_probability(value: object, what: str) -> float:
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def pool_or_keep(size: int, pool: nn.Module) -> tuple[nn.Module, int]:
    """``(pool, size // 2)`` if halving keeps the map at least 1 pixel, else ``(Identity, size)``.

    This is what lets VGG-style nets with five pooling stages run on 8×8 images.
    """
    if size >= 2:
        return pool, size // 2
    return nn.Identity(), size


def init_weights(module: nn.Module) -> None:
    """He initialisation for convolutions (as in the ResNet papers), unit BN, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv_bn_relu(c_in: int, c_out: int, *, stride: int = 1,
                 batch_norm: bool = True) -> list[nn.Module]:
    """3×3 convolution, optional batch norm, ReLU (not in place: attacks need input gradients)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())
    return layers


def residual_stages(make_block: Callable[[int, int, int, int], nn.Module], c_in: int,
                    widths: Sequence[int], counts: Sequence[int]) -> tuple[nn.Sequential, int]:
    """The stages of a residual network: ``(layers, channels out)``.

    Stage ``i`` has ``counts[i]`` blocks of ``widths[i]`` channels; its first block changes the
    channel count and, except in the first stage, halves the resolution (stride 2).
    ``make_block(c_in, c_out, stride, stage)`` builds one block (``stage`` for blocks whose
    inner width depends on it, as in ResNeXt).
    """
    stages = []
    for i, (c_out, n) in enumerate(zip(widths, counts)):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(*[
            make_block(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1, i)
            for j in range(n)
        ]))
        c_in = c_out
    return nn.Sequential(*stages), c_in
