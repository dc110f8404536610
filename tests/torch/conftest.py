"""Settings and fixtures for the PyTorch adapter tests (tiny models, CPU, one thread)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_models import make_convnet, make_mlp

torch.set_num_threads(1)


@pytest.fixture
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture
def convnet() -> nn.Module:
    return make_convnet()
