"""float16 / bfloat16 parameters on CPU: scores in float32, zeros kept in training, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch_models import make_mlp, mlp_batch

from ltp_core import LotteryTicketPruner as CorePruner
from ltp_torch import LotteryTicketPruner, PrunerHook

HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
def test_scores_are_float32_copies(dtype: torch.dtype) -> None:
    model = make_mlp().to(dtype)
    pruner = LotteryTicketPruner(model, seed=2)
    assert pruner.core.dtypes == ["float32"] * 3
    copies = [p.detach().float().numpy() for p in pruner.parameters(model)]
    core = CorePruner(copies, names=pruner.names, seed=2)
    core.set_pretrained_weights(copies)
    pruner.set_pretrained_weights(model)
    for strategy, fraction in [("smallest_weights", 0.4), ("large_final_global", 0.3)]:
        pruner.calc_prune_mask(model, fraction, strategy)
        core.calc_prune_mask(copies, fraction, strategy)
        for ours, theirs in zip(pruner.masks, core.masks, strict=True):
            np.testing.assert_array_equal(ours, theirs)
    # The float32 copies are exact: nothing is lost on the way to the core.
    for parameter, copy in zip(pruner.parameters(model), copies, strict=True):
        assert torch.equal(torch.from_numpy(copy).to(dtype), parameter.detach())


@pytest.mark.parametrize("dtype", HALF)
def test_training_in_half_precision_keeps_zeros(dtype: torch.dtype, tmp_path: Path) -> None:
    model = make_mlp().to(dtype)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.6, "smallest_weights")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with PrunerHook(pruner, model, optimizer):
        for seed in range(4):
            x, y = mlp_batch(seed)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x.to(dtype)).float(), y).backward()
            optimizer.step()
            for parameter, mask in zip(pruner.parameters(model), pruner.masks, strict=True):
                assert parameter.dtype == dtype
                assert torch.all(parameter[torch.from_numpy(~mask)] == 0)
                assert torch.all(torch.isfinite(parameter))
    pruner.save_masks(tmp_path / "masks.npz")
    other = LotteryTicketPruner(make_mlp().to(dtype))
    other.load_masks(tmp_path / "masks.npz")
    for ours, theirs in zip(other.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)
