"""Keras callbacks: keep pruned weights at zero during ``fit``; capture a late-rewind point."""

from __future__ import annotations

import logging
import sys
from typing import Any

import keras
import numpy as np

from .masking import MaskConstraint, MaskEnforcer
from .pruner import LotteryTicketPruner

__all__ = ["PrunerCallback", "RewindCheckpoint"]

logger = logging.getLogger(__name__)


def _inner(constraint: Any) -> Any:
    while isinstance(constraint, MaskConstraint):
        constraint = constraint.inner
    return constraint


def _own_train_step(model: keras.Model) -> bool:
    """Whether ``model`` trains with Keras' own ``train_step`` (not one of the user's)."""
    if "train_step" in vars(model):
        return False
    for cls in type(model).__mro__:
        if "train_step" in vars(cls):
            return cls.__module__.split(".")[0] == "keras"
    return False


def _masks_gradients(model: keras.Model) -> bool:
    """Gradient masking is used where it was measured faster than the constraint: the
    TensorFlow trainer (JAX fuses the constraint into the compiled update; on torch the
    constraint's bitwise AND measured cheaper than wrapping ``optimizer.apply``), with Keras'
    own ``train_step``, which applies every gradient with ``model.optimizer``. A custom
    ``train_step`` may update variables with optimizers of its own (a GAN's generator and
    discriminator optimizers): only the constraint, applied by every Keras optimizer, holds
    there."""
    return keras.backend.backend() == "tensorflow" and _own_train_step(model)


def _build_train_function(model: keras.Model) -> None:
    """``model.make_train_function(force=True)``, safe to keep alive next to Keras' own."""
    if keras.backend.backend() != "jax":
        model.make_train_function(force=True)
        return
    # ``jax.jit`` shares traces between jit objects of equal functions, and bound methods of one
    # model compare equal: while a masked step built from ``model.train_step`` is alive, a plain
    # one that Keras builds later would reuse its trace (masks included), and vice versa. A
    # fresh closure per build keeps each trace to its own function.
    previous = model.__dict__.get("train_step")
    bound = model.train_step

    def masked_train_step(*args: Any, **kwargs: Any) -> Any:
        return bound(*args, **kwargs)

    model.train_step = masked_train_step
    try:
        model.make_train_function(force=True)
    finally:
        if previous is None:
            del model.train_step
        else:
            model.train_step = previous


def _check_pruner(pruner: Any) -> LotteryTicketPruner:
    if not isinstance(pruner, LotteryTicketPruner):
        raise TypeError(
            f"`pruner` must be an ltp_keras.LotteryTicketPruner. "
            f"Received: pruner of type {type(pruner).__name__}"
        )
    return pruner


_METHODS = ("auto", "constraint")


