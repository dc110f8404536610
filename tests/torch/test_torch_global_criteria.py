"""ltp_torch accepts the global-by-nature criteria (lamp, random_erk) like any strategy."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ltp_core import compute_masks
from ltp_torch import LotteryTicketPruner


def test_lamp_and_random_erk_match_the_core() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[2].weight.mul_(1e-3)
    pruner = LotteryTicketPruner(net)
    pruner.set_pretrained_weights(net)
    trained = [p.detach().numpy().copy() for p in (net[0].weight, net[2].weight)]
    for name in ("lamp", "random_erk"):
        pruner.reset_masks()
        pruner.calc_prune_mask(net, 0.8, name)
        expected = compute_masks(name, 0.8, trained=trained, seed=[0, 0], names=pruner.names)
        assert all(np.array_equal(a, b) for a, b in zip(pruner.masks, expected, strict=True))
        assert all(m.any() for m in pruner.masks)  # the small-scale head keeps weights
        pruner.apply_pruning(net)
        assert int((net[0].weight == 0).sum() + (net[2].weight == 0).sum()) >= 52
