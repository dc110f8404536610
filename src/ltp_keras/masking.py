"""Keep pruned weights at exactly zero inside the compiled train step.

Keras 3 optimizers apply ``variable.constraint`` right after every update, inside the train step
that ``fit`` compiles (``tf.function``/XLA, ``jax.jit``, ``torch.compile`` or eager), once per
optimizer step even with ``steps_per_execution > 1``. A mask constraint therefore keeps zeros
without any per-batch Python work, and it also works in the JAX trainer, whose live state lives
outside the variables during ``fit``. Measured alternatives (a per-batch ``set_weights`` or
``assign`` from a callback) cost far more; see ``docs/keras.md``.

For optimizers whose update of an entry with zero weight, zero gradient and zero state is exactly
zero (:data:`GRADIENT_MASKING_OPTIMIZERS`), masking the gradients instead skips the constraint's
extra read-and-assign of every kernel after each update, measurably faster on TensorFlow; every
other optimizer (and every variable with a constraint of its own) keeps the constraint.

Pruned entries are *selected* to zero (``where(mask, w, 0)``, or on torch and TensorFlow a
bitwise AND of the value's bits with an integer mask, which is as exact and cheaper), never
multiplied by the mask: an overflowed step's ``inf`` times ``0`` would be ``NaN``.

The layer's own constraint (``kernel_constraint=...``) runs first and is restored on removal;
layer configs are never touched, so saved models load without custom objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import keras
import numpy as np

from .optimizer_state import zero_pruned_slots

__all__ = [
    "GRADIENT_MASKING_OPTIMIZERS",
    "MaskConstraint",
    "MaskEnforcer",
    "masks_gradients_exactly",
    "select_kept",
]

logger = logging.getLogger(__name__)

#: Keras optimizer classes (exact types, not subclasses) whose update leaves an entry at exactly
#: zero when its weight, gradient and optimizer state are zero, whatever the other entries hold:
#: each update is elementwise and ``0 * x``-free at such an entry (SGD and momentum: ``m = 0``;
#: Adam, AdamW, Adamax, Nadam: ``m / (sqrt(v) + eps) = 0``; RMSprop and Adagrad:
#: ``g / sqrt(acc + eps) = 0``; Adadelta: ``0 * ratio``; Lion: ``sign(0) = 0``; decoupled weight
#: decay: ``w * decay = 0``). Not listed, so masked by the constraint: Ftrl (its update divides by
#: ``accumulator ** -power`` differences), Lamb, Adafactor and Muon (they mix entries through norms
#: or factored statistics), LossScaleOptimizer, and any optimizer with ``clipnorm`` or
#: ``global_clipnorm`` (a non-finite norm would reach every entry). Each listed class is checked
#: by a test that trains with masked gradients and asserts exact zeros after every step.
GRADIENT_MASKING_OPTIMIZERS: frozenset[str] = frozenset(
    {"SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Lion"}
)


def masks_gradients_exactly(optimizer: Any) -> bool:
    """Whether masking the gradients keeps pruned entries of ``optimizer``'s variables at zero.

    True for the Keras optimizer classes in :data:`GRADIENT_MASKING_OPTIMIZERS` (Keras' own
    class, not a user's subclass, which may change the update) without ``clipnorm`` or
    ``global_clipnorm``.

    Example:
        >>> import keras
        >>> masks_gradients_exactly(keras.optimizers.Adam()), masks_gradients_exactly(
        ...     keras.optimizers.Ftrl())
        (True, False)
    """
    cls = type(optimizer)
    public = getattr(keras.optimizers, cls.__name__, None)
    return (
        cls.__name__ in GRADIENT_MASKING_OPTIMIZERS
        # Keras' own class (the torch backend instantiates a backend subclass of it).
        and isinstance(public, type)
        and isinstance(optimizer, public)
        and cls.__module__.split(".")[0] == "keras"
        and getattr(optimizer, "clipnorm", None) is None
        and getattr(optimizer, "global_clipnorm", None) is None
    )


def _make_select() -> Callable[[Any, Any], Any]:
    """``where(keep, value, 0)`` with the backend's own op (no ``keras.ops`` dispatch)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def select_tf(keep: Any, value: Any) -> Any:
            # As on torch, a bitwise AND with an integer mask of the value's width: outside XLA
            # ``tf.where`` broadcasting a scalar zero measured about 2x its cost per kernel on
            # CPU (one extra pass over every kernel per step, a few % of a LeNet step).
            if keep.dtype != tf.bool and keep.dtype.size == value.dtype.size:
                bits = tf.bitwise.bitwise_and(tf.bitcast(value, keep.dtype), keep)
                return tf.bitcast(bits, value.dtype)
            if keep.dtype != tf.bool:
                keep = tf.not_equal(keep, 0)
            return tf.where(keep, value, tf.zeros((), value.dtype))

        return select_tf
    if backend == "torch":
        import torch

        def select_torch(keep: Any, value: Any) -> Any:
            # ``torch.where`` is ~10x slower than a multiply on CPU; a bitwise AND of the
            # value's bits with an integer mask of the same width (-1 kept, 0 pruned) is as fast
            # and exact: kept entries keep their bits (inf, NaN too), pruned ones become +0.0.
            if keep.dtype != torch.bool and keep.element_size() == value.element_size():
                return (value.detach().view(keep.dtype) & keep).view(value.dtype)
            return torch.where(keep != 0, value, value.new_zeros(()))

        return select_torch
    if backend == "jax":
        import jax.numpy as jnp

        return lambda keep, value: jnp.where(keep, value, jnp.zeros((), value.dtype))
    return lambda keep, value: keras.ops.where(keep, value, keras.ops.zeros((), value.dtype))


_select = _make_select()

# On torch and TensorFlow, masks are stored as integer bit masks (see ``_make_select``).
_BITS_MASKS = keras.backend.backend() in ("torch", "tensorflow")
_INT_OF_WIDTH = {"float16": "int16", "bfloat16": "int16", "float32": "int32", "float64": "int64"}


def _stored_mask(mask: Any, variable: keras.Variable) -> tuple[np.ndarray, str]:
    """The array (and dtype) a mask variable holds for ``variable``: bools, or on torch and
    TensorFlow an integer of the variable's width, ``-1`` where kept and ``0`` where pruned."""
    keep = np.asarray(mask, dtype=bool)
    int_dtype = _INT_OF_WIDTH.get(keras.backend.standardize_dtype(variable.dtype))
    if _BITS_MASKS and int_dtype is not None:
        return np.where(keep, -1, 0).astype(int_dtype), int_dtype
    return keep, "bool"


def select_kept(keep: Any, value: Any) -> Any:
    """``value`` where ``keep`` is true, exactly ``0`` elsewhere (also where ``value`` is inf/NaN).

    Args:
        keep: A boolean tensor or variable (``True`` = kept), or a 0/1 numeric one.
        value: A tensor or variable of the same shape.

    Example:
        >>> import keras, numpy as np
        >>> keep = np.array([True, False])
        >>> keras.ops.convert_to_numpy(select_kept(keep, np.array([np.inf, np.inf]))).tolist()
        [inf, 0.0]
    """
    keep = keep.value if isinstance(keep, keras.Variable) else keras.ops.convert_to_tensor(keep)
    value = value.value if isinstance(value, keras.Variable) else keras.ops.convert_to_tensor(value)
    if keras.backend.standardize_dtype(keep.dtype) != "bool":
        keep = keras.ops.not_equal(keep, 0)
    return _select(keep, value)


class MaskConstraint(keras.constraints.Constraint):
    """Zero a weight's pruned entries after the wrapped constraint (if any).

    Pruned entries are selected to exactly ``0`` (not multiplied by the mask), so they are zero
    also after a step that overflowed to ``inf`` or ``NaN``.

    Args:
        mask: A non-trainable variable shaped like the weight: booleans (``True`` = kept) or
            0/1 numbers.
        inner: The weight's previous constraint, applied first.

    Example:
        >>> import keras, numpy as np
        >>> mask = keras.Variable(np.array([True, False]), trainable=False, dtype="bool")
        >>> keras.ops.convert_to_numpy(MaskConstraint(mask)(keras.ops.ones((2,)))).tolist()
        [1.0, 0.0]
    """

    def __init__(self, mask: keras.Variable, inner: Callable[[Any], Any] | None = None) -> None:
        self.mask = mask
        self.inner = inner
        dtype = keras.backend.standardize_dtype(mask.dtype)
        self._native = dtype == "bool" or (_BITS_MASKS and dtype.startswith("int"))

    def __call__(self, w: Any) -> Any:
        # Native tensor ops: this runs once per kernel per optimizer step, and skipping the
        # keras.ops dispatch measurably shortens a torch step.
        value = w.value if isinstance(w, keras.Variable) else keras.ops.convert_to_tensor(w)
        if self.inner is not None:
            value = keras.ops.convert_to_tensor(self.inner(value))
        if self._native:
            return _select(self.mask.value, value)
        return select_kept(self.mask, value)


def _unwrap(constraint: Any) -> Any:
    while isinstance(constraint, MaskConstraint):
        constraint = constraint.inner
    return constraint


class _GradientMasking:
    """Wraps one optimizer instance's ``apply`` so that pruned gradients are zero."""

    def __init__(self, optimizer: Any, masks_by_id: dict[int, keras.Variable]) -> None:
        self.optimizer = optimizer
        self.masks_by_id = masks_by_id
        self.previous = optimizer.__dict__.get("apply")
        original = optimizer.apply

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            if trainable_variables is None:
                variables = list(getattr(optimizer, "_trainable_variables", []))
            else:
                trainable_variables = list(trainable_variables)
                variables = trainable_variables
            grads = list(grads)
            if len(variables) == len(grads):
                for i, variable in enumerate(variables):
                    mask = self.masks_by_id.get(id(variable))
                    if mask is not None and grads[i] is not None:
                        grads[i] = _select(mask.value, grads[i])
            return original(grads, trainable_variables)

        self.wrapper = apply
        optimizer.apply = apply

    def remove(self) -> None:
        if self.optimizer.__dict__.get("apply") is self.wrapper:
            if self.previous is None:
                del self.optimizer.__dict__["apply"]
            else:
                self.optimizer.__dict__["apply"] = self.previous


def _ema_optimizers(optimizer: Any) -> list[Any]:
    """``optimizer`` and the optimizers it wraps (``LossScaleOptimizer``, ``MultiOptimizer``)
    that keep moving averages (``use_ema=True``)."""
    found: list[Any] = []
    pending = [optimizer]
    while pending:
        current = pending.pop()
        if current is None or any(current is f for f in found):
            continue
        if getattr(current, "use_ema", False) and callable(
            getattr(current, "_update_model_variables_moving_average", None)
        ):
            found.append(current)
        for value in vars(current).values():
            for candidate in value if isinstance(value, (list, tuple)) else [value]:
                if candidate is not current and isinstance(candidate, keras.optimizers.Optimizer):
                    pending.append(candidate)
    return found


class _AverageMasking:
    """Zero the pruned entries of one optimizer's EMA averages right after each update.

    Keras updates the averages from the weights *before* applying the variables' constraints,
    so with the mask constraint they absorbed the pruned entries' unconstrained values every
    step: ``SwapEMAWeights`` evaluated (and ``finalize_variable_values`` wrote back) a model
    whose pruned weights were not zero.
    """

    _NAME = "_update_model_variables_moving_average"

    def __init__(self, optimizer: Any, masks_by_id: dict[int, keras.Variable]) -> None:
        self.optimizer = optimizer
        self.previous = optimizer.__dict__.get(self._NAME)
        original = getattr(optimizer, self._NAME)

        def update(trainable_variables: Any) -> Any:
            trainable_variables = list(trainable_variables)
            result = original(trainable_variables)
            averages = getattr(optimizer, "_model_variables_moving_average", None) or []
            for variable, average in zip(trainable_variables, averages, strict=False):
                mask = masks_by_id.get(id(variable))
                if mask is not None and average is not None:
                    average.assign(_select(mask.value, average.value))
            return result

        self.wrapper = update
        setattr(optimizer, self._NAME, update)

    def remove(self) -> None:
        if self.optimizer.__dict__.get(self._NAME) is self.wrapper:
            if self.previous is None:
                del self.optimizer.__dict__[self._NAME]
            else:
                self.optimizer.__dict__[self._NAME] = self.previous


class MaskEnforcer:
    """Keep pruned entries of variables at zero during optimizer steps; a context manager.

    :meth:`install` wraps each variable's constraint with a :class:`MaskConstraint`. Given an
    optimizer for which :func:`masks_gradients_exactly` holds, ``install(optimizer)`` masks that
    optimizer's gradients instead, for every variable without a constraint of its own (faster on
    TensorFlow; used by ``PrunerCallback``).

    On the TensorFlow and torch backends a compiled step reads the mask variables live, so
    :meth:`update` takes effect at once. On JAX, ``jax.jit`` captures their values when it
    traces: rebuild the train function (``PrunerCallback`` does) after masks change.

    Args:
        variables: The prunable variables.
        masks: One boolean mask per variable (``True`` = kept).
        optimizer: The Keras optimizer of the loop, or ``None``. Entering the ``with`` block
            zeroes its state at the pruned entries (if built) and, with ``use_ema=True``,
            masks its moving averages after each update (see :meth:`install`).

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> kernel = model.layers[0].kernel
        >>> with MaskEnforcer([kernel], [np.array([[True], [False]])]) as enforcer:
        ...     print(keras.ops.convert_to_numpy(kernel)[1, 0] == 0)
        True
    """

    def __init__(
        self,
        variables: Sequence[keras.Variable],
        masks: Sequence[np.ndarray],
        *,
        optimizer: Any = None,
    ) -> None:
        if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`optimizer` must be a Keras optimizer or None (a torch.optim optimizer ignores "
                "Keras constraints: call enforcer.apply() after its step). "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        self._optimizer = optimizer
        self._variables = list(variables)
        if len(masks) != len(self._variables):
            raise ValueError(
                f"`masks` must hold one mask per variable ({len(self._variables)}). "
                f"Received: {len(masks)} masks"
            )
        for variable, mask in zip(self._variables, masks, strict=True):
            if tuple(np.shape(mask)) != tuple(variable.shape):
                raise ValueError(
                    f"Each mask must have its variable's shape; {variable.path} has "
                    f"{tuple(variable.shape)}. Received: a mask of shape {np.shape(mask)}"
                )
        self._masks = []
        for variable, mask in zip(self._variables, masks, strict=True):
            value, dtype = _stored_mask(mask, variable)
            self._masks.append(keras.Variable(value, trainable=False, dtype=dtype, name="ltp_mask"))
        self._gradient_masking: _GradientMasking | None = None
        self._average_masking: list[_AverageMasking] = []
        self._modes: list[str] = []
        self.installed = False

    @property
    def variables(self) -> list[keras.Variable]:
        """The masked variables."""
        return list(self._variables)

    @property
    def modes(self) -> list[str]:
        """How each variable is masked since :meth:`install`: ``"gradient"`` or ``"constraint"``
        (empty when not installed)."""
        return list(self._modes)

    def install(self, optimizer: Any = None, *, ema_optimizer: Any = None) -> MaskEnforcer:
        """Start masking; returns self.

        Args:
            optimizer: If given and :func:`masks_gradients_exactly` holds for it, mask its
                gradients for the variables without a constraint of their own; every other
                variable gets a :class:`MaskConstraint` (replacing a stale one).
            ema_optimizer: The optimizer that will train the variables, if it (or one it
                wraps) has ``use_ema=True``: the pruned entries of its moving averages are
                zeroed after each update too (Keras updates them before the constraints run,
                so they took in the pruned entries' unconstrained values; ``SwapEMAWeights``
                and the overwrite at the end of ``fit`` then brought them back).
        """
        self.remove()
        by_gradient = optimizer is not None and masks_gradients_exactly(optimizer)
        modes = []
        gradient_masks: dict[int, keras.Variable] = {}
        for variable, mask in zip(self._variables, self._masks, strict=True):
            inner = _unwrap(variable.constraint)
            if by_gradient and inner is None:
                variable.constraint = None
                gradient_masks[id(variable)] = mask
                modes.append("gradient")
            else:
                variable.constraint = MaskConstraint(mask, inner)
                modes.append("constraint")
        if gradient_masks:
            self._gradient_masking = _GradientMasking(optimizer, gradient_masks)
        if ema_optimizer is not None:
            by_id = {id(v): m for v, m in zip(self._variables, self._masks, strict=True)}
            self._average_masking = [
                _AverageMasking(o, by_id) for o in _ema_optimizers(ema_optimizer)
            ]
        self._modes = modes
        self.installed = True
        logger.debug("Masking %s", dict(zip((v.path for v in self._variables), modes, strict=True)))
        return self

    def remove(self) -> None:
        """Restore the constraints (and the optimizer) as they were before :meth:`install`."""
        for variable, mask in zip(self._variables, self._masks, strict=True):
            current = variable.constraint
            if isinstance(current, MaskConstraint) and current.mask is mask:
                variable.constraint = current.inner
        if self._gradient_masking is not None:
            self._gradient_masking.remove()
            self._gradient_masking = None
        for masking in self._average_masking:
            masking.remove()
        self._average_masking = []
        self._modes = []
        self.installed = False

    def update(self, masks: Sequence[np.ndarray]) -> None:
        """Replace the masks (see the class note about JAX)."""
        for variable, mask_variable, mask in zip(self._variables, self._masks, masks, strict=True):
            mask_variable.assign(_stored_mask(mask, variable)[0])

    def apply(self) -> None:
        """Zero the pruned entries now, with backend ops (no NumPy round trip).

        Use after a step of an optimizer that ignores Keras constraints (e.g. ``torch.optim``).
        """
        for variable, mask in zip(self._variables, self._masks, strict=True):
            variable.assign(_select(mask.value, variable.value))

    def __enter__(self) -> MaskEnforcer:
        self.install(ema_optimizer=self._optimizer)
        self.apply()
        if self._optimizer is not None:
            masks = [np.asarray(keras.ops.convert_to_numpy(m.value)) != 0 for m in self._masks]
            zero_pruned_slots(self._optimizer, self._variables, masks)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
