"""Layer collapse under global magnitude pruning, and its two remedies, measured on digits.

A small MLP whose output layer starts at zero (a common choice for classifier heads) is trained
densely, then pruned in one shot to a high sparsity with three global strategies:

* ``large_final_global``: one magnitude threshold across layers. The head's weights are still
  small after training, so the threshold removes all of them: the network outputs a constant.
* ``large_final_global`` with ``min_layer_density=0.01``: every layer keeps at least 1% of its
  weights; the exact global count comes from the next-ranked weights of the other layers.
* ``lamp``: layer-adaptive magnitude scores (Lee et al. 2021), which keep each layer's largest
  weights.

Each pruned network is then fine-tuned with its mask held by ``PrunerHook`` and evaluated.
Runs offline on a CPU in about a minute.

Usage::

    python examples/layer_collapse.py
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from ltp_core import LayerCollapseWarning
from ltp_core.datasets import load_dataset
from ltp_torch import LotteryTicketPruner, PrunerHook

SPARSITY = 0.98
STEPS = 100 if os.environ.get("LTP_EXAMPLE_SMOKE") else 600
BATCH = 64


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    nn.init.zeros_(model[4].weight)  # zero-initialised head
    return model


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pruner=None) -> None:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    hook = PrunerHook(pruner, model, optimizer) if pruner is not None else None
    for _ in range(STEPS):
        index = torch.randint(0, len(x), (BATCH,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
    if hook is not None:
        hook.remove()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    data = load_dataset("digits")
    x, y = torch.tensor(data.x_train).flatten(1), torch.tensor(data.y_train).long()
    xt, yt = torch.tensor(data.x_test).flatten(1), torch.tensor(data.y_test).long()
    dense = make_model()
    train(dense, x, y)
    trained = {k: v.clone() for k, v in dense.state_dict().items()}
    print(f"dense: test accuracy {accuracy(dense, xt, yt):.4f}")
    print(f"one-shot pruning to {SPARSITY:.0%} sparsity, then {STEPS} fine-tuning steps\n")
    print(
        "| strategy | density per layer (64x512, 512x512, 512x10) | collapse warning "
        "| accuracy before fine-tuning | after |"
    )
    print("|---|---|---|---|---|")
    for label, strategy, floor in (
        ("large_final_global", "large_final_global", 0.0),
        ("large_final_global, min_layer_density=0.01", "large_final_global", 0.01),
        ("lamp", "lamp", 0.0),
    ):
        model = make_model()
        model.load_state_dict(trained)
        pruner = LotteryTicketPruner(model)
        pruner.set_pretrained_weights(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LayerCollapseWarning)
            pruner.calc_prune_mask(model, SPARSITY, strategy, min_layer_density=floor)
        warned = any(issubclass(w.category, LayerCollapseWarning) for w in caught)
        pruner.apply_pruning(model)
        before = accuracy(model, xt, yt)
        train(model, x, y, pruner)
        densities = ", ".join(f"{float(m.mean()):.2%}" for m in pruner.masks)
        print(
            f"| {label} | {densities} | {'yes' if warned else 'no'} | {before:.4f} "
            f"| {accuracy(model, xt, yt):.4f} |"
        )


if __name__ == "__main__":
    main()
