"""Train several independent replicas of one ``keras.Sequential`` together (``ltp imp``'s default).

The runs of an IMP level (the ticket, the controls, every seed) are independent trainings of the
same architecture. Small paper models leave the CPU idle between tiny kernels, so training them
one after another mostly pays per-step overhead. Here ``R`` replicas become one program: every
kernel and bias is one Keras variable with a new first axis of size ``R``, dense layers run as
one batched matrix product, convolutions as ``R`` convolutions in the same compiled step, and
the loss is the sum of the replicas' own mean losses. The gradient of a sum of independent
losses is each replica's own gradient, and Adam and SGD are per-entry updates, so every replica
follows exactly the math of its sequential run (:meth:`ltp_keras.experiment.KerasBackend.train`):

* its own initialization and masks (pruned weights are selected to exactly ``+0.0`` after every
  optimizer update, as the :class:`ltp_keras.MaskEnforcer` constraint of the sequential runner
  does),
* its own data order (a :class:`ltp_keras.runners.BatchOrder` seeded by its ``settings.seed``,
  drawn exactly as the sequential runner draws it),
* its own optimizer state (the stacked variables' state is per entry),
* its own evaluations, early-stopping record and late-rewinding snapshot.

The compiled program is the sequential runner's, per Keras backend: on TensorFlow the steps
between two evaluations run in one ``tf.function`` loop (XLA for models without convolutions),
on JAX one ``jax.jit`` step runs per batch, on torch an eager loop.

Results match the sequential runs up to float32 rounding: on TensorFlow, XLA's batched matrix
product may sum the same products in another order than the single one (weights agree to ~4e-7
after 300 SGD steps); on JAX and torch they agree bit for bit. The masks are identical
(``tests/keras/test_keras_batched.py``).

Supported: ``keras.Sequential`` models made of ``Dense``, ``Conv2D`` (channels last, no groups),
``MaxPooling2D``, ``Flatten``, ``Activation`` and ``Dropout(rate=0)`` layers in float32, without
constraints, regularizers, LoRA or quantization: every built-in model of ``ltp imp`` except those
with dropout. :func:`unstackable_reason` says why a model does not qualify; those train one at a
time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ltp_core.experiment.backend import TrainSettings

from .runners import _loss, _new_optimizer, _padded_batches, _reset_optimizer
from .variables import default_prunable_variables

__all__ = ["stackable", "unstackable_reason"]

logger = logging.getLogger(__name__)


def unstackable_reason(model: Any) -> str | None:
    """Why replicas of ``model`` cannot train together, or ``None`` when they can.

    Example:
        >>> from ltp_keras.models import build_model
        >>> unstackable_reason(build_model("lenet300_100", (8, 8, 1), 10, seed=0)) is None
        True
        >>> unstackable_reason(build_model("mnist_cnn", (8, 8, 1), 10, seed=0))
        "layer 'dropout_conv' is a Dropout with rate 0.25 (random per replica)"
    """
    if type(model) is not keras.Sequential:
        return f"the model is a {type(model).__name__}, not a keras.Sequential"
    if not model.built or not model.layers:
        return "the model is not built or has no layers"
    if keras.backend.standardize_dtype(model.dtype_policy.compute_dtype) != "float32" or (
        keras.backend.standardize_dtype(model.dtype_policy.variable_dtype) != "float32"
    ):
        return f"the model computes in {model.dtype_policy.name}, not float32"
    flat = len(model.inputs[0].shape) == 2
    for layer in model.layers:
        name = f"layer {layer.name!r}"
        kind = type(layer)
        if kind is keras.layers.Dense or kind is keras.layers.Conv2D:
            if any(
                getattr(layer, attr, None) is not None
                for attr in (
                    "kernel_constraint",
                    "bias_constraint",
                    "kernel_regularizer",
                    "bias_regularizer",
                    "activity_regularizer",
                )
            ):
                return f"{name} has a constraint or regularizer"
            if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
                return f"{name} uses LoRA or quantization"
            if kind is keras.layers.Dense and not flat:
                return f"{name} is a Dense layer on non-flat input"
            if kind is keras.layers.Conv2D and (
                layer.groups != 1 or layer.data_format != "channels_last" or flat
            ):
                return f"{name} is a grouped, channels-first or flat-input Conv2D"
        elif kind is keras.layers.MaxPooling2D:
            if layer.data_format != "channels_last" or flat:
                return f"{name} is a channels-first or flat-input MaxPooling2D"
        elif kind is keras.layers.Flatten:
            if layer.data_format != "channels_last":
                return f"{name} is a channels-first Flatten"
            flat = True
        elif kind is keras.layers.Dropout:
            if layer.rate != 0:
                return f"{name} is a Dropout with rate {layer.rate} (random per replica)"
        elif kind is not keras.layers.Activation:
            return f"{name} is a {kind.__name__}"
    weights = {id(v) for layer in model.layers for v in layer.weights}
    if len(weights) != len({id(v) for v in model.weights}) or model.non_trainable_weights:
        return "the model has weights outside its layers' kernels and biases"
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    if [id(v) for v in default_prunable_variables(model)] != [id(v) for v in kernels]:
        return "the prunable weights are not exactly the Dense and Conv2D kernels"
    return None


def stackable(model: Any) -> bool:
    """Whether replicas of ``model`` can train together (see :func:`unstackable_reason`).

    Example:
        >>> from ltp_keras.models import build_model
        >>> stackable(build_model("conv2", (8, 8, 1), 10, seed=0))
        True
    """
    return unstackable_reason(model) is None


@dataclass(frozen=True)
class _Op:
    """One layer of the stacked program: its kind, the layer, and its variables' slots."""

    kind: str  # "dense", "conv", "pool", "flatten", "activation", "identity"
    layer: Any
    kernel: int | None = None
    bias: int | None = None


