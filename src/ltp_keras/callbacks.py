"""Keras callbacks: keep pruned weights at zero during ``fit``; capture a late-rewind point."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from .masking import MaskEnforcer
from .pruner import LotteryTicketPruner

__all__ = ["PrunerCallback", "RewindCheckpoint"]

logger = logging.getLogger(__name__)


def _check_pruner(pruner: Any) -> LotteryTicketPruner:
    if not isinstance(pruner, LotteryTicketPruner):
        raise TypeError(
            f"`pruner` must be an ltp_keras.LotteryTicketPruner. "
            f"Received: pruner of type {type(pruner).__name__}"
        )
    return pruner


class PrunerCallback(keras.callbacks.Callback):
    """Train with the pruner's masks: pruned weights are exactly zero after every step.

    In ``on_train_begin`` the callback zeroes the pruned weights and their optimizer state
    (momentum, Adam moments, EMA), installs a mask constraint on each prunable variable and
    rebuilds the train function, so the masking runs inside the compiled step (any backend,
    ``jit_compile`` on or off, any ``steps_per_execution``). ``on_train_end`` masks once more
    (after an optimizer's EMA overwrite) and removes the constraints. One instance can be reused
    across ``fit()`` calls; masks are read from the pruner at each ``fit``.

    Args:
        pruner: The :class:`LotteryTicketPruner` holding the masks.
        use_dwr: Apply dynamic weight rescaling once when training starts with masks this
            callback has not rescaled for yet (never compounding across epochs or fits).

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile("sgd", "mse")
        >>> pruner = LotteryTicketPruner(model)
        >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
        >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0,
        ...               callbacks=[PrunerCallback(pruner)])
        >>> int((keras.ops.convert_to_numpy(model.layers[0].kernel) == 0).sum())
        4
    """

    def __init__(self, pruner: LotteryTicketPruner, use_dwr: bool = False) -> None:
        super().__init__()
        self.pruner = _check_pruner(pruner)
        if not isinstance(use_dwr, (bool, np.bool_)):
            raise TypeError(f"`use_dwr` must be a bool. Received: use_dwr={use_dwr!r}")
        self.use_dwr = bool(use_dwr)
        self._enforcer: MaskEnforcer | None = None
        self._dwr_masks: list[np.ndarray] | None = None

    def _masks_are_new_for_dwr(self) -> bool:
        masks = self.pruner.masks
        if self._dwr_masks is not None and all(
            np.array_equal(a, b) for a, b in zip(self._dwr_masks, masks, strict=True)
        ):
            return False
        self._dwr_masks = [m.copy() for m in masks]
        return True

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        if self._enforcer is not None:
            self._enforcer.remove()
        self.pruner.apply_pruning(model)
        if self.use_dwr and self._masks_are_new_for_dwr():
            self.pruner.apply_dwr(model)
        self._enforcer = self.pruner.enforce_masks(model).install()
        # The step compiled before this callback ran has no constraints (and JAX bakes mask
        # values in at trace time): rebuild it so every step of this fit masks.
        model.make_train_function(force=True)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        self.pruner.apply_pruning(model)
        if self._enforcer is not None:
            self._enforcer.remove()
            self._enforcer = None
        # Drop the masked step so a later fit without this callback compiles a plain one.
        model.train_function = None


class RewindCheckpoint(keras.callbacks.Callback):
    """Capture the weights after ``iteration`` steps (or ``epoch`` epochs) as the rewind point.

    Late resetting (Frankle et al. 2019, "Stabilizing the lottery ticket hypothesis"): rewind
    to early-training weights instead of the initialization. Steps are counted from the start
    of the ``fit`` call; with ``steps_per_execution > 1`` the capture happens at the first
    callback at or after the requested step (a warning says so when it is later). By default
    it captures once, in the first ``fit`` that gets there, and is inert afterwards, so the same
    callback list can be passed to every pruning level.

    Args:
        pruner: The :class:`LotteryTicketPruner` that stores the rewind point.
        iteration: Optimizer steps to train before capturing (``0`` = at the start).
        epoch: Epochs to train before capturing; give exactly one of ``iteration``/``epoch``.
        once: Capture only once per callback instance.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile("sgd", "mse")
        >>> pruner = LotteryTicketPruner(model)
        >>> checkpoint = RewindCheckpoint(pruner, iteration=2)
        >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=2, verbose=0,
        ...               callbacks=[checkpoint])
        >>> checkpoint.captured_at
        2
    """

    def __init__(
        self,
        pruner: LotteryTicketPruner,
        iteration: int | None = None,
        *,
        epoch: int | None = None,
        once: bool = True,
    ) -> None:
        super().__init__()
        self.pruner = _check_pruner(pruner)
        if (iteration is None) == (epoch is None):
            raise ValueError(
                f"Give exactly one of `iteration` and `epoch`. "
                f"Received: iteration={iteration!r}, epoch={epoch!r}"
            )
        for name, value in (("iteration", iteration), ("epoch", epoch)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0
            ):
                raise ValueError(f"`{name}` must be a non-negative int. Received: {name}={value!r}")
        self.iteration = None if iteration is None else int(iteration)
        self.epoch = None if epoch is None else int(epoch)
        self.once = bool(once)
        self.captured_at: int | None = None
        self._steps_before_epoch = 0
        self._steps = 0
        self._epochs = 0
        self._captured_this_fit = False

    def _wanted(self) -> bool:
        return not self._captured_this_fit and not (self.once and self.captured_at is not None)

    def _capture(self) -> None:
        self.pruner.set_rewind_weights(self.model)
        self.captured_at = self._steps
        self._captured_this_fit = True
        if self.iteration is not None and self._steps != self.iteration:
            logger.warning(
                "RewindCheckpoint captured after step %d, not %d (steps_per_execution does "
                "not divide it)",
                self._steps,
                self.iteration,
            )

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._steps_before_epoch = 0
        self._steps = 0
        self._epochs = 0
        self._captured_this_fit = False
        if self._wanted() and (self.iteration == 0 or self.epoch == 0):
            self._capture()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # ``batch`` is the index of the last step run in this epoch (also with
        # steps_per_execution > 1), so steps done = steps of earlier epochs + batch + 1.
        self._steps = self._steps_before_epoch + batch + 1
        if self.iteration is not None and self._steps >= self.iteration and self._wanted():
            self._capture()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps_before_epoch = self._steps
        self._epochs += 1
        if self.epoch is not None and self._epochs == self.epoch and self._wanted():
            self._capture()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._wanted():
            logger.warning(
                "RewindCheckpoint did not capture: training ended after %d steps, before "
                "iteration=%s / epoch=%s",
                self._steps,
                self.iteration,
                self.epoch,
            )
