"""Zero the optimizer state (momentum, Adam moments, EMA, accumulators) at pruned entries.

Keras 3 optimizers create one slot variable per model variable with
``add_variable_from_reference``, named ``{variable.path with '/' -> '_'}_{slot}`` and shaped like
the variable; that naming rule is how slots are found here, for any optimizer that follows it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from .variables import read_arrays, write_arrays

__all__ = ["slot_variables", "zero_pruned_slots"]

logger = logging.getLogger(__name__)


def slot_variables(optimizer: Any, variable: keras.Variable) -> list[keras.Variable]:
    """The optimizer variables that hold per-entry state for ``variable``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
        >>> optimizer = keras.optimizers.Adam()
        >>> optimizer.build(model.trainable_variables)
        >>> sorted(v.name for v in slot_variables(optimizer, model.layers[0].kernel))
        ['m_d_kernel_momentum', 'm_d_kernel_velocity']
    """
    prefix = str(variable.path).replace("/", "_") + "_"
    shape = tuple(variable.shape)
    return [
        v
        for v in getattr(optimizer, "variables", [])
        if str(v.name).startswith(prefix) and tuple(v.shape) == shape
    ]


def zero_pruned_slots(
    optimizer: Any, variables: Sequence[keras.Variable], masks: Sequence[np.ndarray]
) -> int:
    """Set every slot entry that belongs to a pruned weight to exactly zero.

    Args:
        optimizer: A Keras optimizer, or ``None`` (nothing to do).
        variables: The prunable variables.
        masks: One boolean mask per variable (``True`` = kept).

    Returns:
        The number of slot variables touched.
    """
    if optimizer is None or not getattr(optimizer, "built", False):
        return 0
    touched = 0
    for variable, mask in zip(variables, masks, strict=True):
        if mask.all():
            continue
        slots = slot_variables(optimizer, variable)
        if slots:
            values = read_arrays(slots)
            write_arrays(slots, [np.where(mask, a, np.zeros((), a.dtype)) for a in values])
            touched += len(slots)
    logger.debug("Zeroed pruned entries of %d optimizer slot variables", touched)
    return touched
