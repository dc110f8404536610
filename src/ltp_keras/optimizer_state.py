"""Zero the optimizer state (momentum, Adam moments, EMA, accumulators) at pruned entries.

Keras 3 optimizers keep one list per kind of state (``_momentums``, ``_velocities``,
``_model_variables_moving_average``...), aligned with the variables the optimizer was built on:
the slot of a model variable is the entry at that variable's index
(``optimizer._get_variable_index``), shaped like it. Slots are matched that way, by identity,
never by name (a slot's name ``{path with '/' -> '_'}_{slot}`` is ambiguous: layer ``d``'s kernel
``d/kernel`` and layer ``d_kernel``'s ``d_kernel/kernel`` both start with ``d_kernel_``).
Wrapping optimizers (``LossScaleOptimizer``, ``MultiOptimizer``...) are searched recursively.

An optimizer with ``use_ema=True`` also holds a moving average of every weight, written over the
weights every ``ema_overwrite_frequency`` steps and at the end of ``fit``: weights written outside
training (a rewind, a rescale) restart their averages (:func:`reset_moving_averages`), else the
next overwrite brings the old weights back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from .variables import read_arrays, write_arrays

__all__ = ["reset_moving_averages", "slot_variables", "zero_pruned_slots"]

logger = logging.getLogger(__name__)


def _inner_optimizers(optimizer: Any) -> list[Any]:
    found = []
    for value in vars(optimizer).values():
        candidates = value if isinstance(value, (list, tuple)) else [value]
        for candidate in candidates:
            if candidate is not optimizer and isinstance(candidate, keras.optimizers.Optimizer):
                found.append(candidate)
    return found


def _own_slots(optimizer: Any, variable: keras.Variable) -> list[keras.Variable]:
    if not getattr(optimizer, "built", False) or not hasattr(optimizer, "_get_variable_index"):
        return []
    try:
        index = optimizer._get_variable_index(variable)
    except (KeyError, AttributeError):
        return []
    count = len(getattr(optimizer, "_trainable_variables", ()))
    own = {id(v) for v in getattr(optimizer, "variables", [])}
    shape = tuple(variable.shape)
    # Lists of all the optimizer's (or the model's) variables are not per-variable state.
    skip = {"_variables", "_trainable_variables"}
    slots: list[keras.Variable] = []
    for name, value in vars(optimizer).items():
        if name in skip or isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            continue
        if len(value) != count or index >= count:
            continue
        slot = value[index]
        if (
            isinstance(slot, keras.Variable)
            and id(slot) in own
            and tuple(slot.shape) == shape
            and all(slot is not s for s in slots)
        ):
            slots.append(slot)
    return slots


def slot_variables(optimizer: Any, variable: keras.Variable) -> list[keras.Variable]:
    """The optimizer variables that hold per-entry state for ``variable``.

    Matched by identity (the optimizer's own index of ``variable``), not by name. An optimizer
    that is not built, or does not hold ``variable``, has none.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
        >>> optimizer = keras.optimizers.Adam()
        >>> optimizer.build(model.trainable_variables)
        >>> sorted(v.name for v in slot_variables(optimizer, model.layers[0].kernel))
        ['m_d_kernel_momentum', 'm_d_kernel_velocity']
    """
    slots = _own_slots(optimizer, variable)
    for inner in _inner_optimizers(optimizer):
        slots.extend(s for s in slot_variables(inner, variable) if all(s is not t for t in slots))
    return slots


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


def _moving_averages(optimizer: Any, variable: keras.Variable) -> list[keras.Variable]:
    """The EMA averages of ``variable`` held by ``optimizer`` and the optimizers it wraps."""
    found: list[keras.Variable] = []
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if getattr(optimizer, "use_ema", False) and getattr(optimizer, "built", False) and averages:
        try:
            index = optimizer._get_variable_index(variable)
        except (KeyError, AttributeError):
            index = None
        if index is not None and index < len(averages):
            average = averages[index]
            if isinstance(average, keras.Variable) and tuple(average.shape) == tuple(
                variable.shape
            ):
                found.append(average)
    for inner in _inner_optimizers(optimizer):
        found.extend(a for a in _moving_averages(inner, variable) if all(a is not b for b in found))
    return found


def reset_moving_averages(optimizer: Any, variables: Sequence[keras.Variable]) -> int:
    """Restart the EMA averages (``use_ema=True``) of ``variables`` at their current values.

    Keras overwrites the weights with their averages every ``ema_overwrite_frequency`` steps and
    at the end of ``fit``; averages of weights written since (``pruner.rewind``, DWR) would bring
    the old weights back. ``LotteryTicketPruner.rewind`` and ``apply_dwr`` call this for
    ``model.optimizer``; call it after writing weights yourself (``model.set_weights``).

    Args:
        optimizer: A Keras optimizer, or ``None`` (nothing to do).
        variables: The model variables whose averages restart.

    Returns:
        The number of averages reset.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> optimizer = keras.optimizers.SGD(use_ema=True)
        >>> optimizer.build(model.trainable_variables)
        >>> _ = model.layers[0].kernel.assign(np.full((2, 1), 3.0))
        >>> reset_moving_averages(optimizer, [model.layers[0].kernel])
        1
        >>> (average,) = [s for s in slot_variables(optimizer, model.layers[0].kernel)]
        >>> keras.ops.convert_to_numpy(average).ravel().tolist()
        [3.0, 3.0]
    """
    if optimizer is None:
        return 0
    touched = 0
    for variable in variables:
        averages = _moving_averages(optimizer, variable)
        if averages:
            value = read_arrays([variable])[0]
            write_arrays(averages, [value] * len(averages))
            touched += len(averages)
    logger.debug("Restarted %d EMA averages at the current weights", touched)
    return touched
