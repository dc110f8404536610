"""ltp_torch: the pruner's masks cannot be edited behind its back; warnings come through."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ltp_core import LayerCollapseWarning
from ltp_torch import LotteryTicketPruner


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def test_masks_and_core_arrays_are_read_only() -> None:
    net = _net()
    pruner = LotteryTicketPruner(net)
    pruner.calc_prune_mask(net, 0.5, "smallest_weights")
    before = [m.copy() for m in pruner.masks]
    for arrays in (pruner.core.masks, pruner.core.rewind_weights):
        with pytest.raises(ValueError, match="read-only"):
            arrays[0][...] = True
    copies = pruner.masks  # copies: writable, usable with torch.from_numpy, detached
    copies[0][...] = True
    assert torch.from_numpy(copies[0]).all()
    assert all(np.array_equal(a, b) for a, b in zip(before, pruner.masks, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable NumPy array" warning from torch
        pruner.rewind(net)
        pruner.apply_pruning(net)
    assert int((net[0].weight == 0).sum()) == 24


def test_min_layer_density_is_passed_through() -> None:
    net = _net()
    with torch.no_grad():
        net[2].weight.mul_(1e-3)  # a small-scale head: the global ranking empties it
    pruner = LotteryTicketPruner(net)
    pruner.set_pretrained_weights(net)
    with pytest.warns(LayerCollapseWarning, match="2.weight"):
        pruner.calc_prune_mask(net, 0.4, "large_final_global")
    pruner.reset_masks()
    pruner.calc_prune_mask(net, 0.4, "large_final_global", min_layer_density=0.2)
    assert int(pruner.masks[1].sum()) == 4  # ceil(0.2 * 18)
    with pytest.raises(ValueError, match=r"min_layer_density=1\.0"):
        pruner.calc_prune_mask(net, 0.4, "large_final_global", min_layer_density=1.0)
    assert pruner.level == 1
