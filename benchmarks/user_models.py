"""Models of the kind users bring to ``ltp imp --model module:function`` (for ``bench_imp.py``).

Neither is one of the built-in paper models, so ``ltp imp`` trains their replicas together
through ``torch.func.vmap`` (:mod:`ltp_torch.functional_stack`) rather than the hand-built
stacked program of :mod:`ltp_torch.batched`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """Flattened input, a BatchNorm'd projection, one GELU/LayerNorm residual block, a head."""

    def __init__(self, features: int, num_classes: int, width: int = 256) -> None:
        super().__init__()
        self.inp = nn.Linear(features, width)
        self.norm = nn.BatchNorm1d(width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.inp(x.flatten(1))))
        return self.head(h + self.block(h))


def residual_mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``ltp imp --model user_models:residual_mlp`` (any input shape)."""
    return ResidualMLP(math.prod(input_shape), num_classes)


def bn_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two 3x3 conv/BatchNorm/SiLU stages, global average pooling, a linear head (images
    ``(channels, height, width)``)."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.SiLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
