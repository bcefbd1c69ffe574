"""Model zoo: every registered body adapts to channels, image size and classes; normalisation
sits in front; input gradients flow; the big architectures have their published sizes; bad
options, and a model too big for this machine's memory, are one-line errors."""
import pytest
import torch
from torch import nn

import robustfair as rf
from robustfair.errors import ModelError
from robustfair.models import build_model, list_models

from cheap_models import CHEAP  # small variants, so that forward passes stay cheap
from limited import assert_one_line_error, cli

# The full-size models are counted on the meta device below, without allocating weights.
GEOMETRIES = [(1, 8, 10), (3, 32, 10), (3, 32, 100)]


def meta_param_count(name: str, **kwargs) -> int:
    with torch.device("meta"):
        model = build_model(name, num_classes=10, **kwargs)
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_is_covered():
    assert sorted(CHEAP) == list_models()
    assert rf.list_models() == list_models()


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("name", sorted(CHEAP))
def test_forward_shape_and_input_gradient(name, geometry):
    channels, size, classes = geometry
    model = build_model(name, num_classes=classes, in_channels=channels, image_size=size,
                        **CHEAP[name])
    x = torch.rand(2, channels, size, size)
    out = model(x)  # train mode (batch norm on batch statistics)
    assert out.shape == (2, classes) and torch.isfinite(out).all()

    model.eval()
    x.requires_grad_(True)
    logits = model(x)
    grad, = torch.autograd.grad(logits[:, 0].sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # each image's gradient depends only on its own logits: the batch does not mix in eval mode
    grad0, = torch.autograd.grad(model(x)[0, 0], x)
    assert torch.all(grad0[1] == 0) and grad0[0].abs().sum() > 0


@pytest.mark.parametrize("name,size", [("small_cnn", 28), ("lenet", 28), ("resnet18", 64),
                                       ("densenet121", 96), ("vgg19_bn", 96)])
def test_other_dataset_sizes(name, size):
    model = build_model(name, num_classes=200, in_channels=3, image_size=size, **CHEAP[name]).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, size, size)).shape == (1, 200)


@pytest.mark.parametrize("name", ["small_cnn", "preact_resnet18", "densenet121"])
def test_normalisation_is_applied_before_the_body(name):
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    model = build_model(name, num_classes=10, mean=mean, std=std, **CHEAP[name]).eval()
    x = torch.rand(3, 3, 32, 32)
    by_hand = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.body(by_hand), atol=1e-6)
        assert not torch.allclose(model(x), model.body(x), atol=1e-3)
    assert model.robustfair_config["mean"] == mean and model.robustfair_config["std"] == std


# Published sizes for 10 classes: He et al. 2016 (ResNet-56 0.85M), Zagoruyko & Komodakis 2016
# (WRN-28-10 36.5M), Xie et al. 2017 (ResNeXt-29 8x64d 34.4M, 16x64d 68.1M), LeCun et al. 1998
# (LeNet-5 61,706), and the common CIFAR re-implementations of ResNet-18 / PreAct ResNet-18
# (11.17M), VGG19-BN (20.04M) and DenseNet-121 (6.96M).
@pytest.mark.parametrize("name,kwargs,expected", [
    ("resnet18", {}, 11.17e6),
    ("preact_resnet18", {}, 11.17e6),
    ("resnet56", {}, 0.85e6),
    ("wide_resnet", {"depth": 28, "widen_factor": 10}, 36.5e6),
    ("wide_resnet", {"depth": 34, "widen_factor": 10}, 46.2e6),
    ("vgg19_bn", {}, 20.04e6),
    ("densenet121", {}, 6.96e6),
    ("resnext29", {"cardinality": 8, "bottleneck_width": 64}, 34.4e6),
    ("resnext29", {"cardinality": 16, "bottleneck_width": 64}, 68.1e6),
    ("lenet", {"in_channels": 1, "image_size": 28}, 61706),
])
def test_parameter_counts_match_the_papers(name, kwargs, expected):
    assert meta_param_count(name, **kwargs) == pytest.approx(expected, rel=0.01)


def test_meta_count_equals_a_real_build():
    real = build_model("resnet56", num_classes=10)
    assert sum(p.numel() for p in real.parameters()) == meta_param_count("resnet56")


