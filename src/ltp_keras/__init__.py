"""Keras 3 adapter of lottery-tickets (TensorFlow, torch and JAX backends).

The old ``lottery_ticket_pruner`` README runs unchanged apart from the import line:

Example:
    >>> import keras, numpy as np
    >>> from ltp_keras import LotteryTicketPruner, PrunerCallback
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(2)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((16, 4)), np.ones((16, 2))
    >>> initial_weights = model.get_weights()
    >>> pruner = LotteryTicketPruner(model)
    >>> _ = model.fit(x, y, verbose=0)
    >>> pruner.set_pretrained_weights(model)
    >>> model.set_weights(initial_weights)
    >>> pruner.calc_prune_mask(model, 0.5, "large_final")
    >>> _ = model.fit(x, y, verbose=0, callbacks=[PrunerCallback(pruner)])
    >>> [int((keras.ops.convert_to_numpy(v) == 0).sum()) for v in pruner.prunable_variables(model)]
    [16, 8]
"""

from __future__ import annotations

from ltp_core import __version__

from .callbacks import PrunerCallback, RewindCheckpoint
from .checkpoint import load_checkpoint, save_checkpoint
from .masking import MaskConstraint, MaskEnforcer
from .optimizer_state import reset_moving_averages, slot_variables, zero_pruned_slots
from .pruner import LotteryTicketPruner
from .ticket_search import find_ticket
from .variables import SELECTORS, default_prunable_variables, select_prunable_variables

__all__ = [
    "SELECTORS",
    "LotteryTicketPruner",
    "MaskConstraint",
    "MaskEnforcer",
    "PrunerCallback",
    "RewindCheckpoint",
    "__version__",
    "default_prunable_variables",
    "find_ticket",
    "load_checkpoint",
    "reset_moving_averages",
    "save_checkpoint",
    "select_prunable_variables",
    "slot_variables",
    "zero_pruned_slots",
]
