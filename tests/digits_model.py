"""Small models (a CNN, an MLP) trained on the digits with plain torch, for tests that need a real model."""
import torch
from torch import nn

from robustfair.data import Dataset
from robustfair.models import build_model


def train_small_cnn(ds: Dataset, epochs: int, seed: int = 0) -> nn.Module:
    """SmallCNN (width 8, with its normaliser) after ``epochs`` of Adam at 1e-2 from ``seed``; eval mode."""
    torch.manual_seed(seed)
    mean, std = ds.stats()
    net = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=mean, std=std,
                      width=8, hidden=32)
    return _fit(net, ds, epochs)


def _fit(net: nn.Module, ds: Dataset, epochs: int) -> nn.Module:
    """``epochs`` of Adam at 1e-2 on batches of 64 of the training split; eval mode."""
    return fit(net, ds.train.x.float() / 255, ds.train.y, epochs)


def fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    """``epochs`` of Adam at 1e-2 on batches of 64 of ``(x, y)``; eval mode."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def train_mlp(ds: Dataset, epochs: int, seed: int = 0) -> nn.Module:
    """An MLP (two hidden layers of 64, with its normaliser), trained like :func:`train_small_cnn`."""
    torch.manual_seed(seed)
    mean, std = ds.stats()
    net = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=mean, std=std,
                      hidden=[64, 64])
    return _fit(net, ds, epochs)
