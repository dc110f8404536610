"""The same LeNet weights give the same masks in PyTorch, Keras and the NumPy core.

Keras stores a Dense kernel as (in, out) and PyTorch a Linear weight as (out, in); magnitude
rankings do not depend on the layout, so with distinct weight values the masks agree up to that
transpose. (The ``random`` strategy draws in memory order, so its masks differ between layouts.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ltp_core import LotteryTicketPruner as CorePruner
from ltp_torch import LotteryTicketPruner

SIZES = [(784, 300), (300, 100), (100, 10)]
STEPS = [("large_final", 0.5), ("large_final_global", 0.3), ("movement", 0.2)]


def lenet_kernels(seed: int) -> list[np.ndarray]:
    """Keras-layout (in, out) float32 kernels."""
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.1, size=size).astype(np.float32) for size in SIZES]


def torch_lenet() -> nn.Module:
    layers: list[nn.Module] = []
    for fan_in, fan_out in SIZES:
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def load_kernels(model: nn.Module, kernels: list[np.ndarray]) -> None:
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, kernel in zip(linears, kernels, strict=True):
            layer.weight.copy_(torch.from_numpy(kernel.T.copy()))


def torch_masks(initial: list[np.ndarray], trained: list[np.ndarray]) -> list[list[np.ndarray]]:
    model = torch_lenet()
    load_kernels(model, initial)
    pruner = LotteryTicketPruner(model, seed=0)
    load_kernels(model, trained)
    pruner.set_pretrained_weights(model)
    result = []
    for strategy, fraction in STEPS:
        pruner.calc_prune_mask(model, fraction, strategy)
        result.append([m.T for m in pruner.masks])  # back to (in, out)
    return result


def core_masks(initial: list[np.ndarray], trained: list[np.ndarray]) -> list[list[np.ndarray]]:
    pruner = CorePruner(initial, seed=0)
    pruner.set_pretrained_weights(trained)
    result = []
    for strategy, fraction in STEPS:
        pruner.calc_prune_mask(trained, fraction, strategy)
        result.append(pruner.masks)
    return result


def test_torch_masks_equal_core_masks_on_keras_layout() -> None:
    initial, trained = lenet_kernels(0), lenet_kernels(1)
    for ours, theirs in zip(
        torch_masks(initial, trained), core_masks(initial, trained), strict=True
    ):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_torch_masks_equal_keras_masks() -> None:
    keras = pytest.importorskip("keras")
    ltp_keras = pytest.importorskip("ltp_keras")
    initial, trained = lenet_kernels(0), lenet_kernels(1)

    model = keras.Sequential(
        [keras.Input((784,)), *(keras.layers.Dense(n, activation="relu") for _, n in SIZES)]
    )
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer, kernel in zip(dense, initial, strict=True):
        layer.kernel.assign(kernel)
    pruner = ltp_keras.LotteryTicketPruner(model, seed=0)
    for layer, kernel in zip(dense, trained, strict=True):
        layer.kernel.assign(kernel)
    pruner.set_pretrained_weights(model)
    keras_masks = []
    for strategy, fraction in STEPS:
        pruner.calc_prune_mask(model, fraction, strategy)
        keras_masks.append(pruner.masks)

    for ours, theirs in zip(torch_masks(initial, trained), keras_masks, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
