"""Find a winning ticket in your own PyTorch model with your own training loop.

``ltp_torch.find_ticket`` runs iterative magnitude pruning (Frankle & Carbin 2019) around two
functions you write: ``train(model)`` (any loop, any optimizer: pruned weights are held at exactly
zero after every ``optimizer.step()`` without passing the optimizer) and ``evaluate(model)``. Each
level prunes 20% of the remaining weights (the output layer at half rate), rewinds the survivors to
their initial values and trains again; the ``random_reinit`` and ``random_prune`` controls show
whether the ticket's initialization matters. Results, a table and a plot go to ``--out``; running
the same command again resumes without retraining.

Usage::

    python examples/torch_find_ticket.py --out runs/find_ticket
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ltp_torch
from ltp_core.datasets import load_dataset
from ltp_core.experiment import summary_table

SMOKE = os.environ.get("LTP_EXAMPLE_SMOKE") == "1"


def lenet_300_100() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=2 if SMOKE else 6)
    parser.add_argument("--epochs", type=int, default=1 if SMOKE else 10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default="runs/torch_find_ticket")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = load_dataset("digits", seed=0)
    train_set = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)

    def train(model: nn.Module) -> None:
        """Your loop: your optimizer, data and schedule (a fresh optimizer per run)."""
        optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
        loader = DataLoader(train_set, batch_size=60, shuffle=True)  # seeded per run
        model.train()
        for _ in range(args.epochs):
            for x, y in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()  # find_ticket zeroes the pruned weights right after

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        model.eval()
        logits = model(x_test)
        return {
            "accuracy": float((logits.argmax(1) == y_test).float().mean()),
            "loss": float(nn.functional.cross_entropy(logits, y_test)),
        }

    records = ltp_torch.find_ticket(
        lenet_300_100,  # a factory: each seed and the random_reinit control get fresh weights
        train,
        evaluate,
        levels=args.levels,
        rate=0.2,
        layer_rates={"5.weight": 0.5},  # the output layer at half rate
        seeds=args.seeds,
        out=args.out,
    )
    print(summary_table(records))
    print(f"results, table and plot in {args.out}/")


if __name__ == "__main__":
    main()
