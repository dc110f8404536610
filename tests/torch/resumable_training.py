"""A small deterministic IMP run that checkpoints and resumes (driven by test_torch_checkpoint).

Three levels of 24 SGD steps on an MLP; after each level the weights are pruned (50% of what
remains, ``large_final``) and rewound to the weights after step 3 (late rewinding, captured by a
``RewindPointHook``). A checkpoint is written every ``--every`` steps and at each level's start;
with an existing checkpoint the run resumes from it. The batch of a step depends only on
``(level, step)``, so an interrupted and resumed run sees the same data as an uninterrupted one.

Usage: python resumable_training.py CHECKPOINT RESULT [--every N] [--delay SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

from ltp_torch import (
    LotteryTicketPruner,
    PrunerHook,
    RewindPointHook,
    load_checkpoint,
    save_checkpoint,
)

LEVELS = 3
STEPS = 24


def batch(level: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * level + step)
    x = torch.randn(32, 12, generator=generator)
    return x, (x[:, :3].sum(dim=1) > 0).long() + (x[:, 3] > 1).long()


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 32),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("result")
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = make_model()
    pruner = LotteryTicketPruner(model, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    hook = PrunerHook(pruner, model, optimizer)
    rewind = RewindPointHook(pruner, model, optimizer, step=3)
    level, step = 0, 0
    if os.path.exists(args.checkpoint):
        extra = load_checkpoint(args.checkpoint, model, optimizer, pruner, rewind=rewind)
        level, step = extra["level"], extra["step"]
        print(f"resumed level={level} step={step}", flush=True)

    model.train()
    while level < LEVELS:
        while step < STEPS:
            x, y = batch(level, step)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
            if step % args.every == 0:
                save_checkpoint(
                    args.checkpoint,
                    model,
                    optimizer,
                    pruner,
                    rewind=rewind,
                    extra={"level": level, "step": step},
                )
                print(f"checkpoint level={level} step={step}", flush=True)
            time.sleep(args.delay)
        pruner.set_pretrained_weights(model)
        pruner.calc_prune_mask(model, 0.5, "large_final")
        pruner.rewind(model)
        hook.refresh()
        level, step = level + 1, 0
        save_checkpoint(
            args.checkpoint,
            model,
            optimizer,
            pruner,
            rewind=rewind,
            extra={"level": level, "step": 0},
        )
        print(f"checkpoint level={level} step=0", flush=True)

    result = {
        "model": model.state_dict(),
        "masks": [torch.from_numpy(mask) for mask in pruner.masks],
        "level": pruner.level,
    }
    torch.save(result, args.result)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
