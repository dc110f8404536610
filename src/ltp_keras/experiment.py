"""The Keras 3 backend of the ``ltp`` experiments (``--framework keras``).

Implements :class:`ltp_core.experiment.backend.TrainingBackend` on whichever Keras backend
``KERAS_BACKEND`` selects (TensorFlow, torch or JAX). Models come from :mod:`ltp_keras.models`;
the prunable weights are the adapter's default selection
(:func:`ltp_keras.default_prunable_variables`), so masks line up with
:class:`ltp_keras.LotteryTicketPruner`.

Training does not go through ``model.fit``. On TensorFlow the steps between two evaluations
run in one ``tf.function`` loop (XLA for models without convolutions), on JAX one ``jax.jit``
step runs per batch, on torch an eager loop skips ``fit``'s data adapter and callbacks. Measured
on LeNet-300-100 (batch 60, 2 CPU cores): 2.7x the steps per second of ``fit`` with
``PrunerCallback`` on TensorFlow, the same as ``fit`` on JAX and torch (``docs/keras.md``).
Pruned weights are held at exactly zero by the adapter's mechanism, the
:class:`ltp_keras.MaskEnforcer` constraints that Keras optimizers apply after every update; on
JAX, whose compiled step would bake mask values in, the same multiplication runs in the step
with the masks as arguments, so one compilation serves every level.

Each architecture is compiled once: a runner trains a private copy (a clone) of the model and
copies weights in and out, so the fresh model that IMP builds for every ``random_reinit``
control reuses the compiled functions and memory stays flat.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from ltp_core.datasets import Dataset
from ltp_core.experiment.backend import (
    EvalPoint,
    LayerKind,
    ProgressFn,
    TrainOutcome,
    TrainSettings,
)

from .masking import MaskEnforcer
from .models import build_model, output_layer
from .variables import default_prunable_variables, read_arrays, unique_names, write_arrays

__all__ = ["BatchOrder", "KerasBackend"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = ("adam", "sgd")


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
        size = self.eval_batch_size
        out = []
        for start in range(0, len(x), size):
            batch = x[start : start + size]
            n = len(batch)
            if n < size:  # pad so that every call has the compiled shape
                pad = np.zeros((size - n, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, pad])
            out.append(self._forward_batch(batch)[:n])
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


class KerasBackend:
    """Experiment backend on Keras 3 (the Keras backend comes from ``KERAS_BACKEND``).

    Args:
        eval_batch_size: Examples per forward pass when evaluating.
        jit_compile: Compile the TensorFlow train loop with XLA: ``True``, ``False`` or
            ``"auto"`` (XLA for models without convolutions). Other backends ignore it.
        cached_models: How many architectures keep their compiled functions between calls.
        torch_threads: Intra-op threads while training on the torch backend (restored after;
            ``None`` leaves torch's setting). One thread is as fast for these small models and
            does not collapse when other processes share the cores, as ``ltp_torch`` does.

    Example:
        >>> import numpy as np
        >>> backend = KerasBackend()
        >>> model = backend.build("lenet300_100", (8, 8, 1), 10, seed=0)
        >>> backend.layer_names(model)
        ['lenet300_100/fc1/kernel', 'lenet300_100/fc2/kernel', 'lenet300_100/output/kernel']
        >>> backend.layer_kinds(model)
        ['dense', 'dense', 'output']
        >>> loss, accuracy = backend.evaluate(model, np.zeros((5, 8, 8, 1), np.float32),
        ...                                   np.zeros(5, np.int64))
        >>> accuracy
        1.0
    """

    name = "keras"

    def __init__(
        self,
        eval_batch_size: int = 1000,
        jit_compile: bool | str = "auto",
        cached_models: int = 4,
        torch_threads: int | None = 1,
    ) -> None:
        for arg, value in (
            ("eval_batch_size", eval_batch_size),
            ("cached_models", cached_models),
            ("torch_threads", 1 if torch_threads is None else torch_threads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer. Received: {arg}={value!r}")
        self.torch_threads = torch_threads
        self.eval_batch_size = eval_batch_size
        if jit_compile not in (True, False, "auto"):
            raise ValueError(
                "`jit_compile` must be True, False or 'auto'. "
                f"Received: jit_compile={jit_compile!r}"
            )
        self.jit_compile = jit_compile
        self.cached_models = cached_models
        self._runners: OrderedDict[Any, _Runner] = OrderedDict()
        self._data_cache: tuple[np.ndarray, np.ndarray, Any] | None = None

    # ------------------------------------------------------------------ models and weights
    def build(
        self, model: str, input_shape: tuple[int, ...], num_classes: int, seed: int
    ) -> keras.Model:
        """A fresh model (see :func:`ltp_keras.models.build_model`)."""
        return build_model(model, input_shape, num_classes, seed)

    def layer_names(self, model: keras.Model) -> list[str]:
        """Paths of the prunable kernels, as :class:`ltp_keras.LotteryTicketPruner` names them."""
        return unique_names(default_prunable_variables(model))

    def layer_kinds(self, model: keras.Model) -> list[LayerKind]:
        """``"conv"``, ``"dense"`` or ``"output"`` (the last Dense layer) per prunable kernel."""
        owner: dict[int, keras.layers.Layer] = {}
        for layer in model._flatten_layers(include_self=False, recursive=True):
            for variable in layer.weights:
                owner.setdefault(id(variable), layer)
        last = output_layer(model)
        kinds: list[LayerKind] = []
        for variable in default_prunable_variables(model):
            layer = owner.get(id(variable))
            if layer is last:
                kinds.append("output")
            elif isinstance(layer, keras.layers.Dense | keras.layers.EinsumDense):
                kinds.append("dense")
            else:
                kinds.append("conv")
        return kinds

    def get_prunable(self, model: keras.Model) -> list[np.ndarray]:
        """Copies of the prunable kernels."""
        return read_arrays(default_prunable_variables(model))

    def set_prunable(self, model: keras.Model, weights: Sequence[np.ndarray]) -> None:
        """Assign the prunable kernels in place."""
        variables = default_prunable_variables(model)
        _check_arrays(variables, weights, "weights")
        write_arrays(variables, weights)

    def snapshot(self, model: keras.Model) -> list[np.ndarray]:
        """Copies of all of ``model.weights`` (kernels, biases, any non-trainable weights)."""
        return read_arrays(_unique(model.weights))

    def restore(self, model: keras.Model, snapshot: Sequence[np.ndarray]) -> None:
        """Write back a :meth:`snapshot` (variable identity is kept)."""
        variables = _unique(model.weights)
        _check_arrays(variables, snapshot, "snapshot")
        write_arrays(variables, snapshot)

    # ------------------------------------------------------------------ training
    def _runner(self, model: keras.Model) -> _Runner:
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`model` must be a keras.Model. Received: model of type {type(model).__name__}"
            )
        key: Any = _architecture_key(model)
        if key is None:  # not serializable: train the model itself, compiled for it alone
            key = ("model", id(model))
        runner = self._runners.get(key)
        if runner is not None and (isinstance(key, str) or runner.template is model):
            self._runners.move_to_end(key)
            return runner
        template = model if isinstance(key, tuple) else keras.models.clone_model(model)
        name = keras.backend.backend()
        if name == "tensorflow":
            jit = self.jit_compile
            if jit == "auto":
                # XLA on CPU speeds dense models up but runs convolutions in a loop very slowly.
                jit = "conv" not in self.layer_kinds(model)
            runner = _TensorFlowRunner(template, self.eval_batch_size, bool(jit))
        elif name == "jax":
            runner = _JaxRunner(template, self.eval_batch_size)
        elif name == "torch":
            runner = _TorchRunner(template, self.eval_batch_size)
        else:
            raise ValueError(
                f"The Keras backend must be tensorflow, jax or torch. Received: "
                f"KERAS_BACKEND={name!r}"
            )
        self._runners[key] = runner
        while len(self._runners) > self.cached_models:
            self._runners.popitem(last=False)
        return runner

    def _torch_threads(self) -> int | None:
        """Apply ``torch_threads`` on the torch backend; returns the setting to restore."""
        if self.torch_threads is None or keras.backend.backend() != "torch":
            return None
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        return previous

    def _training_data(self, data: Dataset) -> Any:
        """The training arrays as backend tensors (converted once per dataset)."""
        cached = self._data_cache
        if cached is not None and cached[0] is data.x_train and cached[1] is data.y_train:
            return cached[2]
        x = np.ascontiguousarray(data.x_train, dtype=np.float32)
        y = np.ascontiguousarray(data.y_train, dtype=np.int32)
        name = keras.backend.backend()
        if name == "torch":
            import torch

            tensors: Any = (torch.from_numpy(x), torch.from_numpy(y))
        elif name == "jax":
            import jax.numpy as jnp

            tensors = (jnp.asarray(x), jnp.asarray(y))
        else:
            import tensorflow as tf

            tensors = (tf.constant(x), tf.constant(y))
        self._data_cache = (data.x_train, data.y_train, tensors)
        return tensors

    def train(
        self,
        model: keras.Model,
        masks: Sequence[np.ndarray] | None,
        data: Dataset,
        settings: TrainSettings,
        progress: ProgressFn | None = None,
    ) -> TrainOutcome:
        """Train ``settings.iterations`` steps with pruned weights held at exactly zero.

        The optimizer starts fresh; batches come from :class:`BatchOrder` seeded by
        ``settings.seed`` and dropout from a state derived from it, so the same weights, masks
        and settings give the same result. Validation loss and accuracy and test accuracy are
        measured every ``settings.eval_every`` steps and at the end.
        """
        start = time.perf_counter()
        _check_settings(settings)
        runner = self._runner(model)
        if masks is None:
            masks = [np.ones(v.shape, dtype=bool) for v in runner.prunable]
        _check_arrays(runner.prunable, masks, "masks")
        masks = [np.asarray(m, dtype=bool) for m in masks]
        order = BatchOrder(len(data.y_train), settings.batch_size, settings.seed)
        threads = self._torch_threads()
        try:
            runner.begin(model, masks, settings, self._training_data(data))
            try:
                evaluations, captured, train_seconds = self._schedule(
                    runner, model, data, settings, order, progress
                )
            finally:
                runner.end(model)
        finally:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
        total = settings.iterations
        seconds = time.perf_counter() - start
        logger.debug(
            "trained %d steps in %.2fs (%.0f steps/s without evaluation)",
            total,
            seconds,
            total / train_seconds if train_seconds > 0 else 0.0,
        )
        return TrainOutcome(
            evaluations,
            seconds,
            captured,
            extra={
                "keras_backend": keras.backend.backend(),
                "steps_per_second": total / train_seconds if train_seconds > 0 else 0.0,
            },
        )

    def _schedule(
        self,
        runner: _Runner,
        model: keras.Model,
        data: Dataset,
        settings: TrainSettings,
        order: BatchOrder,
        progress: ProgressFn | None,
    ) -> tuple[list[EvalPoint], list[np.ndarray] | None, float]:
        """Train in chunks between evaluations (and the capture step); evaluate after each."""
        total = settings.iterations
        stops = set(range(settings.eval_every, total + 1, settings.eval_every)) | {total}
        capture = settings.capture_at
        if capture is not None and 0 < capture < total:
            stops.add(capture)
        evaluations: list[EvalPoint] = []
        captured: list[np.ndarray] | None = None
        train_seconds = 0.0
        if capture == 0:
            runner.store(model)
            captured = self.snapshot(model)
        step = 0
        for stop in sorted(stops):
            chunk_start = time.perf_counter()
            runner.run(order.take(stop - step))
            step = stop
            train_seconds += time.perf_counter() - chunk_start
            if step == capture:
                runner.store(model)
                captured = self.snapshot(model)
            if step % settings.eval_every == 0 or step == total:
                val_loss, val_acc = self._evaluate(runner, data.x_val, data.y_val)
                _, test_acc = self._evaluate(runner, data.x_test, data.y_test)
                evaluations.append(EvalPoint(step, val_loss, val_acc, test_acc))
                if progress is not None:
                    progress(step, total, {"val_acc": val_acc})
        return evaluations, captured, train_seconds

    def _evaluate(self, runner: _Runner, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        if len(y) == 0:
            return float("nan"), float("nan")
        logits = runner.forward(np.ascontiguousarray(x, dtype=np.float32))
        return _log_softmax_metrics(logits, np.asarray(y))

    def evaluate(self, model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model as it is (inference mode)."""
        runner = self._runner(model)
        runner.load(model)
        return self._evaluate(runner, x, y)

    def versions(self) -> dict[str, str]:
        """Keras, its backend and the backend framework's version."""
        name = keras.backend.backend()
        versions = {"keras": keras.__version__, "keras_backend": name, "numpy": np.__version__}
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(name)
        if module is not None:
            versions[module] = __import__(module).__version__
        return versions


def _check_arrays(
    variables: Sequence[keras.Variable], arrays: Sequence[np.ndarray], argument: str
) -> None:
    if len(arrays) != len(variables):
        raise ValueError(
            f"`{argument}` must hold {len(variables)} arrays. Received: {len(arrays)} arrays"
        )
    for variable, array in zip(variables, arrays, strict=True):
        if tuple(np.shape(array)) != tuple(variable.shape):
            raise ValueError(
                f"`{argument}` must match the model's shapes; {variable.path} is "
                f"{tuple(variable.shape)}. Received: shape {tuple(np.shape(array))}"
            )
