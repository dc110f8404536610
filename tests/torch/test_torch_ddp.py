"""PrunerHook under DistributedDataParallel: gloo backend, 2 CPU processes."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch_models import make_mlp, mlp_batch

from ltp_torch import LotteryTicketPruner, PrunerHook

WORLD_SIZE = 2

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available",
)


def train(ddp: nn.Module, optimizer: torch.optim.Optimizer, rank: int, start: int, steps: int):
    for i in range(start, start + steps):
        x, y = mlp_batch(seed=100 * rank + i, n=8)  # each rank sees different data
        optimizer.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        optimizer.step()
        yield i


def worker(rank: int, store_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        # A file store: no TCP port to pick, so no race with other processes on the machine.
        init_method=f"file://{store_file}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        model = make_mlp(seed=rank)  # different on each rank; DDP broadcasts rank 0's weights
        ddp = DistributedDataParallel(model)
        pruner = LotteryTicketPruner(ddp, seed=7)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
        for _ in train(ddp, optimizer, rank, 0, 3):
            pass
        pruner.set_pretrained_weights(ddp)
        pruner.calc_prune_mask(ddp, 0.5, "large_final")
        pruner.rewind(ddp)
        zero_ok = []
        with PrunerHook(pruner, ddp, optimizer):
            for _ in train(ddp, optimizer, rank, 3, 3):
                zero_ok.append(
                    all(
                        bool(torch.all(p[~torch.from_numpy(m)] == 0))
                        for p, m in zip(pruner.parameters(ddp), pruner.masks, strict=True)
                    )
                )
            pruner.calc_prune_mask(ddp, 0.3, "random")
            for _ in train(ddp, optimizer, rank, 6, 3):
                zero_ok.append(
                    all(
                        bool(torch.all(p[~torch.from_numpy(m)] == 0))
                        for p, m in zip(pruner.parameters(ddp), pruner.masks, strict=True)
                    )
                )
        result = {
            "masks": [torch.from_numpy(m) for m in pruner.masks],
            "weights": [p.detach().clone() for p in model.parameters()],
            "zero_ok": zero_ok,
            "pruned": [int((~m).sum()) for m in pruner.masks],
        }
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        # Both ranks reach the end before either tears down its gloo connections: a peer that
        # closes early makes gloo's background thread abort the other process (SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_masks_identical_and_zeros_stay_zero(tmp_path: Path) -> None:
    store_file = str(tmp_path / "rendezvous")
    mp.spawn(worker, args=(store_file, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [
        torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)
    ]
    for result in results:
        assert result["zero_ok"] == [True] * 6
    first, second = results
    assert first["pruned"] == second["pruned"]
    # 0.5 then 0.3 of what remains: 120 -> 60 -> 42 kept, 80 -> 40 -> 28, 24 -> 12 -> 9.
    assert first["pruned"] == [78, 52, 15]
    for a, b in zip(first["masks"], second["masks"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first["weights"], second["weights"], strict=True):
        assert torch.equal(a, b)
