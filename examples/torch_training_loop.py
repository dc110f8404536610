"""A pruned conv net in a realistic loop: AMP, gradient accumulation, checkpoint and resume.

* mixed precision: ``torch.autocast`` with a ``GradScaler`` (float16 on CUDA, bfloat16 on CPU);
  steps the scaler skips never reach the optimizer, so ``PrunerHook`` has nothing to undo;
* gradient accumulation: the hook runs once per ``optimizer.step()``, not per micro-batch;
* checkpoints: model, optimizer and pruner state in one ``torch.save`` file, read back with
  ``torch.load(..., weights_only=True)`` into fresh objects.

Usage::

    python examples/torch_training_loop.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from ltp_core.datasets import load_dataset
from ltp_torch import LotteryTicketPruner, PrunerHook

ACCUMULATE = 4
MICRO_BATCH = 16


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def train_epochs(model, optimizer, scaler, x, y, device, epochs: int) -> None:
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        chunk = ACCUMULATE * MICRO_BATCH
        for start in range(0, len(x) - chunk + 1, chunk):
            optimizer.zero_grad(set_to_none=True)
            for micro in range(ACCUMULATE):
                index = order[start + micro * MICRO_BATCH : start + (micro + 1) * MICRO_BATCH]
                with torch.autocast(device.type, dtype=amp_dtype):
                    loss = nn.functional.cross_entropy(model(x[index]), y[index]) / ACCUMULATE
                scaler.scale(loss).backward()
            scaler.step(optimizer)  # PrunerHook runs here, after a real step only
            scaler.update()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def zero_fraction(pruner: LotteryTicketPruner, model: nn.Module) -> float:
    parameters = pruner.parameters(model)
    return sum(int((p == 0).sum()) for p in parameters) / sum(p.numel() for p in parameters)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("digits", seed=0)
    to_nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous().to(device)  # noqa: E731
    x_train, x_test = to_nchw(data.x_train), to_nchw(data.x_test)
    y_train, y_test = torch.from_numpy(data.y_train).to(device), torch.from_numpy(data.y_test)
    y_test = y_test.to(device)

    model = make_model().to(device)
    pruner = LotteryTicketPruner(model, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    scaler = torch.amp.GradScaler(device.type)
    train_epochs(model, optimizer, scaler, x_train, y_train, device, epochs=5)
    print(f"dense:  test accuracy {accuracy(model, x_test, y_test):.3f}")

    # Prune 70% by trained magnitude and fine-tune the survivors (no rewind in this example).
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.7, "large_final_global")
    with PrunerHook(pruner, model, optimizer):  # zeroes weights and Adam moments at once
        train_epochs(model, optimizer, scaler, x_train, y_train, device, epochs=3)
    print(
        f"pruned: test accuracy {accuracy(model, x_test, y_test):.3f}, "
        f"{zero_fraction(pruner, model):.1%} of prunable weights are zero"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "pruner": pruner.state_dict(),
            },
            path,
        )
        checkpoint = torch.load(path, weights_only=True, map_location=device)

    # Resume into fresh objects: the pruner is built on the new model, then its state loaded.
    resumed = make_model().to(device)
    resumed.load_state_dict(checkpoint["model"])
    resumed_pruner = LotteryTicketPruner(resumed)
    resumed_pruner.load_state_dict(checkpoint["pruner"])
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=3e-3, weight_decay=1e-2)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    with PrunerHook(resumed_pruner, resumed, resumed_optimizer):
        train_epochs(resumed, resumed_optimizer, scaler, x_train, y_train, device, epochs=2)
    print(
        f"resumed: test accuracy {accuracy(resumed, x_test, y_test):.3f}, "
        f"{zero_fraction(resumed_pruner, resumed):.1%} of prunable weights are zero, "
        f"level {resumed_pruner.level}"
    )


if __name__ == "__main__":
    main()
