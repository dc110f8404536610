"""Find a winning ticket in a PyTorch Lightning model: ``find_ticket`` whose ``train`` calls
``Trainer.fit``.

``ltp_torch.find_ticket`` runs iterative magnitude pruning (IMP) with both controls around your
own training code. Here that code is a plain Lightning ``Trainer.fit``: find_ticket finds the
optimizer Lightning builds in ``configure_optimizers`` through torch's global optimizer hooks,
so pruned weights are exactly zero after every optimizer step without any callback. Results,
a table and a plot go to ``lightning_ticket/``; running the script again resumes (or just
reprints) instead of retraining. Offline, on a CPU, in about a minute (seconds with
``LTP_EXAMPLE_SMOKE=1``).

Usage::

    python examples/lightning_find_ticket.py
"""

from __future__ import annotations

import logging
import os

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ltp_core.datasets import load_dataset
from ltp_torch import find_ticket

SMOKE = os.environ.get("LTP_EXAMPLE_SMOKE") == "1"
LEVELS = 1 if SMOKE else 6
EPOCHS = 1 if SMOKE else 8
REWIND_STEP = 10  # late rewinding: survivors go back to their values after 10 steps


class DigitsMLP(pl.LightningModule):
    """A small MLP for 8x8 digits, trained by Lightning."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main() -> None:
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # quiet fit() banners
    data = load_dataset("digits", seed=0)
    train_set = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)

    def train(model: DigitsMLP) -> None:
        trainer = pl.Trainer(
            max_epochs=EPOCHS,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        # find_ticket seeds torch per run, so the shuffling is reproducible run by run.
        trainer.fit(model, DataLoader(train_set, batch_size=64, shuffle=True))

    @torch.no_grad()
    def evaluate(model: DigitsMLP) -> dict[str, float]:
        model.eval()
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        model.train()  # back to training mode for the next run's fit
        return {"accuracy": accuracy}

    records = find_ticket(
        DigitsMLP,  # a factory: random_reinit draws a fresh initialization from it
        train,
        evaluate,
        levels=LEVELS,
        rate=0.3,
        layer_rates={"net.5.weight": 0.5},  # the output layer at half rate
        rewind_iteration=REWIND_STEP,
        out="lightning_ticket",
        progress=False,
    )
    for record in records:
        print(
            f"level {record.level} {record.arm:>13}: {record.weights_remaining:6.1%} of weights "
            f"left, accuracy {record.metrics['accuracy']:.3f}"
        )
    print("results, table.md and the plot are in lightning_ticket/")


if __name__ == "__main__":
    main()
