"""The few-channel convolution's input gradient against PyTorch's own, on every shape it takes."""
import pytest
import torch
from torch import nn

from robustfair.models import _input_conv as few
from robustfair.models import attack_view, build_model


@pytest.mark.parametrize("c_in, kernel, padding, size", [
    (1, (3, 3), (1, 1), (8, 8)),     # the digits SmallCNN's first layer
    (3, (3, 3), (1, 1), (12, 10)),   # RGB, a non-square image
    (1, (5, 5), (2, 2), (9, 9)),     # LeNet's 5x5
    (2, (3, 3), (0, 0), (7, 9)),     # no padding: the output is smaller than the input
    (1, (3, 5), (2, 0), (6, 11)),    # padding wider than half the kernel, unequal sides
    (3, (1, 1), (0, 0), (5, 5)),     # pointwise
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_input_gradient_equals_pytorchs(c_in, kernel, padding, size, channels_last):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, c_in, *kernel, generator=gen)
    x = torch.randn(6, c_in, *size, generator=gen)
    out_shape = torch.nn.functional.conv2d(x, weight, padding=padding).shape
    grad = torch.randn(out_shape, generator=gen)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    want = torch.nn.grad.conv2d_input(x.shape, weight, grad, padding=padding)
    got = few.input_gradient(grad, weight, size, padding)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_function_gives_the_same_input_gradient_through_autograd():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(80, 3, 8, 8, generator=gen)  # 80*8*8 positions: the fast path runs
    assert 80 * 8 * 8 >= few.MIN_POSITIONS
    weight, bias = torch.randn(8, 3, 3, 3, generator=gen), torch.randn(8, generator=gen)
    for layout in (torch.contiguous_format, torch.channels_last):
        xa = x.contiguous(memory_format=layout).requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        out = few.FewChannelConv2d.apply(xa, weight, bias, (1, 1))
        ref = torch.nn.functional.conv2d(xb, weight, bias, padding=1)
        torch.testing.assert_close(out, ref)
        g = torch.randn(out.shape, generator=gen)
        (got,) = torch.autograd.grad(out, xa, g)
        (want,) = torch.autograd.grad(ref, xb, g)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert got.is_contiguous(memory_format=layout)  # handed back in the input's layout


def test_function_refuses_weights_that_want_a_gradient():
    x = torch.randn(80, 1, 8, 8, requires_grad=True)
    weight = torch.randn(4, 1, 3, 3, requires_grad=True)
    out = few.FewChannelConv2d.apply(x, weight, None, (1, 1))
    with pytest.raises(RuntimeError, match="input gradients only"):
        out.sum().backward()


def test_only_shapes_it_handles():
    assert few.applies_to(nn.Conv2d(3, 64, 3, padding=1))
    assert few.applies_to(nn.Conv2d(1, 6, 5, padding=2))
    assert not few.applies_to(nn.Conv2d(16, 16, 3, padding=1))          # wide input
    assert not few.applies_to(nn.Conv2d(3, 64, 7, stride=2, padding=3))  # strided
    assert not few.applies_to(nn.Conv2d(3, 64, 3, padding="same"))
    assert not few.applies_to(nn.Conv2d(3, 64, 3, padding=1, padding_mode="reflect"))
    assert not few.applies_to(nn.Conv2d(4, 8, 3, padding=1, groups=2))


@pytest.mark.parametrize("arch, channels, size", [("small_cnn", 1, 8), ("lenet", 1, 28),
                                                  ("preact_resnet18", 3, 16)])
def test_attack_view_input_gradients_match_the_model_on_a_full_batch(arch, channels, size):
    """The view's first convolution takes the fast path on a batch this size; its input
    gradients still match the model's."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=channels, image_size=size).eval()
    x = torch.rand(64, channels, size, size)
    view = attack_view(model, x)
    assert "input gradient of 1 few-channel convolution as a product" in view.applied
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(torch.nn.functional.cross_entropy(view(xa), torch.arange(64) % 10), xa)
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xb), torch.arange(64) % 10), xb)
    scale = want.norm()
    assert float((got - want).norm() / scale) < 1e-3


def test_function_under_cpu_autocast_returns_the_inputs_dtype():
    """amp=True attacks run the view under bfloat16 autocast: the gradient comes back float32
    and agrees with the float32 one to bfloat16 precision."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(80, 1, 8, 8, generator=gen)
    weight = torch.randn(16, 1, 3, 3, generator=gen)
    g = torch.randn(80, 16, 8, 8, generator=gen)
    xa = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = few.FewChannelConv2d.apply(xa, weight, None, (1, 1))
    assert out.dtype == torch.bfloat16
    (got,) = torch.autograd.grad(out, xa, g.to(out.dtype))
    want = torch.nn.grad.conv2d_input(x.shape, weight, g, padding=1)
    assert got.dtype == torch.float32
    assert float((got - want).norm() / want.norm()) < 2e-2


def test_the_views_check_runs_the_product_form(monkeypatch):
    """The view checks itself on 8 rows, below MIN_POSITIONS; the check must still run the
    product form that full batches use, so a wrong one is caught and the view falls back."""
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8).eval()
    x = torch.rand(8, 1, 8, 8)
    assert 8 * 8 * 8 < few.MIN_POSITIONS
    right = few.input_gradient
    monkeypatch.setattr(few, "input_gradient", lambda *args: 2 * right(*args))
    view = attack_view(model, x)
    assert view.applied == [] and "input gradients differ" in view.fallback_reason
    monkeypatch.setattr(few, "input_gradient", right)
    assert "input gradient of 1 few-channel convolution as a product" in attack_view(model, x).applied