class StackedTrainer:
    """``R`` replicas of one stackable architecture as stacked variables, with compiled steps.

    ``begin`` copies the models' weights in, resets the optimizer and applies the masks, ``run``
    trains on an ``(steps, R, batch)`` array of example indices, ``store`` copies replicas back
    into their models. One instance per architecture and ``R`` serves every level (a subclass
    per Keras backend compiles the step).
    """

    def __init__(self, template: keras.Sequential, replicas: int, eval_batch_size: int) -> None:
        self.replicas = replicas
        self.eval_batch_size = eval_batch_size
        self.sources: list[tuple[int, str]] = []  # (layer index, "kernel"/"bias") per variable
        self.variables: list[keras.Variable] = []
        ops: list[_Op] = []
        for index, layer in enumerate(template.layers):
            kind = type(layer)
            if kind is keras.layers.Dense or kind is keras.layers.Conv2D:
                slots: list[int | None] = []
                for attr in ("kernel", "bias"):
                    variable = (
                        getattr(layer, attr, None) if attr == "kernel" or layer.use_bias else None
                    )
                    if variable is None:
                        slots.append(None)
                        continue
                    slots.append(len(self.variables))
                    self.sources.append((index, attr))
                    self.variables.append(
                        keras.Variable(
                            np.zeros((replicas, *variable.shape), np.float32),
                            name=f"stacked_{layer.name}_{attr}",
                        )
                    )
                ops.append(_Op("dense" if kind is keras.layers.Dense else "conv", layer, *slots))
            elif kind is keras.layers.MaxPooling2D:
                ops.append(_Op("pool", layer))
            elif kind is keras.layers.Flatten:
                ops.append(_Op("flatten", layer))
            elif kind is keras.layers.Activation:
                ops.append(_Op("activation", layer))
            else:  # Dropout(rate=0)
                ops.append(_Op("identity", layer))
        self._ops = ops
        self.kernel_slots = [op.kernel for op in ops if op.kernel is not None]
        self.optimizer: keras.optimizers.Optimizer | None = None
        self._optimizer_key: tuple[Any, ...] | None = None
        self._masks: list[Any] | None = None
        self._data: Any = None

    # ---------------------------------------------------------------- the stacked model
    def forward(self, values: Sequence[Any], x: Any, shared: bool) -> Any:
        """Logits ``[R, n, classes]`` of inputs ``[R, n, ...]`` (``shared``: one ``[n, ...]``)."""
        ops = keras.ops
        r = self.replicas
        h = x
        for op in self._ops:
            layer = op.layer
            if op.kind == "dense":
                if shared:
                    h = ops.broadcast_to(ops.expand_dims(h, 0), (r, *h.shape))
                    shared = False
                h = ops.matmul(h, values[op.kernel])
                if op.bias is not None:
                    h = h + ops.expand_dims(values[op.bias], 1)
                h = layer.activation(h)
            elif op.kind == "conv":
                outputs = []
                for i in range(r):
                    out = ops.conv(
                        h if shared else h[i],
                        values[op.kernel][i],
                        strides=layer.strides,
                        padding=layer.padding,
                        data_format="channels_last",
                        dilation_rate=layer.dilation_rate,
                    )
                    if op.bias is not None:
                        out = out + values[op.bias][i]
                    outputs.append(layer.activation(out))
                h = ops.stack(outputs)
                shared = False
            elif op.kind == "pool":
                pool = layer
                if shared:
                    h = ops.max_pool(h, pool.pool_size, pool.strides, pool.padding, "channels_last")
                else:
                    inner = ops.reshape(h, (-1, *h.shape[2:]))
                    inner = ops.max_pool(
                        inner, pool.pool_size, pool.strides, pool.padding, "channels_last"
                    )
                    h = ops.reshape(inner, (r, -1, *inner.shape[1:]))
            elif op.kind == "flatten":
                lead = 1 if shared else 2
                features = int(np.prod(h.shape[lead:]))
                h = ops.reshape(h, (-1, features) if shared else (r, -1, features))
            elif op.kind == "activation":
                h = layer.activation(h)
        if shared:  # no Dense/Conv layer: every replica gives the same output
            h = ops.broadcast_to(ops.expand_dims(h, 0), (r, *h.shape))
        return h

    def loss(self, values: Sequence[Any], x: Any, y: Any) -> Any:
        """The sum of the replicas' mean cross-entropies (each replica's gradient is its own)."""
        logits = self.forward(values, x, shared=False)
        total = _loss(y[0], logits[0])
        for i in range(1, self.replicas):
            total = total + _loss(y[i], logits[i])
        return total

    # ---------------------------------------------------------------- state in and out
    def load(self, models: Sequence[keras.Model]) -> None:
        """Stack the models' kernels and biases into the trainer's variables."""
        for variable, (index, attr) in zip(self.variables, self.sources, strict=True):
            stacked = np.stack(
                [keras.ops.convert_to_numpy(getattr(m.layers[index], attr).value) for m in models]
            )
            variable.assign(stacked.astype(np.float32))

    def store(self, models: Sequence[keras.Model], replica: int | None = None) -> None:
        """Copy the trained replicas (or only ``replica``) into their models, in place."""
        self._sync()
        targets = range(len(models)) if replica is None else [replica]
        for variable, (index, attr) in zip(self.variables, self.sources, strict=True):
            values = keras.ops.convert_to_numpy(variable.value)
            for r in targets:
                getattr(models[r].layers[index], attr).assign(values[r])

    def _sync(self) -> None:
        """Write a live state kept outside the variables back into them (JAX)."""

    def _prepare_optimizer(self, settings: TrainSettings) -> bool:
        """Reset the optimizer to a fresh state; returns whether a new one had to be made."""
        key = (settings.optimizer, settings.momentum if settings.optimizer == "sgd" else None)
        fresh = self.optimizer is None or key != self._optimizer_key
        if fresh:
            self.optimizer = _new_optimizer(settings)
            self.optimizer.build(self.variables)
            self._optimizer_key = key
        assert self.optimizer is not None
        _reset_optimizer(self.optimizer, settings.learning_rate)
        return fresh

    def stacked_masks(self, masks: Sequence[Sequence[np.ndarray] | None]) -> list[np.ndarray]:
        """One ``[R, ...]`` bool array per prunable kernel (``None``: all kept)."""
        result = []
        for position, slot in enumerate(self.kernel_slots):
            shape = tuple(self.variables[slot].shape[1:])
            result.append(
                np.stack(
                    [
                        np.ones(shape, bool)
                        if replica is None
                        else np.asarray(replica[position], dtype=bool)
                        for replica in masks
                    ]
                )
            )
        return result

    def begin(
        self,
        models: Sequence[keras.Model],
        masks: Sequence[Sequence[np.ndarray] | None],
        settings: TrainSettings,
        data: Any,
    ) -> None:
        self.load(models)
        stacked = self.stacked_masks(masks)
        for slot, mask in zip(self.kernel_slots, stacked, strict=True):
            variable = self.variables[slot]
            variable.assign(np.where(mask, keras.ops.convert_to_numpy(variable.value), 0))
        fresh = self._prepare_optimizer(settings)
        self._data = data
        self._start(stacked, settings, fresh)

    def _start(self, masks: list[np.ndarray], settings: TrainSettings, fresh: bool) -> None:
        raise NotImplementedError

    def run(self, indices: np.ndarray) -> None:
        """Train on ``indices`` of shape ``(steps, R, batch)``."""
        raise NotImplementedError

    def end(self, models: Sequence[keras.Model]) -> None:
        self.store(models)
        self._data = self._masks = None

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[R, n, classes]`` of ``x`` (inference), one fixed-size batch at a time."""
        out = [
            self._forward_batch(batch)[:, :n]
            for batch, n in _padded_batches(x, self.eval_batch_size)
        ]
        return np.concatenate(out, axis=1)

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _TensorFlowTrainer(StackedTrainer):
    def __init__(
        self, template: keras.Sequential, replicas: int, eval_batch_size: int, jit_compile: bool
    ) -> None:
        import tensorflow as tf

        super().__init__(template, replicas, eval_batch_size)
        self._tf = tf
        self._jit_compile = jit_compile
        self._train_fn: Callable[..., Any] | None = None
        self._capacity = 1
        variables = self.variables
        self._forward_fn = tf.function(
            lambda x: self.forward(variables, x, shared=True),
            jit_compile=jit_compile,
            reduce_retracing=True,
        )

    def _start(self, masks: list[np.ndarray], settings: TrainSettings, fresh: bool) -> None:
        tf = self._tf
        self._masks = [tf.constant(m) for m in masks]
        self._capacity = min(settings.eval_every, settings.iterations)
        if not fresh and self._train_fn is not None:
            return
        optimizer, variables, slots = self.optimizer, self.variables, self.kernel_slots
        assert optimizer is not None

        def train_steps(x: Any, y: Any, indices: Any, steps: Any, masks: Any) -> None:
            for k in tf.range(steps):
                batch = indices[k]
                with tf.GradientTape() as tape:
                    loss = self.loss(variables, tf.gather(x, batch), tf.gather(y, batch))
                optimizer.apply(tape.gradient(loss, variables), variables)
                for slot, mask in zip(slots, masks, strict=True):
                    # Select, not multiply: an overflowed step's inf * 0 would be NaN.
                    variable = variables[slot]
                    variable.assign(tf.where(mask, variable.value, tf.zeros_like(variable.value)))

        self._train_fn = tf.function(
            train_steps, jit_compile=self._jit_compile, reduce_retracing=True
        )

    def run(self, indices: np.ndarray) -> None:
        assert self._train_fn is not None and self._data is not None
        tf = self._tf
        # A fixed-size index block and a step count: XLA compiles one shape for every chunk.
        block = np.zeros((max(self._capacity, len(indices)), *indices.shape[1:]), dtype=np.int32)
        block[: len(indices)] = indices
        self._train_fn(
            *self._data, tf.constant(block), tf.constant(len(indices), tf.int32), self._masks
        )

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward_fn(self._tf.constant(x)))


class _TorchTrainer(StackedTrainer):
    def __init__(self, template: keras.Sequential, replicas: int, eval_batch_size: int) -> None:
        import torch

        super().__init__(template, replicas, eval_batch_size)
        self._torch = torch

    def _start(self, masks: list[np.ndarray], settings: TrainSettings, fresh: bool) -> None:
        device = self.variables[0].value.device
        self._masks = [self._torch.from_numpy(m).to(device) for m in masks]

    def run(self, indices: np.ndarray) -> None:
        torch = self._torch
        assert self._data is not None and self.optimizer is not None and self._masks is not None
        x, y = self._data
        optimizer, variables = self.optimizer, self.variables
        device = x.device
        for batch in torch.from_numpy(indices.astype(np.int64)).to(device):
            with torch.enable_grad():
                loss = self.loss([v.value for v in variables], x[batch], y[batch])
                for variable in variables:
                    variable.value.grad = None
                loss.backward()
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in variables], variables)
                for slot, mask in zip(self.kernel_slots, self._masks, strict=True):
                    value = variables[slot].value
                    value.copy_(torch.where(mask, value, torch.zeros_like(value)))

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            device = self.variables[0].value.device
            values = [v.value for v in self.variables]
            logits = self.forward(values, torch.from_numpy(x).to(device), shared=True)
        return np.asarray(keras.ops.convert_to_numpy(logits))


class _JaxTrainer(StackedTrainer):
    """JAX: a jitted step over explicit state with the masks as arguments."""

    def __init__(self, template: keras.Sequential, replicas: int, eval_batch_size: int) -> None:
        import jax

        super().__init__(template, replicas, eval_batch_size)
        self._jax = jax
        self._train_fn: Callable[..., Any] | None = None
        self._state: tuple[list[Any], list[Any]] | None = None
        self._forward_fn = jax.jit(lambda values, x: self.forward(values, x, shared=True))

    def _start(self, masks: list[np.ndarray], settings: TrainSettings, fresh: bool) -> None:
        jax, jnp = self._jax, self._jax.numpy
        self._masks = [jnp.asarray(m) for m in masks]
        assert self.optimizer is not None
        self._state = (
            [v.value for v in self.variables],
            [v.value for v in self.optimizer.variables],
        )
        if not fresh and self._train_fn is not None:
            return
        optimizer, slots = self.optimizer, self.kernel_slots
        grad_fn = jax.grad(self.loss)

        def train_step(state: Any, masks: Any, x: Any, y: Any, batch: Any) -> Any:
            values, optimizer_state = state
            grads = grad_fn(values, x[batch], y[batch])
            values, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, values)
            values = list(values)
            for slot, mask in zip(slots, masks, strict=True):
                # Select, not multiply: an overflowed step's inf * 0 would be NaN.
                values[slot] = jnp.where(mask, values[slot], 0)
            return values, optimizer_state

        self._train_fn = jax.jit(train_step)

    def run(self, indices: np.ndarray) -> None:
        assert self._train_fn is not None and self._data is not None
        state, masks, (x, y) = self._state, self._masks, self._data
        for batch in indices:
            state = self._train_fn(state, masks, x, y, batch)
        self._state = self._jax.block_until_ready(state)  # type: ignore[no-untyped-call]

    def _sync(self) -> None:
        if self._state is not None:
            for variable, value in zip(self.variables, self._state[0], strict=True):
                variable.assign(value)

    def end(self, models: Sequence[keras.Model]) -> None:
        super().end(models)
        self._state = None

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        values = [v.value for v in self.variables] if self._state is None else self._state[0]
        return np.asarray(self._forward_fn(values, x))


def make_trainer(
    template: keras.Sequential, replicas: int, eval_batch_size: int, jit_compile: bool
) -> StackedTrainer:
    """The :class:`StackedTrainer` of the current Keras backend."""
    name = keras.backend.backend()
    if name == "tensorflow":
        return _TensorFlowTrainer(template, replicas, eval_batch_size, jit_compile)
    if name == "jax":
        return _JaxTrainer(template, replicas, eval_batch_size)
    if name == "torch":
        return _TorchTrainer(template, replicas, eval_batch_size)
    raise ValueError(
        f"The Keras backend must be tensorflow, jax or torch. Received: KERAS_BACKEND={name!r}"
    )
