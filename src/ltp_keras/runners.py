"""Compiled training loops behind :class:`ltp_keras.experiment.KerasBackend`, one per Keras backend.

A runner trains a private clone of a model with masks held at exactly zero: on TensorFlow the
steps between two evaluations run in one ``tf.function`` loop, on torch an eager loop skips
``fit``'s data adapter and callbacks, on JAX one ``jax.jit`` step runs per batch with the masks
as arguments. :class:`BatchOrder` draws the seeded batch order all of them share.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from ltp_core.experiment.backend import (
    TrainSettings,
)

from .masking import MaskEnforcer
from .variables import default_prunable_variables

__all__ = ["BatchOrder"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = ("adam", "sgd")


def _padded_batches(x: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``x`` in batches of exactly ``size`` rows (the last zero-padded) and each one's real rows.

    Every call of a compiled forward pass then has the same shape.

    Example:
        >>> [(b.shape[0], n) for b, n in _padded_batches(np.ones((5, 2)), 2)]
        [(2, 2), (2, 2), (2, 1)]
    """
    for start in range(0, len(x), size):
        batch = x[start : start + size]
        n = len(batch)
        if n < size:
            pad = np.zeros((size - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        yield batch, n


class BatchOrder:
    """Mini-batch indices drawn from a seeded generator, reshuffled every epoch.

    Each epoch is a fresh permutation of the training set cut into full batches (the remainder
    is dropped), the same order the NumPy reference backend uses.

    Args:
        n: Number of training examples.
        batch_size: Examples per batch (at most ``n``).
        seed: Seeds the permutations.

    Example:
        >>> order = BatchOrder(10, 4, seed=0)
        >>> order.take(3).shape
        (3, 4)
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if batch_size < 1 or batch_size > n:
            raise ValueError(
                f"`batch_size` must be between 1 and the number of training examples ({n}). "
                f"Received: batch_size={batch_size}"
            )
        self._n = n
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(n)
        self._cursor = 0

    def take(self, steps: int) -> np.ndarray:
        """The next ``steps`` batches as an ``int32`` array of shape ``(steps, batch_size)``."""
        rows = np.empty((steps, self._batch_size), dtype=np.int32)
        for row in rows:
            if self._cursor + self._batch_size > self._n:
                self._order, self._cursor = self._rng.permutation(self._n), 0
            row[...] = self._order[self._cursor : self._cursor + self._batch_size]
            self._cursor += self._batch_size
        return rows


def _check_settings(settings: TrainSettings) -> None:
    if not isinstance(settings, TrainSettings):
        raise TypeError(
            f"`settings` must be a TrainSettings. Received: settings of type "
            f"{type(settings).__name__}"
        )
    if settings.optimizer not in _OPTIMIZERS:
        raise ValueError(
            f"`optimizer` must be one of {list(_OPTIMIZERS)}. "
            f"Received: optimizer={settings.optimizer!r}"
        )
    for name in ("iterations", "batch_size", "eval_every"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def _new_optimizer(settings: TrainSettings) -> keras.optimizers.Optimizer:
    if settings.optimizer == "adam":
        return keras.optimizers.Adam(settings.learning_rate)
    return keras.optimizers.SGD(settings.learning_rate, momentum=settings.momentum)


def _reset_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: float) -> None:
    """Make a built optimizer equal to a fresh one: zero state, step 0, this learning rate."""
    for variable in optimizer.variables:
        variable.assign(np.zeros(variable.shape, keras.backend.standardize_dtype(variable.dtype)))
    optimizer.learning_rate = learning_rate


def _loss(labels: Any, logits: Any) -> Any:
    return keras.ops.mean(
        keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    )


def _seed_states(model: keras.Model) -> list[keras.Variable]:
    """The random-number states of the model's dropout layers (not part of ``weights``)."""
    weights = {id(v) for v in model.weights}
    return [
        v
        for v in model.variables
        if id(v) not in weights and str(v.path).endswith("seed_generator_state")
    ]


def _unique(variables: Sequence[keras.Variable]) -> list[keras.Variable]:
    seen: set[int] = set()
    result = []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result


class _Runner:
    """Compiled train and forward functions for one architecture (a subclass per Keras backend).

    A runner trains its own private copy of the architecture (``template``): ``begin`` copies a
    model's weights in, resets the optimizer and applies the masks, ``run`` trains on a
    ``(steps, batch)`` array of example indices, ``store`` copies the trained weights back into
    the model. So every model of one architecture (the IMP loop builds a fresh one per
    ``random_reinit`` control) shares one compilation, and memory stays flat.
    """

    def __init__(self, template: keras.Model, eval_batch_size: int) -> None:
        self.template = template
        self.eval_batch_size = eval_batch_size
        self.prunable = default_prunable_variables(template)
        self.optimizer: keras.optimizers.Optimizer | None = None
        self._optimizer_key: tuple[Any, ...] | None = None
        self._data: tuple[Any, Any] | None = None

    def _prepare_optimizer(self, settings: TrainSettings) -> bool:
        """Reset the optimizer to a fresh state; returns whether a new one had to be made."""
        key = (settings.optimizer, settings.momentum if settings.optimizer == "sgd" else None)
        fresh = self.optimizer is None or key != self._optimizer_key
        if fresh:
            self.optimizer = _new_optimizer(settings)
            self.optimizer.build(self.template.trainable_variables)
            self._optimizer_key = key
        assert self.optimizer is not None
        _reset_optimizer(self.optimizer, settings.learning_rate)
        return fresh

    def load(self, model: keras.Model) -> None:
        """Copy all of ``model``'s variables into the template."""
        if model is not self.template:
            for target, source in zip(self.template.variables, model.variables, strict=True):
                target.assign(source.value)

    def store(self, model: keras.Model) -> None:
        """Copy the template's variables (the training state) into ``model``."""
        if model is not self.template:
            for target, source in zip(model.variables, self.template.variables, strict=True):
                target.assign(source.value)

    def begin(
        self,
        model: keras.Model,
        masks: Sequence[np.ndarray],
        settings: TrainSettings,
        data: Any,
    ) -> None:
        raise NotImplementedError

    def run(self, indices: np.ndarray) -> None:
        raise NotImplementedError

    def end(self, model: keras.Model) -> None:
        self.store(model)
        self._data = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits of ``x`` (inference mode), one fixed-size compiled batch at a time."""
        out = [
            self._forward_batch(batch)[:n] for batch, n in _padded_batches(x, self.eval_batch_size)
        ]
        return np.concatenate(out)

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reseed(self, seed: int) -> None:
        for i, state in enumerate(_seed_states(self.template)):
            state.assign(np.array([(seed * 1_000_003 + i) % 2**31, 0], dtype=state.dtype))


class _MaskedRunner(_Runner):
    """TensorFlow and torch: the adapter's mask constraints, read live by every step."""

    def __init__(self, template: keras.Model, eval_batch_size: int) -> None:
        super().__init__(template, eval_batch_size)
        ones = [np.ones(v.shape, bool) for v in self.prunable]
        self._enforcer = MaskEnforcer(self.prunable, ones).install()

    def begin(
        self,
        model: keras.Model,
        masks: Sequence[np.ndarray],
        settings: TrainSettings,
        data: Any,
    ) -> None:
        self.load(model)
        self._reseed(settings.seed)
        if self._prepare_optimizer(settings):
            self._new_optimizer()
        self._data = data
        self._enforcer.update(masks)
        self._enforcer.apply()

    def _new_optimizer(self) -> None:
        """Called after the optimizer was replaced."""


class _TensorFlowRunner(_MaskedRunner):
    def __init__(self, template: keras.Model, eval_batch_size: int, jit_compile: bool) -> None:
        import tensorflow as tf

        super().__init__(template, eval_batch_size)
        self._tf = tf
        self._jit_compile = jit_compile
        self._train_fn: Callable[..., Any] | None = None
        self._capacity = 1
        self._forward_fn = tf.function(
            lambda x: template(x, training=False), jit_compile=jit_compile, reduce_retracing=True
        )

    def _new_optimizer(self) -> None:
        tf = self._tf
        model, optimizer = self.template, self.optimizer
        assert optimizer is not None
        variables = model.trainable_variables

        def train_steps(x: Any, y: Any, indices: Any, steps: Any) -> None:
            for k in tf.range(steps):
                batch = indices[k]
                with tf.GradientTape() as tape:
                    loss = _loss(tf.gather(y, batch), model(tf.gather(x, batch), training=True))
                # ``apply`` runs each variable's constraint after the update: the mask.
                optimizer.apply(tape.gradient(loss, variables), variables)

        self._train_fn = tf.function(
            train_steps, jit_compile=self._jit_compile, reduce_retracing=True
        )

    def begin(
        self,
        model: keras.Model,
        masks: Sequence[np.ndarray],
        settings: TrainSettings,
        data: Any,
    ) -> None:
        super().begin(model, masks, settings, data)
        self._capacity = min(settings.eval_every, settings.iterations)

    def run(self, indices: np.ndarray) -> None:
        assert self._train_fn is not None and self._data is not None
        tf = self._tf
        # A fixed-size index block and a step count: XLA compiles one shape for every chunk.
        block = np.zeros((max(self._capacity, len(indices)), indices.shape[1]), dtype=np.int32)
        block[: len(indices)] = indices
        self._train_fn(*self._data, tf.constant(block), tf.constant(len(indices), tf.int32))

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward_fn(self._tf.constant(x)))


class _TorchRunner(_MaskedRunner):
    def __init__(self, template: keras.Model, eval_batch_size: int) -> None:
        import torch

        super().__init__(template, eval_batch_size)
        self._torch = torch

    def run(self, indices: np.ndarray) -> None:
        torch = self._torch
        assert self._data is not None and self.optimizer is not None
        x, y = self._data
        model, optimizer = self.template, self.optimizer
        variables = model.trainable_variables
        for batch in torch.from_numpy(indices.astype(np.int64)):
            with torch.enable_grad():
                loss = _loss(y[batch], model(x[batch], training=True))
                for variable in variables:
                    variable.value.grad = None
                loss.backward()
            with torch.no_grad():
                # ``apply`` runs each variable's constraint after the update: the mask.
                optimizer.apply([v.value.grad for v in variables], variables)

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            logits = self.template(self._torch.from_numpy(x), training=False)
        return np.asarray(keras.ops.convert_to_numpy(logits))


class _JaxRunner(_Runner):
    """JAX: a jitted step over explicit state; masks are arguments, so one compilation serves
    every level (a mask constraint would be baked into the compiled step)."""

    def __init__(self, template: keras.Model, eval_batch_size: int) -> None:
        import jax

        super().__init__(template, eval_batch_size)
        self._jax = jax
        trainable_ids = {id(v): i for i, v in enumerate(template.trainable_variables)}
        missing = [v.path for v in self.prunable if id(v) not in trainable_ids]
        if missing:
            raise ValueError(f"Prunable variables must be trainable. Received: {missing}")
        self._mask_slots = [trainable_ids[id(v)] for v in self.prunable]
        self._train_fn: Callable[..., Any] | None = None
        self._state: tuple[Any, Any, Any] | None = None
        self._masks: list[Any] | None = None

        def forward(trainable: Any, non_trainable: Any, x: Any) -> Any:
            logits, _ = template.stateless_call(trainable, non_trainable, x, training=False)
            return logits

        self._forward_fn = jax.jit(forward)

    def _make_train_fn(self) -> Callable[..., Any]:
        jax = self._jax
        model, optimizer, slots = self.template, self.optimizer, self._mask_slots
        assert optimizer is not None

        def loss_of(trainable: Any, non_trainable: Any, x: Any, y: Any) -> Any:
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return _loss(y, logits), non_trainable

        grad_fn = jax.grad(loss_of, has_aux=True)

        def train_step(state: Any, masks: Any, x: Any, y: Any, batch: Any) -> Any:
            trainable, non_trainable, optimizer_state = state
            grads, non_trainable = grad_fn(trainable, non_trainable, x[batch], y[batch])
            trainable, optimizer_state = optimizer.stateless_apply(
                optimizer_state, grads, trainable
            )
            trainable = list(trainable)
            for slot, mask in zip(slots, masks, strict=True):
                # Select, not multiply: an overflowed step's inf * 0 would be NaN.
                trainable[slot] = jax.numpy.where(mask, trainable[slot], 0)
            return trainable, non_trainable, optimizer_state

        # One compiled step called from Python: as fast as a compiled loop of steps on CPU
        # (dispatch is cheap), while XLA runs convolutions inside a compiled loop ~40x slower.
        compiled: Callable[..., Any] = jax.jit(train_step)
        return compiled

    def begin(
        self,
        model: keras.Model,
        masks: Sequence[np.ndarray],
        settings: TrainSettings,
        data: Any,
    ) -> None:
        jnp = self._jax.numpy
        self.load(model)
        self._reseed(settings.seed)
        if self._prepare_optimizer(settings) or self._train_fn is None:
            self._train_fn = self._make_train_fn()
        assert self.optimizer is not None
        self._masks = [jnp.asarray(m, dtype=bool) for m in masks]
        trainable = [v.value for v in self.template.trainable_variables]
        for slot, mask in zip(self._mask_slots, self._masks, strict=True):
            trainable[slot] = jnp.where(mask, trainable[slot], 0)
        self._state = (
            trainable,
            [v.value for v in self.template.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )
        self._data = data
        self._write_state()

    def run(self, indices: np.ndarray) -> None:
        assert self._train_fn is not None and self._data is not None
        state, masks, (x, y) = self._state, self._masks, self._data
        for batch in indices:
            state = self._train_fn(state, masks, x, y, batch)
        self._state = self._jax.block_until_ready(state)  # type: ignore[no-untyped-call]
        self._write_state()

    def _write_state(self) -> None:
        """Put the live state into the template's variables (JAX keeps it outside them)."""
        assert self._state is not None
        trainable, non_trainable, _ = self._state
        template = self.template
        for variable, value in zip(template.trainable_variables, trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(template.non_trainable_variables, non_trainable, strict=True):
            variable.assign(value)

    def end(self, model: keras.Model) -> None:
        super().end(model)
        self._state = self._masks = None

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        trainable = [v.value for v in self.template.trainable_variables]
        non_trainable = [v.value for v in self.template.non_trainable_variables]
        return np.asarray(self._forward_fn(trainable, non_trainable, x))


def _strip(config: Any, keys: frozenset[str]) -> Any:
    if isinstance(config, dict):
        return {k: _strip(v, keys) for k, v in config.items() if k not in keys}
    if isinstance(config, list | tuple):
        return [_strip(v, keys) for v in config]
    return config


def _architecture_key(model: keras.Model) -> str | None:
    """The model's config without names and seeds; ``None`` if it cannot be serialized."""
    try:
        config = model.get_config()
    except NotImplementedError:
        return None
    stripped = _strip(config, frozenset({"name", "seed"}))
    shapes = [(tuple(v.shape), str(v.dtype)) for v in model.variables]
    return (
        f"{type(model).__qualname__}:{json.dumps(stripped, sort_keys=True, default=str)}:{shapes}"
    )


def _log_softmax_metrics(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    accuracy = float((logits.argmax(axis=1) == y).mean())
    return loss, accuracy
