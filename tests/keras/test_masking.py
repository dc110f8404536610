"""Mask enforcement: exact zeros by selection, gradient masking per optimizer, slot matching."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest
from keras_models import ZeroCheck, compile_model, make_mlp, to_numpy, vector_data

from ltp_keras import (
    LotteryTicketPruner,
    MaskConstraint,
    MaskEnforcer,
    PrunerCallback,
    slot_variables,
    zero_pruned_slots,
)
from ltp_keras.masking import GRADIENT_MASKING_OPTIMIZERS, masks_gradients_exactly, select_kept

BACKEND = keras.backend.backend()

# Each optimizer whitelisted for gradient masking, in the configurations that change its update.
WHITELISTED: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "SGD": lambda: keras.optimizers.SGD(0.5),
    "SGD momentum nesterov wd": lambda: keras.optimizers.SGD(
        0.5, momentum=0.9, nesterov=True, weight_decay=0.1
    ),
    "Adam amsgrad ema": lambda: keras.optimizers.Adam(
        0.5, amsgrad=True, use_ema=True, ema_overwrite_frequency=2
    ),
    "AdamW": lambda: keras.optimizers.AdamW(0.5, weight_decay=0.5),
    "Adamax": lambda: keras.optimizers.Adamax(0.5),
    "Nadam": lambda: keras.optimizers.Nadam(0.5),
    "RMSprop centered momentum": lambda: keras.optimizers.RMSprop(0.5, momentum=0.9, centered=True),
    "Adagrad": lambda: keras.optimizers.Adagrad(0.5),
    "Adadelta": lambda: keras.optimizers.Adadelta(5.0),
    "Lion wd accumulation clipvalue": lambda: keras.optimizers.Lion(
        0.5, weight_decay=0.1, gradient_accumulation_steps=2, clipvalue=1.0
    ),
}


def test_every_whitelisted_class_is_tested() -> None:
    tested = {name.split()[0] for name in WHITELISTED}
    assert tested == set(GRADIENT_MASKING_OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(WHITELISTED))
def test_masked_gradients_keep_exact_zeros(name: str) -> None:
    """The optimizer's own update, fed masked gradients, leaves zero weights at exactly zero
    (after the slots of pruned entries were zeroed), also when kept gradients are huge."""
    optimizer = WHITELISTED[name]()
    assert masks_gradients_exactly(optimizer)
    rng = np.random.default_rng(0)
    shape = (6, 5)
    variable = keras.Variable(rng.normal(size=shape).astype("float32"), name="kernel")
    mask = rng.random(shape) < 0.5
    optimizer.build([variable])
    # Dense training first: every slot holds non-zero state at every entry.
    for _ in range(3):
        optimizer.apply(
            [keras.ops.convert_to_tensor(rng.normal(size=shape), "float32")], [variable]
        )
    variable.assign(np.where(mask, to_numpy(variable), 0.0).astype("float32"))
    zero_pruned_slots(optimizer, [variable], [mask])
    for step in range(5):
        grad = rng.normal(size=shape).astype("float32") * (1e30 if step == 2 else 1.0)
        optimizer.apply([select_kept(mask, grad)], [variable])
        values = to_numpy(variable)
        assert np.count_nonzero(values[~mask]) == 0, (name, step)
        assert np.count_nonzero(values[mask]) > 0


@pytest.mark.parametrize(
    "optimizer",
    [
        keras.optimizers.Ftrl(),
        keras.optimizers.Lamb(),
        keras.optimizers.Adafactor(),
        keras.optimizers.Adam(clipnorm=1.0),
        keras.optimizers.SGD(global_clipnorm=1.0),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()),
    ],
    ids=lambda o: type(o).__name__,
)
def test_other_optimizers_keep_the_constraint(optimizer: keras.optimizers.Optimizer) -> None:
    assert not masks_gradients_exactly(optimizer)
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    enforcer = pruner.enforce_masks(model).install(optimizer)
    assert enforcer.modes == ["constraint", "constraint"]
    assert "apply" not in vars(optimizer)
    enforcer.remove()


def test_ftrl_is_masked_exactly_by_the_constraint() -> None:
    """Ftrl's update at an entry with a zeroed accumulator is NaN: the constraint selects it to
    zero (a multiplication by the mask kept the NaN)."""
    X, y = vector_data(32)
    model = compile_model(make_mlp(), optimizer=keras.optimizers.Ftrl(learning_rate=0.5))
    pruner = LotteryTicketPruner(model)
    model.fit(X, y, batch_size=8, verbose=0)  # builds the accumulators
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    check = ZeroCheck(pruner)
    model.fit(X, y, batch_size=8, epochs=2, verbose=0, callbacks=[PrunerCallback(pruner), check])
    assert check.checks == 1 + 2 * (4 + 1)


@pytest.mark.parametrize("method", ["auto", "constraint"])
def test_pruned_weights_are_zero_after_an_overflowing_step(method: str) -> None:
    X, y = vector_data(32)
    X = X * 1e4
    model = compile_model(make_mlp(), optimizer=keras.optimizers.SGD(learning_rate=1e30))
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    check = ZeroCheck(pruner)
    model.fit(
        X, y, batch_size=8, verbose=0, callbacks=[PrunerCallback(pruner, method=method), check]
    )
    assert check.checks == 1 + 4 + 1
    kept = to_numpy(pruner.prunable_variables(model)[0])[pruner.masks[0]]
    assert not np.isfinite(kept).all()  # the step did overflow


def test_constraint_and_enforcer_select_zero_at_inf() -> None:
    keep = np.array([True, False, False])
    mask = keras.Variable(keep, trainable=False, dtype="bool")
    value = np.array([np.inf, np.inf, np.nan], dtype="float32")
    assert to_numpy(MaskConstraint(mask)(value)).tolist()[1:] == [0.0, 0.0]
    float_mask = keras.Variable(keep.astype("float32"), trainable=False)
    assert to_numpy(MaskConstraint(float_mask)(value)).tolist()[1:] == [0.0, 0.0]
    variable = keras.Variable(value)
    with MaskEnforcer([variable], [keep]):
        got = to_numpy(variable)
    assert np.isinf(got[0]) and got[1:].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"Received: a mask of shape \(2,\)"):
        MaskEnforcer([variable], [keep[:2]])


def test_gradient_masking_is_used_and_removed() -> None:
    optimizer = keras.optimizers.Adam()
    model = compile_model(make_mlp(), optimizer=optimizer)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    kernel = pruner.prunable_variables(model)[0]
    max_norm = keras.constraints.MaxNorm(3.0)
    kernel.constraint = max_norm  # a variable with its own constraint keeps the constraint
    seen: list[list[str]] = []

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
            seen.append(callback._enforcer.modes)  # type: ignore[union-attr]

    callback = PrunerCallback(pruner)
    X, y = vector_data(16)
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[callback, Spy(), ZeroCheck(pruner)])
    by_gradient = BACKEND == "tensorflow"
    assert seen == [["constraint", "gradient" if by_gradient else "constraint"]]
    assert "apply" not in vars(optimizer) and kernel.constraint is max_norm
    forced = PrunerCallback(pruner, method="constraint")
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[forced, ZeroCheck(pruner)])
    with pytest.raises(ValueError, match="Received: method='gradients'"):
        PrunerCallback(pruner, method="gradients")


def test_slots_are_matched_by_identity_not_name_prefix() -> None:
    """Layer ``d``'s slots are named ``d_kernel_*``, a prefix of layer ``d_kernel``'s."""
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(4, name="d_kernel")(keras.layers.Dense(4, name="d")(inputs))
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.SGD(momentum=0.9, use_ema=True)
    compile_model(model, optimizer=optimizer)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(16, 4)), rng.integers(0, 4, 16), batch_size=8, verbose=0)
    d, d_kernel = model.get_layer("d").kernel, model.get_layer("d_kernel").kernel
    assert {s.name for s in slot_variables(optimizer, d)} == {
        "d_kernel_momentum",
        "d_kernel_average",
    }
    other_slots = slot_variables(optimizer, d_kernel)
    assert {s.name for s in other_slots} == {"d_kernel_kernel_momentum", "d_kernel_kernel_average"}
    before = [to_numpy(s) for s in other_slots]
    assert all(np.count_nonzero(b) == b.size for b in before)
    pruner = LotteryTicketPruner(model, prunable=[d.path])
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.apply_pruning(model)
    for slot in slot_variables(optimizer, d):
        assert np.count_nonzero(to_numpy(slot)[~pruner.masks[0]]) == 0
    for slot, b in zip(other_slots, before, strict=True):
        np.testing.assert_array_equal(to_numpy(slot), b)  # layer d_kernel is not pruned


def test_a_subclass_of_a_whitelisted_optimizer_keeps_the_constraint() -> None:
    class MyAdam(keras.optimizers.Adam):
        pass

    assert not masks_gradients_exactly(MyAdam())