def _weight_layers(model: nn.Module) -> int:
    """Convolutions and linear layers on the main path (projection shortcuts excluded)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in name
               for name, m in model.named_modules())


@pytest.mark.parametrize("name,kwargs,depth", [
    ("resnet18", {}, 18),
    ("preact_resnet18", {}, 18),
    ("resnet56", {}, 56),
    ("resnet56", {"depth": 20}, 20),
    ("wide_resnet", {"depth": 28, "widen_factor": 10}, 26),  # stem + 6n + fc; "28" is the 6n+4 name
    ("vgg19_bn", {}, 17),  # 16 conv + the single CIFAR classifier layer
    ("resnext29", {}, 29),
    ("densenet121", {}, 121),
    ("lenet", {}, 5),
])
def test_depths_are_the_named_ones(name, kwargs, depth):
    with torch.device("meta"):
        model = build_model(name, num_classes=10, **kwargs)
    assert _weight_layers(model) == depth


def test_vgg_skips_pooling_on_small_images():
    def pools(size):
        m = build_model("vgg19_bn", num_classes=10, image_size=size, width=4)
        return sum(isinstance(l, nn.MaxPool2d) for l in m.modules())

    assert pools(32) == 5 and pools(8) == 3 and pools(96) == 5


def test_no_in_place_activations():
    for name, kwargs in CHEAP.items():
        model = build_model(name, num_classes=10, **kwargs)
        assert not any(getattr(m, "inplace", False) for m in model.modules()), name


@pytest.mark.parametrize("name", ["small_cnn", "preact_resnet18", "resnet56", "densenet121"])
def test_channels_last_gives_the_same_outputs_and_gradients(name):
    model = build_model(name, num_classes=10, **CHEAP[name]).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    grad, = torch.autograd.grad(out.sum(), x)
    model_cl = model.to(memory_format=torch.channels_last)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    out_cl = model_cl(x_cl)
    grad_cl, = torch.autograd.grad(out_cl.sum(), x_cl)
    # random-init deep nets have large logits and gradients: compare relative to their scale
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4 * float(out.detach().abs().max()))
    torch.testing.assert_close(grad_cl, grad, rtol=1e-4, atol=1e-4 * float(grad.abs().max()))


@pytest.mark.parametrize("name", ["small_cnn", "wide_resnet", "resnext29"])
def test_autocast_forward_and_input_gradient(name):
    model = build_model(name, num_classes=10, **CHEAP[name]).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    grad, = torch.autograd.grad(out.float().sum(), x)
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0


def test_wide_resnet_dropout_only_in_train_mode():
    model = build_model("wide_resnet", num_classes=10, depth=10, widen_factor=1, dropout=0.5)
    x = torch.rand(4, 3, 16, 16)
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name,kwargs,needle", [
    ("wide_resnet", {"depth": 27}, "(depth - 4) % 6 == 0"),
    ("wide_resnet", {"depth": 28, "widen_factor": 0}, "widen_factor"),
    ("wide_resnet", {"dropout": 1.5}, "dropout"),
    ("resnet56", {"depth": 57}, "6n+2"),
    ("resnet18", {"stem": "huge"}, "stem"),
    ("small_cnn", {"width": 0}, "width"),
    ("small_cnn", {"batch_norm": "no"}, "batch_norm"),
    ("mlp", {"hidden": "64"}, "hidden"),
    ("mlp", {"hidden": [64, -1]}, "hidden"),
    ("small_cnn", {"depth": 3}, "has no option(s) depth; its options are: width, hidden, batch_norm"),
    ("small_cnn", {"image_size": 0}, "image_size"),
])
def test_bad_arguments_give_one_line_model_errors(name, kwargs, needle):
    with pytest.raises(ModelError) as err:
        build_model(name, num_classes=10, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown model 'resnet1000'.*wide_resnet"):
        build_model("resnet1000", num_classes=10)


def test_a_model_beyond_memory_is_one_line(tmp_path, capsys):
    with pytest.raises(ModelError, match="more than this machine's"):
        build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=100_000_000)
    code, err = cli(["train", "--out", tmp_path / "o", "--dataset", "digits", "--model",
                     "small_cnn", "--model-arg", "width=100000000", "--epochs", "1"], capsys)
    assert_one_line_error(code, err, "more than this machine's")


def test_small_cnn_learns_digits_quickly():
    """The default small_cnn fits real 8x8 digits in a few epochs (it is the test workhorse)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y))
    train, test = perm[:1400], perm[1400:]
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for idx in train[torch.randperm(len(train))].split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.9
