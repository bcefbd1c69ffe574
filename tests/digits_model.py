"""A small CNN trained on the digits with plain torch, for tests that need a real model."""
import torch
from torch import nn

from robustfair.data import Dataset
from robustfair.models import build_model


def train_small_cnn(ds: Dataset, epochs: int) -> nn.Module:
    """SmallCNN (width 8, with its normaliser) after ``epochs`` of Adam at 1e-2, seed 0; eval mode."""
    torch.manual_seed(0)
    mean, std = ds.stats()
    net = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=mean, std=std,
                      width=8, hidden=32)
    x, y = ds.train.x.float() / 255, ds.train.y
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()