class _TraceKey:
    """Objects (compared by identity; held, so their ids stay unique) and plain values."""

    def __init__(self, objects: tuple[Any, ...], values: tuple[Any, ...]) -> None:
        self.objects = objects
        self.values = values

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _TraceKey)
            and self.values == other.values
            and len(self.objects) == len(other.objects)
            and all(a is b for a, b in zip(self.objects, other.objects, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]


class _TrainFunction:
    """A masked train function and what it was built for (see ``PrunerCallback``)."""

    def __init__(self, key: _TraceKey, function: Any, masks: list[np.ndarray] | None) -> None:
        self.key = key
        self.function = function
        self.masks = masks


def _callbacks_after(callback: keras.callbacks.Callback) -> list[keras.callbacks.Callback] | None:
    """The callbacks listed after ``callback`` in the ``fit`` call that is dispatching to it
    (found on the caller's frame, Keras' ``CallbackList``); ``None`` when it cannot be told
    (another Keras version's dispatch, or a subclass calling ``on_train_begin`` itself)."""
    frame = sys._getframe(1)
    for _ in range(4):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            listed = list(owner.callbacks)
            for i, other in enumerate(listed):
                if other is callback:
                    return listed[i + 1 :]
            return None
    return None


#: Keras callbacks whose ``on_train_begin`` writes no weights and no optimizer state.
_READ_ONLY_TRAIN_BEGIN = (
    keras.callbacks.History,
    keras.callbacks.ProgbarLogger,
    keras.callbacks.EarlyStopping,
    keras.callbacks.ModelCheckpoint,
    keras.callbacks.CSVLogger,
    keras.callbacks.TensorBoard,
    keras.callbacks.ReduceLROnPlateau,
    keras.callbacks.LearningRateScheduler,
    keras.callbacks.TerminateOnNaN,
)


def _may_write_at_train_begin(callback: keras.callbacks.Callback) -> bool:
    """Whether ``callback``'s ``on_train_begin`` may write weights (``BackupAndRestore`` loads
    its backup there; a user's callback or ``LambdaCallback`` may do anything)."""
    if type(callback) in _READ_ONLY_TRAIN_BEGIN or isinstance(
        callback, (PrunerCallback, RewindCheckpoint)
    ):
        return False
    own = type(callback).on_train_begin is not keras.callbacks.Callback.on_train_begin
    return own or "on_train_begin" in vars(callback)


class PrunerCallback(keras.callbacks.Callback):
    """Train with the pruner's masks: pruned weights are exactly zero after every step.

    In ``on_train_begin`` the callback zeroes the pruned weights and their optimizer state
    (momentum, Adam moments, EMA) and masks inside the compiled step (any backend,
    ``jit_compile`` on or off, any ``steps_per_execution``): on TensorFlow, for the
    optimizers of :data:`~ltp_keras.masking.GRADIENT_MASKING_OPTIMIZERS` (SGD, Adam, AdamW,
    RMSprop, Adagrad...), by zeroing the pruned entries' gradients, which keeps them exactly
    zero; otherwise (JAX, other optimizers, variables with their own constraint) by a mask
    constraint that the optimizer applies after each update. ``on_train_end`` masks once more
    (after an optimizer's EMA overwrite) and removes the masking.

    The masked train function is built once and kept by the callback for later ``fit`` calls:
    it is rebuilt only when something it depends on changed (the model was recompiled, another
    model or optimizer, other trainable variables) or, on JAX and with ``torch.compile``, whose
    compiled steps hold the mask values, when the masks changed. On TensorFlow and eager torch
    the step reads the masks live, so new masks cost no retrace either. A ``fit`` without this
    callback gets Keras' own unmasked train function.

    At the end of each epoch ``logs["sparsity"]`` is the fraction of the prunable weights that
    are pruned, so it shows in the progress bar, ``CSVLogger`` and ``TensorBoard`` (put those
    after this callback in the list). One instance can be reused across ``fit()`` calls; masks
    are read from the pruner at each ``fit``, and again when they change during ``fit``
    (gradual pruning from another callback): the newly pruned weights and their optimizer
    state are zeroed before the next step and at that epoch's end.

    Args:
        pruner: The :class:`LotteryTicketPruner` holding the masks.
        use_dwr: Apply dynamic weight rescaling once when training starts with masks this
            callback has not rescaled for yet, or after ``pruner.rewind(model)`` (never
            compounding across epochs or fits).
            ``1``/``0`` are accepted like ``True``/``False`` (lottery-ticket-pruner 0.8.1).
        method: ``"auto"`` (mask gradients where that is exact and faster, else the
            constraint) or ``"constraint"`` (always the mask constraint).

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile("sgd", "mse")
        >>> pruner = LotteryTicketPruner(model)
        >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
        >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0,
        ...                     callbacks=[PrunerCallback(pruner)])
        >>> int((keras.ops.convert_to_numpy(model.layers[0].kernel) == 0).sum())
        4
        >>> history.history["sparsity"]
        [0.5]
    """

    def __init__(
        self, pruner: LotteryTicketPruner, use_dwr: bool = False, *, method: str = "auto"
    ) -> None:
        super().__init__()
        pruner = _check_pruner(pruner)
        if isinstance(use_dwr, (int, np.integer)) and not isinstance(use_dwr, (bool, np.bool_)):
            if use_dwr not in (0, 1):
                raise ValueError(f"`use_dwr` must be a bool, 0 or 1. Received: use_dwr={use_dwr!r}")
        elif not isinstance(use_dwr, (bool, np.bool_)):
            raise TypeError(f"`use_dwr` must be a bool. Received: use_dwr={use_dwr!r}")
        if method not in _METHODS:
            raise ValueError(f"`method` must be one of {_METHODS}. Received: method={method!r}")
        self.pruner = pruner
        self.use_dwr = bool(use_dwr)
        self.method = method
        self._enforcer: MaskEnforcer | None = None
        self._dwr_masks: list[np.ndarray] | None = None
        self._dwr_rewinds = 0
        self._train_function: _TrainFunction | None = None
        self._fitting = False
        self._masks_seen: object = None
        self._restorers: list[keras.callbacks.EarlyStopping] = []
        self._first_batch = False

    def _masks_token(self) -> object:
        """The core's list of masks: replaced (never edited in place) whenever the masks
        change (``calc_prune_mask``, ``set_masks``, ``reset_masks``, ``load_state_dict``)."""
        return self.pruner.core._masks

    def _masks_are_new_for_dwr(self) -> bool:
        """Masks not rescaled for yet, or weights rewound by ``pruner.rewind`` since."""
        masks = self.pruner.masks
        rewinds = self.pruner._rewinds
        if (
            self._dwr_masks is not None
            and self._dwr_rewinds == rewinds
            and all(np.array_equal(a, b) for a, b in zip(self._dwr_masks, masks, strict=True))
        ):
            return False
        self._dwr_masks = [m.copy() for m in masks]
        self._dwr_rewinds = rewinds
        return True

    def _enforcer_for(self, variables: list[keras.Variable]) -> MaskEnforcer:
        """The enforcer of the last fit when it masks the same variables (a kept TensorFlow
        step reads its mask variables), else a new one."""
        enforcer = self._enforcer
        masks = self.pruner.masks
        if (
            enforcer is not None
            and len(enforcer.variables) == len(variables)
            and all(a is b for a, b in zip(enforcer.variables, variables, strict=True))
        ):
            enforcer.update(masks)
            return enforcer
        return MaskEnforcer(variables, masks)

    def _trace_key(self, model: keras.Model, enforcer: MaskEnforcer) -> _TraceKey:
        """Everything a masked train function depends on besides the weights' values."""
        objects = (
            model,
            model.optimizer,
            # A new loss tracker per ``compile()``: detects recompiling with the same optimizer.
            getattr(model, "_loss_tracker", None),
            enforcer,
            keras.distribution.distribution(),
            *(_inner(v.constraint) for v in enforcer.variables),
            *model.trainable_variables,
        )
        values = (
            model.jit_compile,
            model.run_eagerly,
            model.steps_per_execution,
            tuple(enforcer.modes),
            len(model.trainable_variables),
        )
        return _TraceKey(objects, values)

    def _step_holds_mask_values(self, model: keras.Model) -> bool:
        backend = keras.backend.backend()
        return backend == "jax" or (backend == "torch" and bool(model.jit_compile))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        variables = self.pruner.prunable_variables(model)
        if self._enforcer is not None:
            self._enforcer.remove()
        self._take_masks(model)
        enforcer = self._enforcer_for(variables)
        self._enforcer = enforcer
        optimizer = model.optimizer if self.method == "auto" and _masks_gradients(model) else None
        enforcer.install(optimizer, ema_optimizer=model.optimizer)
        key = self._trace_key(model, enforcer)
        masks = (
            [m.copy() for m in self.pruner.masks] if self._step_holds_mask_values(model) else None
        )
        kept = self._train_function
        if (
            kept is not None
            and kept.key == key
            and (
                masks is None
                or (
                    kept.masks is not None
                    and all(np.array_equal(a, b) for a, b in zip(kept.masks, masks, strict=True))
                )
            )
        ):
            model.train_function = kept.function
            logger.debug("PrunerCallback: reusing the masked train function")
        else:
            # The step Keras made for this fit has no masking (and JAX bakes mask values in at
            # trace time): build one that masks; it traces at its first call.
            self._build_masked_step(model, key, masks)
            logger.debug("PrunerCallback: built a masked train function")
        self._masks_seen = self._masks_token()
        self._fitting = True
        later = _callbacks_after(self)
        if later is None:  # the list could not be found: assume a writer (~12 ms per fit)
            logger.debug(
                "PrunerCallback: fit's callback list not found; masking again before step 1, "
                "and EarlyStopping(restore_best_weights=True) listed after it is not masked"
            )
        # Mask again before the first step if a callback listed after this one may write
        # weights or optimizer state in its on_train_begin (BackupAndRestore).
        self._first_batch = later is None or any(_may_write_at_train_begin(c) for c in later)
        later = later or []
        # EarlyStopping(restore_best_weights=True) listed after this callback restores its
        # weights after our on_train_end: weights saved before the masks last changed would
        # come back unpruned.
        self._restorers = [
            c
            for c in later
            if isinstance(c, keras.callbacks.EarlyStopping) and c.restore_best_weights
        ]

    def _take_masks(self, model: keras.Model) -> None:
        """Zero the pruned weights and their optimizer state; with ``use_dwr``, rescale once
        per new set of masks, when they take effect."""
        self.pruner.apply_pruning(model)
        if self.use_dwr and self._masks_are_new_for_dwr():
            self.pruner.apply_dwr(model)

    def _build_masked_step(
        self, model: keras.Model, key: _TraceKey, masks: list[np.ndarray] | None
    ) -> None:
        """Give ``model`` a train function that masks (it traces at its first call) and keep it
        for the next ``fit`` with the same ``key`` (and ``masks``, where the step holds them)."""
        _build_train_function(model)
        self._train_function = _TrainFunction(key, model.train_function, masks)

    def _follow_new_masks(self) -> None:
        """Masks changed during ``fit`` (e.g. gradual pruning from another callback): zero the
        newly pruned weights and their optimizer state (and rescale once with ``use_dwr``) and
        mask with the new masks from the next step on (rebuilding the train function where it
        holds the mask values)."""
        if not self._fitting or self._masks_token() is self._masks_seen:
            return
        model = self.model
        enforcer = self._enforcer
        self._take_masks(model)
        if enforcer is not None:
            enforcer.update(self.pruner.masks)
            if self._step_holds_mask_values(model):
                masks = [m.copy() for m in self.pruner.masks]
                self._build_masked_step(model, self._trace_key(model, enforcer), masks)
        self._masks_seen = self._masks_token()
        logger.debug("PrunerCallback: masks changed during fit; now masking with the new ones")

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_batch:
            # A callback listed after this one may have written weights and optimizer state in
            # its on_train_begin (BackupAndRestore loads its backup there): zero the pruned
            # entries again before the first step. Masked gradients never zero a weight, and
            # restored moments would move it.
            self._first_batch = False
            self.pruner.apply_pruning(self.model)
        self._follow_new_masks()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Validation during fit sees the new masks too.
        self._follow_new_masks()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._follow_new_masks()
        if logs is not None:
            logs["sparsity"] = self.pruner.cumulative_pruning_rate

    def _mask_weights_to_restore(self, model: keras.Model) -> None:
        """Apply the masks to the weights that a later ``EarlyStopping`` will restore."""
        restorers, self._restorers = self._restorers, []
        pending = [c for c in restorers if isinstance(getattr(c, "best_weights", None), list)]
        if not pending:
            return
        index: dict[int, int] = {}
        for i, weight in enumerate(model.weights):
            index.setdefault(id(weight), i)
        variables = self.pruner.prunable_variables(model)
        for restorer in pending:
            saved = restorer.best_weights
            masked = 0
            for variable, mask in zip(variables, self.pruner.masks, strict=True):
                i = index.get(id(variable))
                if i is None or i >= len(saved) or np.shape(saved[i]) != mask.shape:
                    continue
                value = np.asarray(saved[i])
                masked += int(np.count_nonzero(value[~mask]))
                saved[i] = np.where(mask, value, np.zeros((), value.dtype))
            if masked:
                logger.info(
                    "PrunerCallback: masked %d pruned weights in the weights that %s restores "
                    "(saved before the masks last changed)",
                    masked,
                    type(restorer).__name__,
                )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        self._fitting = False
        self.pruner.apply_pruning(model)
        self._mask_weights_to_restore(model)
        if self._enforcer is not None:
            self._enforcer.remove()
        # Keras keeps ``model.train_function`` across fits: hand it back unmasked (Keras builds a
        # plain one at the next fit); this callback keeps the masked one for its next fit.
        model.train_function = None


class RewindCheckpoint(keras.callbacks.Callback):
    """Capture the weights after ``iteration`` steps (or ``epoch`` epochs) as the rewind point.

    Late resetting (Frankle et al. 2019, "Stabilizing the lottery ticket hypothesis"): rewind
    to early-training weights instead of the initialization. Steps are counted from the start
    of training: a ``fit`` that continues it (``initial_epoch=e``, or ``BackupAndRestore``
    resuming at epoch ``e``) counts from ``e`` epochs' steps, so a loop of
    ``fit(initial_epoch=e, epochs=e + 1)`` captures at step ``iteration`` overall. With
    ``steps_per_execution > 1`` the capture happens at the first callback at or after the
    requested step (a warning says so when it is later). By default
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
        if not isinstance(once, (bool, np.bool_)):
            raise TypeError(f"`once` must be a bool. Received: once={once!r}")
        self.once = bool(once)
        self.captured_at: int | None = None
        self._steps_before_epoch = 0
        self._steps = 0
        self._epochs = 0
        self._captured_this_fit = False
        self._first_epoch_seen = True

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
        self._first_epoch_seen = False
        if self._wanted() and (self.iteration == 0 or self.epoch == 0):
            self._capture()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_epoch_seen:
            return
        self._first_epoch_seen = True
        if not epoch:
            return
        # A fit that continues training (``initial_epoch=``, or BackupAndRestore resuming):
        # count from the steps of the epochs before it, not from zero.
        steps = (self.params or {}).get("steps")
        self._epochs = epoch
        if steps:
            self._steps_before_epoch = self._steps = epoch * int(steps)
        else:
            logger.warning(
                "RewindCheckpoint: this fit starts at epoch %d with an unknown number of steps "
                "per epoch; steps are counted from its start",
                epoch,
            )
        if self._captured_this_fit and self.captured_at == 0:
            logger.warning(
                "RewindCheckpoint captured at the start of a fit that begins at epoch %d (after "
                "%s steps), not before the first step",
                epoch,
                self._steps if steps else "unknown",
            )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._first_epoch_seen = True
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
