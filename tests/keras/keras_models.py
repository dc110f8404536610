"""Tiny Keras models and helpers shared by the Keras adapter tests."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


def make_nested_model(seed: int = 0) -> keras.Model:
    """Functional model with a shared Dense, a nested Sequential and conv layers."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.SeparableConv2D(4, 3, name="sep")(x)
    x = layers.DepthwiseConv2D(2, name="dw")(x)
    x = layers.Flatten()(x)
    block = keras.Sequential(
        [layers.Dense(12, activation="relu", name="inner_a"), layers.Dense(8, name="inner_b")],
        name="block",
    )
    x = block(x)
    shared = layers.Dense(8, activation="tanh", name="shared")
    x = shared(shared(x))
    outputs = layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs, name="nested")


def make_mlp(seed: int = 0, hidden: int = 16) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((10,)),
            layers.Dense(hidden, activation="relu", name="hidden"),
            layers.Dense(3, name="out"),
        ],
        name="mlp",
    )


class SubclassedNet(keras.Model):
    """A subclassed model holding a subclassed block."""

    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.block = _Block()
        self.head = layers.Dense(3, name="head")

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.block(x))


class _Block(layers.Layer):
    def __init__(self) -> None:
        super().__init__(name="block")
        self.dense = layers.Dense(7, activation="relu", name="dense")
        self.scale = self.add_weight(shape=(7,), initializer="ones", name="scale")

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.dense(x) * self.scale


def image_data(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n)


def vector_data(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def compile_model(model: keras.Model, optimizer: object = "adam", **kwargs: object) -> keras.Model:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def to_numpy(variable: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


class ZeroCheck(keras.callbacks.Callback):
    """Assert after every batch and epoch that exactly the pruned weights are zero."""

    def __init__(self, pruner: object) -> None:
        super().__init__()
        self.pruner = pruner
        self.checks = 0

    def _check(self) -> None:
        model = self.model  # syncs the JAX trainer's state into the variables
        for variable, mask in zip(
            self.pruner.prunable_variables(model), self.pruner.masks, strict=True
        ):
            values = to_numpy(variable)
            assert np.count_nonzero(values[~mask]) == 0, variable.path
        self.checks += 1

    def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
        self._check()

    def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
        self._check()

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self._check()

    def on_test_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
        self._check()
