"""The Keras 3 backend of the ``ltp`` experiments (``--framework keras``).

Implements :class:`ltp_core.experiment.backend.TrainingBackend` on whichever Keras backend
``KERAS_BACKEND`` selects (TensorFlow, torch or JAX). Models come from :mod:`ltp_keras.models`;
the prunable weights are the adapter's default selection
(:func:`ltp_keras.default_prunable_variables`), so masks line up with
:class:`ltp_keras.LotteryTicketPruner`.

Training does not go through ``model.fit`` but through the runners of :mod:`ltp_keras.runners`.
On TensorFlow the steps between two evaluations
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

:meth:`KerasBackend.train_batched` trains a level's independent runs together as stacked
replicas (:mod:`ltp_keras.batched`), with each run's own masks, batch order and records; by
default (``batched="auto"``) on the torch backend of Keras only, where it measured 2.4-2.9x
less wall time on digits, while TensorFlow's and JAX's compiled single-run programs measured
faster than stacking.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
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
    check_batch_lengths,
    settings_differ_beyond_seed,
)

from .models import build_model, output_layer
from .runners import (
    BatchOrder,
    _architecture_key,
    _check_settings,
    _JaxRunner,
    _log_softmax_metrics,
    _Runner,
    _TensorFlowRunner,
    _TorchRunner,
    _unique,
)
from .variables import default_prunable_variables, read_arrays, unique_names, write_arrays

__all__ = ["BatchOrder", "KerasBackend"]

logger = logging.getLogger(__name__)


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
        batched: Whether :meth:`train_batched` trains a level's runs together
            (:mod:`ltp_keras.batched`): ``True``, ``False`` or ``"auto"``, which batches on the
            torch backend only. There the eager per-step overhead dominates and batching
            measured 2.4-2.9x less time (digits; 1.4x on Fashion-MNIST); the compiled
            single-run programs of TensorFlow and JAX already run at the arithmetic floor of
            these models, and stacked replicas measured 0.75x (TensorFlow) and 0.8x (JAX) of
            their speed (``benchmarks/bench_imp.py``).

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
        batched: bool | str = "auto",
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
        if not isinstance(batched, bool) and batched != "auto":
            raise ValueError(
                f"`batched` must be True, False or 'auto'. Received: batched={batched!r}"
            )
        self.batched = batched
        self.cached_models = cached_models
        self._runners: OrderedDict[Any, _Runner] = OrderedDict()
        self._data_cache: tuple[np.ndarray, np.ndarray, Any] | None = None
        self._sequential_reasons: set[str] = set()
        self._trainers: OrderedDict[Any, Any] = OrderedDict()  # ltp_keras.batched trainers
        self._warned: set[tuple[str, int, int]] = set()  # user models' wide heads, said once

    # ------------------------------------------------------------------ models and weights
    def build(
        self, model: str, input_shape: tuple[int, ...], num_classes: int, seed: int
    ) -> keras.Model:
        """A fresh model (see :func:`ltp_keras.models.build_model`)."""
        return build_model(model, input_shape, num_classes, seed, self._warned)

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

    def describe(self, model: keras.Model) -> str:
        """The model's structure (:func:`describe_model`), for ``results.json``."""
        return describe_model(model)

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

    def train_batched(
        self,
        models: Sequence[keras.Model],
        masks: Sequence[Sequence[np.ndarray] | None],
        data: Dataset,
        settings: Sequence[TrainSettings],
        progress: Sequence[ProgressFn | None] | None = None,
    ) -> list[TrainOutcome] | None:
        """Train independent replicas of one architecture together (see :mod:`ltp_keras.batched`).

        Each model trains as :meth:`train` would train it alone (its own masks, batch order from
        its ``settings.seed``, optimizer state, evaluations and ``capture_at`` snapshot), up to
        float32 rounding; the models are updated in place.

        Returns:
            One outcome per model (``extra["batched_replicas"]`` is the number trained
            together), or ``None`` when these models do not train together (``batched``
            declines for this Keras backend, an architecture
            :func:`ltp_keras.batched.unstackable_reason` refuses, models of different
            shapes, or settings that differ in more than ``seed`` and ``capture_at``; the reason
            is logged once): the caller then trains them one by one with :meth:`train`.

        Raises:
            ValueError: As :meth:`train`.
        """
        from .batched import make_trainer, unstackable_reason

        count = check_batch_lengths(models, masks, settings)
        if count == 0:
            return []
        for model in models:
            if not isinstance(model, keras.Model):
                raise TypeError(
                    "`models` must hold keras.Model instances. Received: model of type "
                    f"{type(model).__name__}"
                )
        for item in settings:
            _check_settings(item)
        name = keras.backend.backend()
        if self.batched is False:
            reason: str | None = "KerasBackend(batched=False)"
        elif self.batched == "auto" and name != "torch":
            reason = (
                f"on the {name} backend one run's compiled program is as fast per run as "
                "stacked replicas (KerasBackend(batched=True) trains them together anyway)"
            )
        else:
            reason = unstackable_reason(models[0])
        keys = [_architecture_key(m) for m in models]
        if reason is None and (keys[0] is None or any(k != keys[0] for k in keys)):
            reason = "the models differ in architecture"
        if reason is None and settings_differ_beyond_seed(settings):
            reason = "the runs' settings differ in more than seed and capture_at"
        if reason is not None:
            if reason not in self._sequential_reasons:
                self._sequential_reasons.add(reason)
                logger.info("training the runs one at a time: %s", reason)
            return None
        prunable = default_prunable_variables(models[0])
        checked = []
        for replica_masks in masks:
            if replica_masks is not None:
                _check_arrays(prunable, replica_masks, "masks")
                replica_masks = [np.asarray(m, dtype=bool) for m in replica_masks]
            checked.append(replica_masks)
        first = settings[0]
        orders = [BatchOrder(len(data.y_train), s.batch_size, s.seed) for s in settings]
        start = time.perf_counter()
        jit = self.jit_compile
        if jit == "auto":
            jit = "conv" not in self.layer_kinds(models[0])
        key = ("batched", keys[0], count, name, bool(jit))
        trainer = self._trainers.get(key)
        if trainer is None:
            trainer = make_trainer(models[0], count, self.eval_batch_size, bool(jit))
            self._trainers[key] = trainer
            while len(self._trainers) > self.cached_models:
                self._trainers.popitem(last=False)
        else:
            self._trainers.move_to_end(key)
        callbacks = list(progress) if progress is not None else [None] * count
        total = first.iterations
        stops = set(range(first.eval_every, total + 1, first.eval_every)) | {total}
        captures = [s.capture_at for s in settings]
        stops |= {c for c in captures if c is not None and 0 < c < total}
        evaluations: list[list[EvalPoint]] = [[] for _ in models]
        captured: list[list[np.ndarray] | None] = [None] * count
        train_seconds = 0.0
        threads = self._torch_threads()
        try:
            trainer.begin(models, checked, first, self._training_data(data))
            try:
                for r, capture in enumerate(captures):
                    if capture == 0:
                        trainer.store(models, r)
                        captured[r] = self.snapshot(models[r])
                step = 0
                for stop in sorted(stops):
                    chunk_start = time.perf_counter()
                    indices = np.stack([o.take(stop - step) for o in orders], axis=1)
                    trainer.run(indices)
                    step = stop
                    train_seconds += time.perf_counter() - chunk_start
                    for r, capture in enumerate(captures):
                        if step == capture:
                            trainer.store(models, r)
                            captured[r] = self.snapshot(models[r])
                    if step % first.eval_every == 0 or step == total:
                        val = self._evaluate_stacked(trainer, data.x_val, data.y_val)
                        test = self._evaluate_stacked(trainer, data.x_test, data.y_test)
                        for r in range(count):
                            point = EvalPoint(step, val[r][0], val[r][1], test[r][1])
                            evaluations[r].append(point)
                            callback = callbacks[r]
                            if callback is not None:
                                callback(step, total, {"val_acc": val[r][1]})
            finally:
                trainer.end(models)
        finally:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
        seconds = (time.perf_counter() - start) / count
        rate = count * total / train_seconds if train_seconds > 0 else 0.0
        logger.debug("trained %d replicas x %d steps (%.0f replica steps/s)", count, total, rate)
        extra = {
            "keras_backend": name,
            "steps_per_second": rate / count,
            "batched_replicas": count,
        }
        return [
            TrainOutcome(evaluations[r], seconds, captured[r], extra=dict(extra))
            for r in range(count)
        ]

    def _evaluate_stacked(
        self, trainer: Any, x: np.ndarray, y: np.ndarray
    ) -> list[tuple[float, float]]:
        """Per-replica ``(loss, accuracy)`` of a :class:`ltp_keras.batched.StackedTrainer`."""
        if len(y) == 0:
            return [(float("nan"), float("nan"))] * trainer.replicas
        logits = trainer.logits(np.ascontiguousarray(x, dtype=np.float32))
        labels = np.asarray(y)
        return [_log_softmax_metrics(replica, labels) for replica in logits]

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


