"""Iterative magnitude pruning with late rewinding on scikit-learn's digits, in plain PyTorch.

Each level trains the network with the pruned weights held at zero (``PrunerHook``), prunes 20% of
the remaining weights by trained magnitude (the output layer at half rate, as Frankle & Carbin do),
and rewinds the survivors to their values after the first ``REWIND_STEP`` optimizer steps (late
resetting, captured by ``RewindPointHook``). Runs offline on a CPU in well under a minute.

Usage::

    python examples/torch_imp_digits.py
"""

from __future__ import annotations

import torch
from torch import nn

from ltp_core.datasets import load_dataset
from ltp_torch import LotteryTicketPruner, PrunerHook, RewindPointHook

LEVELS = 10
FRACTION = 0.2
EPOCHS = 15
REWIND_STEP = 20
BATCH = 64


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(64, 128), nn.ReLU()),
        nn.Sequential(nn.Linear(128, 64), nn.ReLU()),
        nn.Linear(64, 10),
    )


def train(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)

    model = make_model()
    pruner = LotteryTicketPruner(model, seed=0)
    output_layer = pruner.names[-1]  # "3.weight"

    for level in range(LEVELS + 1):
        # A fresh optimizer per level: no momentum carried over from the previous ticket.
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with PrunerHook(pruner, model, optimizer):
            if level == 0:
                with RewindPointHook(pruner, model, optimizer, step=REWIND_STEP):
                    train(model, optimizer, x_train, y_train)
            else:
                train(model, optimizer, x_train, y_train)
        print(
            f"level {level}: {pruner.cumulative_pruning_rate:6.1%} pruned, "
            f"test accuracy {accuracy(model, x_test, y_test):.3f}"
        )
        pruner.set_pretrained_weights(model)
        pruner.calc_prune_mask(model, FRACTION, "large_final", layer_rates={output_layer: 0.5})
        pruner.rewind(model)  # weights after step REWIND_STEP, pruned ones zeroed


if __name__ == "__main__":
    main()
