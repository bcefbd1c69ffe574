"""A convolution on few input channels whose input gradient is computed faster on a CPU.

An attack's backward pass ends in the model's first convolution, which reads the image: 1 or
3 channels. oneDNN computes that layer's input gradient (a transposed convolution to 1-3
channels) far below its usual speed: on one CPU thread, 0.45 ms for a 128x16x8x8 gradient
into 1 channel, 5.8 ms for 32x64x32x32 into 3, while the forward convolutions take 0.085 ms
and 1.15 ms. With few input channels the same gradient is one small matrix product and a
shift-and-add: for each kernel tap ``(a, b)``, ``T_ab = sum_o w[o, :, a, b] * g[:, o]``
(all taps in one ``(C_in*kh*kw) x C_out`` by ``C_out x (N*H*W)`` product), then the input
gradient at ``(i, j)`` sums ``T_ab`` at ``(i + pad - a, j + pad - b)``. That takes 0.21 ms
and 2.9 ms on the two shapes above: the same products and sums, in another order.

Only input gradients: the weight and bias are the attack view's detached copies, which
never take a gradient. Used for 2-D convolutions with stride 1, no dilation, one group and
zero padding, where it measured faster (one thread, ``python`` timing of both on gradients
of 128x8x8, 32x16x16 and 32x32x32 positions with 8-64 output channels): every one-channel
input (1.6-32x), and an input of at most :data:`MAX_TAP_ROWS` rows ``C_in*kh*kw`` under a
kernel wider than 1x1 with at least 16 output channels (1.15-2.4x; with 8 output channels
or a 1x1 kernel on 3 channels it was up to 2x slower). On other devices, and for gradients
under :data:`MIN_POSITIONS` positions, the ordinary convolution backward runs.

>>> import torch
>>> x = torch.randn(64, 1, 8, 8, requires_grad=True)
>>> w, b = torch.randn(4, 1, 3, 3), torch.randn(4)
>>> out = FewChannelConv2d.apply(x, w, b, (1, 1))
>>> torch.allclose(out, torch.nn.functional.conv2d(x, w, b, padding=1))
True
>>> g = torch.randn_like(out)
>>> want = torch.nn.grad.conv2d_input(x.shape, w, g, padding=1)
>>> torch.allclose(torch.autograd.grad(out, x, g)[0], want, atol=1e-5)
True
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# C_in * kh * kw up to an RGB image under a 3x3 kernel (or a gray one under 5x5). More taps
# mean more shift-and-adds, each a pass over the gradient, and oneDNN's own backward is fine
# for wider inputs.
MAX_TAP_ROWS = 27
# Below this many output positions (N*H*W) a gradient is too small for the shift-and-adds'
# fixed cost (a few microseconds each) to pay: 16x3x9x9 took 0.14 ms this way, 0.10 ms in
# oneDNN; 64x1x8x8 took 0.16 ms, 0.25 ms in oneDNN.
MIN_POSITIONS = 4096

# On while the attack view checks itself on a few rows (below MIN_POSITIONS): the product form
# it will use on full batches must be the form that is checked against the model.
_ALWAYS_PRODUCT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "robustfair_always_product", default=False)


@contextlib.contextmanager
def always_product() -> Iterator[None]:
    """Within this block, :class:`FewChannelConv2d` uses the product form on CPU at any size."""
    token = _ALWAYS_PRODUCT.set(True)
    try:
        yield
    finally:
        _ALWAYS_PRODUCT.reset(token)


def applies_to(conv: nn.Module) -> bool:
    """Whether ``conv``'s shape is one :class:`FewChannelConv2d` handles."""
    return (
        type(conv) is nn.Conv2d
        and conv.groups == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)  # not "same" / "valid"
        and conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] <= MAX_TAP_ROWS
        and (conv.in_channels == 1
             or (conv.kernel_size != (1, 1) and conv.out_channels >= 16))
    )


def input_gradient(grad: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int],
                   padding: tuple[int, int]) -> torch.Tensor:
    """The gradient with respect to the input of ``conv2d(x, weight, padding=padding)``
    (stride 1), given the gradient ``grad`` of its output; ``input_size``: x's (H, W)."""
    c_out, c_in, kh, kw = weight.shape
    n, _, h_out, w_out = grad.shape
    height, width = input_size
    ph, pw = padding
    taps = weight.to(grad.dtype).permute(1, 2, 3, 0).reshape(c_in * kh * kw, c_out)
    if grad.is_contiguous(memory_format=torch.channels_last):
        rows = grad.permute(0, 2, 3, 1).reshape(-1, c_out).t()  # a view: no copy
    else:
        rows = grad.transpose(0, 1).reshape(c_out, -1)
    # taps first: MKL is slow on the tall-and-thin product the other way round
    per_tap = (taps @ rows).view(c_in, kh, kw, n, h_out, w_out)
    out = grad.new_zeros(c_in, n, height, width)
    for a in range(kh):
        # output row p of tap a lands on input row p - ph + a
        p_lo, p_hi = max(0, ph - a), min(h_out, height + ph - a)
        if p_hi <= p_lo:
            continue
        for b in range(kw):
            q_lo, q_hi = max(0, pw - b), min(w_out, width + pw - b)
            if q_hi <= q_lo:
                continue
            i, j = p_lo - ph + a, q_lo - pw + b
            out[:, :, i:i + p_hi - p_lo, j:j + q_hi - q_lo] += \
                per_tap[:, a, b, :, p_lo:p_hi, q_lo:q_hi]
    return out.transpose(0, 1)


class FewChannelConv2d(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) with the fast input gradient
    on CPU; no gradient for ``weight`` or ``bias``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.padding, ctx.input_size = padding, tuple(x.shape[-2:])
        ctx.input_dtype = x.dtype
        ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last)
        ctx.always_product = _ALWAYS_PRODUCT.get()  # read here: backward may run elsewhere
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise RuntimeError("FewChannelConv2d gives input gradients only (detach the weights)")
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (weight,) = ctx.saved_tensors
        n, _, h_out, w_out = grad.shape
        small = n * h_out * w_out < MIN_POSITIONS and not ctx.always_product
        if grad.device.type != "cpu" or small:
            # on a GPU cuDNN's own backward is the fast one; tiny gradients: see MIN_POSITIONS
            shape = (n, weight.shape[1], *ctx.input_size)
            dx = torch.nn.grad.conv2d_input(shape, weight.to(grad.dtype), grad,
                                            padding=ctx.padding)
        else:
            dx = input_gradient(grad, weight, ctx.input_size, ctx.padding)
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        return dx.to(ctx.input_dtype).contiguous(memory_format=layout), None, None, None