def describe_model(model: keras.Model) -> str:
    """The model's structure: each layer's class and settings (``get_config`` without the
    generated names) and the shape and dtype of every weight, in order (hashed as
    ``model_sha256`` by ``ltp imp`` and ``find_ticket``). Two builds of one architecture
    describe alike.

    Example:
        >>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> describe_model(net).splitlines()[-2:]
        ['(3, 2) float32', '(2,) float32']
        >>> describe_model(net) == describe_model(keras.models.clone_model(net))
        True
    """
    lines = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        try:
            config = _without_names(layer.get_config())
        except NotImplementedError:  # a custom layer without get_config: its class only
            config = {}
        settings = json.dumps(config, sort_keys=True, default=_type_name)
        lines.append(f"{type(layer).__qualname__} {settings}")
    lines += [f"{tuple(v.shape)} {v.dtype}" for v in model.weights]
    return "\n".join(lines)


def _type_name(value: Any) -> str:
    """A config value JSON cannot hold (a function, an object), by its type: ``str`` would
    write its memory address, which differs between two builds of one model."""
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _without_names(config: Any, keep_name: bool = False) -> Any:
    """A layer config without the names Keras generates per instance (``dense_3``); a dtype
    policy's name (``mixed_float16``) is a setting and stays."""
    if isinstance(config, dict):
        policy = "Policy" in str(config.get("class_name", ""))
        return {
            key: _without_names(value, keep_name=policy and key == "config")
            for key, value in config.items()
            if keep_name or key not in ("name", "inbound_nodes", "input_layers", "output_layers")
        }
    if isinstance(config, list | tuple):
        return [_without_names(value) for value in config]
    return config
