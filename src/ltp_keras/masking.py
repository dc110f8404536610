"""Keep pruned weights at exactly zero inside the compiled train step.

Keras 3 optimizers apply ``variable.constraint`` right after every update, inside the train step
that ``fit`` compiles (``tf.function``/XLA, ``jax.jit``, ``torch.compile`` or eager), once per
optimizer step even with ``steps_per_execution > 1``. A mask constraint therefore keeps zeros
without any per-batch Python work, and it also works in the JAX trainer, whose live state lives
outside the variables during ``fit``. Measured alternatives (a per-batch ``set_weights`` or
``assign`` from a callback) cost far more; see ``docs/keras.md``.

The layer's own constraint (``kernel_constraint=...``) runs first and is restored on removal;
layer configs are never touched, so saved models load without custom objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import keras
import numpy as np

__all__ = ["MaskConstraint", "MaskEnforcer"]


class MaskConstraint(keras.constraints.Constraint):
    """Multiply a weight by a fixed 0/1 mask after the wrapped constraint (if any).

    Args:
        mask: A non-trainable variable of 0s and 1s shaped like the weight.
        inner: The weight's previous constraint, applied first.

    Example:
        >>> import keras, numpy as np
        >>> mask = keras.Variable(np.array([1.0, 0.0], dtype="float32"), trainable=False)
        >>> keras.ops.convert_to_numpy(MaskConstraint(mask)(keras.ops.ones((2,)))).tolist()
        [1.0, 0.0]
    """

    def __init__(self, mask: keras.Variable, inner: Callable[[Any], Any] | None = None) -> None:
        self.mask = mask
        self.inner = inner

    def __call__(self, w: Any) -> Any:
        # Native tensor arithmetic: this runs once per kernel per optimizer step, and skipping
        # the keras.ops dispatch measurably shortens a torch step.
        value = w.value if isinstance(w, keras.Variable) else keras.ops.convert_to_tensor(w)
        if self.inner is not None:
            value = keras.ops.convert_to_tensor(self.inner(value))
        return value * self.mask.value


def _unwrap(constraint: Any) -> Any:
    while isinstance(constraint, MaskConstraint):
        constraint = constraint.inner
    return constraint


class MaskEnforcer:
    """Install mask constraints on variables; usable as a context manager.

    On the TensorFlow and torch backends a compiled step reads the mask variables live, so
    :meth:`update` takes effect at once. On JAX, ``jax.jit`` captures their values when it
    traces: rebuild the train function (``PrunerCallback`` does) after masks change.

    Args:
        variables: The prunable variables.
        masks: One boolean mask per variable (``True`` = kept).

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> kernel = model.layers[0].kernel
        >>> with MaskEnforcer([kernel], [np.array([[True], [False]])]) as enforcer:
        ...     print(keras.ops.convert_to_numpy(kernel)[1, 0] == 0)
        True
    """

    def __init__(self, variables: Sequence[keras.Variable], masks: Sequence[np.ndarray]) -> None:
        self._variables = list(variables)
        if len(masks) != len(self._variables):
            raise ValueError(
                f"`masks` must hold one mask per variable ({len(self._variables)}). "
                f"Received: {len(masks)} masks"
            )
        self._masks = [
            keras.Variable(
                np.asarray(m, dtype=np.float32),
                trainable=False,
                dtype=v.dtype,
                name="ltp_mask",
            )
            for v, m in zip(self._variables, masks, strict=True)
        ]
        self.installed = False

    @property
    def variables(self) -> list[keras.Variable]:
        """The masked variables."""
        return list(self._variables)

    def install(self) -> MaskEnforcer:
        """Wrap each variable's constraint (replacing a stale mask constraint); returns self."""
        for variable, mask in zip(self._variables, self._masks, strict=True):
            variable.constraint = MaskConstraint(mask, _unwrap(variable.constraint))
        self.installed = True
        return self

    def remove(self) -> None:
        """Restore the constraints the variables had before :meth:`install`."""
        for variable, mask in zip(self._variables, self._masks, strict=True):
            current = variable.constraint
            if isinstance(current, MaskConstraint) and current.mask is mask:
                variable.constraint = current.inner
        self.installed = False

    def update(self, masks: Sequence[np.ndarray]) -> None:
        """Replace the masks (see the class note about JAX)."""
        for mask_variable, mask in zip(self._masks, masks, strict=True):
            mask_variable.assign(np.asarray(mask, dtype=np.float32))

    def apply(self) -> None:
        """Zero the pruned entries now, with backend ops (no NumPy round trip).

        Use after a step of an optimizer that ignores Keras constraints (e.g. ``torch.optim``).
        """
        for variable, mask in zip(self._variables, self._masks, strict=True):
            variable.assign(keras.ops.multiply(variable.value, mask.value))

    def __enter__(self) -> MaskEnforcer:
        self.install()
        self.apply()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
