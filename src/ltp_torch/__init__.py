"""Lottery-ticket pruning for PyTorch modules and training loops.

Example:
    >>> import copy
    >>> import torch
    >>> from torch import nn
    >>> from ltp_torch import LotteryTicketPruner, PrunerHook
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> pruner = LotteryTicketPruner(net)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> pruner.set_pretrained_weights(net)          # after training
    >>> pruner.calc_prune_mask(net, 0.5, "large_final")
    >>> pruner.rewind(net)                          # initial weights, pruned ones zeroed
    >>> hook = PrunerHook(pruner, net, opt)         # zeros kept after every opt.step()
    >>> hook.remove()
"""

from ltp_torch import selectors
from ltp_torch.checkpoint import load_checkpoint, save_checkpoint
from ltp_torch.hook import PrunerHook
from ltp_torch.parameters import default_prunable, find_prunable_parameters
from ltp_torch.pruner import LotteryTicketPruner
from ltp_torch.rewind import RewindPointHook
from ltp_torch.sparsity import log_sparsity, sparsity_scalars
from ltp_torch.ticket_search import find_ticket

__all__ = [
    "LotteryTicketPruner",
    "PrunerHook",
    "RewindPointHook",
    "default_prunable",
    "find_prunable_parameters",
    "find_ticket",
    "load_checkpoint",
    "log_sparsity",
    "save_checkpoint",
    "selectors",
    "sparsity_scalars",
]
