"""The custom-training-loop recipes of docs/keras.md, one per backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras_models import make_mlp, to_numpy, vector_data

from ltp_keras import LotteryTicketPruner, slot_variables, zero_pruned_slots

BACKEND = keras.backend.backend()


def _pruned_mlp() -> tuple[keras.Model, LotteryTicketPruner]:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    return model, pruner


def _assert_zeros(model: keras.Model, pruner: LotteryTicketPruner) -> None:
    for variable, mask in zip(pruner.prunable_variables(model), pruner.masks, strict=True):
        values = to_numpy(variable)
        assert np.count_nonzero(values[~mask]) == 0, variable.path
        assert np.count_nonzero(values[mask]) == mask.sum()


def _loss(y: object, logits: object) -> object:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="GradientTape recipe")
def test_gradient_tape_loop() -> None:
    import tensorflow as tf

    model, pruner = _pruned_mlp()
    X, y = vector_data(32)
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    with pruner.enforce_masks(model):

        @tf.function
        def train_step(x: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = _loss(labels, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        for start in range(0, 32, 8):
            train_step(X[start : start + 8], y[start : start + 8])
            _assert_zeros(model, pruner)
        zero_pruned_slots(optimizer, pruner.prunable_variables(model), pruner.masks)


@pytest.mark.skipif(BACKEND != "torch", reason="torch loop recipe")
@pytest.mark.parametrize("use_torch_optimizer", [True, False])
def test_torch_loop(use_torch_optimizer: bool) -> None:
    import torch

    model, pruner = _pruned_mlp()
    X, y = vector_data(32)
    kernels = [v.value for v in pruner.prunable_variables(model)]
    with pruner.enforce_masks(model) as enforcer:
        if use_torch_optimizer:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        else:
            optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
        for start in range(0, 32, 8):
            x = torch.as_tensor(X[start : start + 8])
            labels = torch.as_tensor(y[start : start + 8])
            model.zero_grad()
            loss = _loss(labels, model(x, training=True))
            loss.backward()
            if use_torch_optimizer:
                optimizer.step()
                enforcer.apply()  # torch.optim knows nothing about Keras constraints
            else:
                grads = [v.value.grad for v in model.trainable_variables]
                optimizer.apply(grads, model.trainable_variables)
            _assert_zeros(model, pruner)
    assert [v.value for v in pruner.prunable_variables(model)] == kernels  # same Parameters


@pytest.mark.skipif(BACKEND != "jax", reason="JAX stateless loop recipe")
def test_jax_stateless_loop() -> None:
    import jax

    model, pruner = _pruned_mlp()
    X, y = vector_data(32)
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    optimizer.build(model.trainable_variables)
    with pruner.enforce_masks(model):

        def compute_loss(trainable, non_trainable, x, labels):  # type: ignore[no-untyped-def]
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x)
            return _loss(labels, logits), non_trainable

        grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

        @jax.jit
        def train_step(state, x, labels):  # type: ignore[no-untyped-def]
            trainable, non_trainable, optimizer_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, labels)
            trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
            return loss, (trainable, non_trainable, optimizer_vars)

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        for start in range(0, 32, 8):
            _, state = train_step(state, X[start : start + 8], y[start : start + 8])
        for variable, value in zip(model.trainable_variables, state[0], strict=True):
            variable.assign(value)
    _assert_zeros(model, pruner)


def test_masks_changed_inside_enforce_masks_apply_from_the_next_step() -> None:
    # Gradual pruning inside one `with` block: the enforcer follows the pruner's new masks.
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    rng = np.random.default_rng(0)

    def steps() -> None:
        for _ in range(2):
            grads = [
                keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32"))
                for v in model.trainable_variables
            ]
            optimizer.apply(grads, model.trainable_variables)

    def edited_masks() -> list[np.ndarray]:
        masks = [np.array(m) for m in pruner.masks]
        masks[1][0] = False
        return masks

    changes = [
        lambda: pruner.calc_prune_mask(model, 0.5, "smallest_weights"),
        lambda: pruner.set_masks(edited_masks()),
    ]
    with pruner.enforce_masks(model):
        steps()
        for change in changes:
            if BACKEND == "jax":  # a jitted step would hold the old masks: say so
                with pytest.warns(UserWarning, match="Trace the step again"):
                    change()
            else:
                change()
            steps()
            _assert_zeros(model, pruner)


def test_custom_loop_with_an_ema_optimizer_keeps_its_averages_pruned() -> None:
    """Keras updates the EMA averages before the constraints run: in a custom loop they took in
    the pruned entries' values, which ``SwapEMAWeights`` or an overwrite then put back."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="d")])
    optimizer = keras.optimizers.Adam(0.1, use_ema=True)
    optimizer.build(model.trainable_variables)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    kernel, mask = pruner.prunable_variables(model)[0], pruner.masks[0]
    (average,) = [s for s in slot_variables(optimizer, kernel) if s.name.endswith("average")]
    rng = np.random.default_rng(0)
    with pruner.enforce_masks(model, optimizer=optimizer):
        for _ in range(3):
            grads = [
                keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32"))
                for v in model.trainable_variables
            ]
            optimizer.apply(grads, model.trainable_variables)
    assert np.count_nonzero(keras.ops.convert_to_numpy(kernel)[~mask]) == 0
    assert np.count_nonzero(keras.ops.convert_to_numpy(average)[~mask]) == 0
    with pytest.raises(TypeError, match="Received: optimizer of type str"):
        pruner.enforce_masks(model, optimizer="adam")
