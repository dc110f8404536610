"""Tiny models and batches for the PyTorch adapter tests."""

from __future__ import annotations

import torch
from torch import nn


def make_mlp(seed: int = 0) -> nn.Module:
    """An MLP with a nested Sequential: prunable 0.weight, 2.0.weight, 2.2.weight."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(12, 10),
        nn.ReLU(),
        nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 3)),
    )


class ConvNet(nn.Module):
    """A small conv net with batch norm: prunable conv1/conv2/head weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.head = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.head(x.flatten(1))


def make_convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ConvNet()


def mlp_batch(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def conv_batch(seed: int = 0, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 8, 8, generator=generator)
    return x, torch.randint(0, 5, (n,), generator=generator)
