"""``PrunerCallback`` and ``RewindCheckpoint`` during ``fit`` on the active backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras_models import (
    ZeroCheck,
    compile_model,
    image_data,
    make_mlp,
    make_nested_model,
    to_numpy,
    vector_data,
)

from ltp_keras import LotteryTicketPruner, PrunerCallback, RewindCheckpoint, slot_variables


def _zero_counts(pruner: LotteryTicketPruner, model: keras.Model) -> list[int]:
    return [int(np.sum(to_numpy(v) == 0)) for v in pruner.prunable_variables(model)]


def test_readme_flow_on_nested_model_keeps_exact_zeros_after_every_batch() -> None:
    X, y = image_data(48)
    model = compile_model(make_nested_model())
    initial_weights = model.get_weights()
    pruner = LotteryTicketPruner(model)
    model.fit(X, y, batch_size=16, verbose=0)
    pruner.set_pretrained_weights(model)
    model.set_weights(initial_weights)
    pruner.calc_prune_mask(model, 0.5, "large_final")
    untrained_loss = model.evaluate(X, y, verbose=0)  # before fit: weights not pruned yet
    check = ZeroCheck(pruner)
    model.fit(
        X,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        validation_data=(X[:16], y[:16]),
        callbacks=[PrunerCallback(pruner), check],
    )
    trained_loss = model.evaluate(X, y, verbose=0, callbacks=[check])
    assert np.isfinite(untrained_loss) and np.isfinite(trained_loss)
    # begin + 2x3 batches + 2 epoch ends + 2 validation batches + 2 evaluate batches
    assert check.checks == 1 + 2 * 3 + 2 + 2 + 2
    expected = [int(np.sum(~m)) for m in pruner.masks]
    assert _zero_counts(pruner, model) == expected
    assert expected == [m.size // 2 for m in pruner.masks]
    bn = model.get_layer("bn")  # BatchNormalization is trained, never masked
    for variable in (bn.gamma, bn.moving_variance):
        assert np.count_nonzero(to_numpy(variable)) == variable.shape[0]


@pytest.mark.parametrize(
    ("jit_compile", "steps_per_execution"), [(True, 3), (False, 1), (False, 2)]
)
def test_zeros_with_jit_compile_and_steps_per_execution(
    jit_compile: bool, steps_per_execution: int
) -> None:
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        pytest.skip("the torch backend of Keras requires steps_per_execution=1")
    X, y = vector_data(24)
    model = compile_model(
        make_mlp(), jit_compile=jit_compile, steps_per_execution=steps_per_execution
    )
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.6, "random")
    check = ZeroCheck(pruner)
    before = [to_numpy(v) for v in pruner.prunable_variables(model)]
    model.fit(X, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner), check])
    after = [to_numpy(v) for v in pruner.prunable_variables(model)]
    assert check.checks >= 2
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]
    for b, a, m in zip(before, after, pruner.masks, strict=True):
        assert not np.array_equal(b[m], a[m])  # the kept weights did train


class _SlotCheck(keras.callbacks.Callback):
    def __init__(self, pruner: LotteryTicketPruner) -> None:
        super().__init__()
        self.pruner = pruner
        self.touched = 0

    def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
        optimizer = self.model.optimizer
        for variable, mask in zip(
            self.pruner.prunable_variables(self.model), self.pruner.masks, strict=True
        ):
            for slot in slot_variables(optimizer, variable):
                assert np.count_nonzero(to_numpy(slot)[~mask]) == 0, slot.name
                self.touched += 1


def test_optimizer_slots_are_zeroed_when_masks_change() -> None:
    X, y = vector_data(32)
    model = compile_model(make_mlp(), optimizer=keras.optimizers.Adam(learning_rate=0.01))
    pruner = LotteryTicketPruner(model)
    model.fit(X, y, batch_size=8, verbose=0)  # dense training: non-zero moments everywhere
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    slots = _SlotCheck(pruner)
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[PrunerCallback(pruner), slots])
    assert slots.touched == 2 * 2  # momentum and velocity of two kernels
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]


def test_ema_weights_keep_zeros() -> None:
    # One fit only: on JAX, Keras 3.15 itself fails a second fit with use_ema=True.
    X, y = vector_data(32)
    optimizer = keras.optimizers.Adam(learning_rate=0.01, use_ema=True, ema_overwrite_frequency=2)
    model = compile_model(make_mlp(), optimizer=optimizer)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    slots = _SlotCheck(pruner)
    check = ZeroCheck(pruner)
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[PrunerCallback(pruner), slots, check])
    # momentum, velocity and EMA average of two kernels; TF builds the optimizer lazily
    # inside the first traced step, from the already masked weights.
    assert slots.touched == (0 if keras.backend.backend() == "tensorflow" else 2 * 3)
    assert check.checks == 1 + 4 + 1
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]
    for variable, mask in zip(pruner.prunable_variables(model), pruner.masks, strict=True):
        (average,) = [s for s in slot_variables(optimizer, variable) if s.name.endswith("average")]
        assert np.count_nonzero(to_numpy(average)[~mask]) == 0


@pytest.mark.parametrize("method", ["auto", "constraint"])
def test_ema_averages_keep_zeros_so_swapped_ema_weights_are_pruned(method: str) -> None:
    """Keras updates the EMA averages before the constraints run: with the mask constraint they
    took in the pruned entries' unconstrained values, so ``SwapEMAWeights`` validated a model
    whose pruned weights were not zero."""
    X, y = vector_data(32)
    optimizer = keras.optimizers.Adam(learning_rate=0.05, use_ema=True)
    model = compile_model(make_mlp(), optimizer=optimizer)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    check = ZeroCheck(pruner)  # also after every validation batch, on the swapped-in averages
    swap = keras.callbacks.SwapEMAWeights()
    callback = PrunerCallback(pruner, method=method)
    model.fit(
        X, y, batch_size=8, verbose=0, validation_data=(X, y), callbacks=[callback, swap, check]
    )
    assert check.checks == 1 + 4 + 4 + 1
    for variable, mask in zip(pruner.prunable_variables(model), pruner.masks, strict=True):
        (average,) = [s for s in slot_variables(optimizer, variable) if s.name.endswith("average")]
        assert np.count_nonzero(to_numpy(average)[~mask]) == 0
    assert "_update_model_variables_moving_average" not in vars(optimizer)  # removed at the end


@pytest.mark.parametrize("use_dwr", [False, True])
def test_rewind_and_dwr_restart_the_ema_averages(use_dwr: bool) -> None:
    """The EMA averages held the trained weights: the overwrite at the end of ``fit`` (and every
    ``ema_overwrite_frequency`` steps) brought them back over the rewound (or rescaled) ones."""
    X, y = vector_data(32)
    optimizer = keras.optimizers.SGD(learning_rate=0.5, use_ema=True, ema_overwrite_frequency=2)
    model = compile_model(make_mlp(), optimizer=optimizer)
    pruner = LotteryTicketPruner(model)
    initial = [to_numpy(v) for v in model.trainable_variables]
    model.fit(X, y, batch_size=8, verbose=0)  # dense training: the averages move away
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.rewind(model)
    optimizer.learning_rate.assign(0.0)  # the weights must stay where rewind put them
    callback = PrunerCallback(pruner, use_dwr=use_dwr)
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[callback, ZeroCheck(pruner)])
    variables = pruner.prunable_variables(model)
    prunable = {id(v): m for v, m in zip(variables, pruner.masks, strict=True)}
    for variable, start in zip(model.trainable_variables, initial, strict=True):
        mask = prunable.get(id(variable))
        expected = start if mask is None else np.where(mask, start, 0.0)
        if use_dwr and mask is not None:
            expected = expected * mask.size / mask.sum()
        np.testing.assert_allclose(to_numpy(variable), expected, rtol=1e-5, atol=1e-7)


def test_callback_is_reusable_and_removes_its_constraints() -> None:
    X, y = vector_data(32)
    max_norm = keras.constraints.MaxNorm(5.0)
    model = make_mlp()
    kernel = model.layers[0].kernel
    kernel.constraint = max_norm
    compile_model(model, optimizer="sgd")
    pruner = LotteryTicketPruner(model)
    callback = PrunerCallback(pruner)
    pruner.calc_prune_mask(model, 0.3, "smallest_weights")
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[callback])
    assert kernel.constraint is max_norm
    pruner.calc_prune_mask(model, 0.3, "smallest_weights")  # new masks, same callback
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[callback, ZeroCheck(pruner)])
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]
    assert kernel.constraint is max_norm
    model.fit(X, y, batch_size=8, verbose=0)  # without the callback nothing is enforced
    assert _zero_counts(pruner, model)[0] < int(np.sum(~pruner.masks[0]))


def test_use_dwr_scales_once_per_new_masks() -> None:
    X, y = vector_data(16)
    model = compile_model(make_mlp(), optimizer=keras.optimizers.SGD(learning_rate=0.0))
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.75, "smallest_weights")
    before = [to_numpy(v) for v in pruner.prunable_variables(model)]
    callback = PrunerCallback(pruner, use_dwr=True)
    model.fit(X, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    model.fit(X, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])  # same masks
    for v, b, m in zip(pruner.prunable_variables(model), before, pruner.masks, strict=True):
        np.testing.assert_allclose(to_numpy(v), np.where(m, b * 4.0, 0.0), rtol=1e-6)
    # A rewind (another trial with the same masks) is rescaled again, once.
    pruner.rewind(model)
    model.fit(X, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    for v, b, m in zip(pruner.prunable_variables(model), before, pruner.masks, strict=True):
        np.testing.assert_allclose(to_numpy(v), np.where(m, b * 4.0, 0.0), rtol=1e-6)
    with pytest.raises(TypeError, match="Received: use_dwr='yes'"):
        PrunerCallback(pruner, use_dwr="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Received: pruner of type"):
        PrunerCallback(object())  # type: ignore[arg-type]


def test_saved_model_and_checkpoints_keep_exact_zeros(tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y = vector_data(32)
    model = compile_model(make_mlp())
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.7, "smallest_weights_global")
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras"))
    model.fit(X, y, batch_size=16, verbose=0, callbacks=[PrunerCallback(pruner), checkpoint])
    model.save(tmp_path / "final.keras")
    expected = [int(np.sum(~m)) for m in pruner.masks]
    for name in ("ckpt.keras", "final.keras"):
        loaded = keras.models.load_model(tmp_path / name)  # no custom objects needed
        assert _zero_counts(pruner, loaded) == expected
        for v, m in zip(pruner.prunable_variables(loaded), pruner.masks, strict=True):
            assert np.count_nonzero(to_numpy(v)[~m]) == 0


def test_subclassed_model_trains_with_callback() -> None:
    from keras_models import SubclassedNet

    X, y = vector_data(24)
    model = SubclassedNet()
    model(X[:1])
    compile_model(model)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[PrunerCallback(pruner), ZeroCheck(pruner)])
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]


class _Recorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[list[np.ndarray]] = []

    def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
        self.snapshots = [self.model.get_weights()]

    def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
        self.snapshots.append(self.model.get_weights())


@pytest.mark.parametrize("iteration", [0, 3])
def test_rewind_checkpoint_captures_after_iteration_k(iteration: int) -> None:
    X, y = vector_data(32)
    model = compile_model(make_mlp(), optimizer="sgd")
    pruner = LotteryTicketPruner(model)
    recorder = _Recorder()
    checkpoint = RewindCheckpoint(pruner, iteration=iteration)
    model.fit(X, y, batch_size=8, epochs=2, verbose=0, callbacks=[recorder, checkpoint])
    assert checkpoint.captured_at == iteration
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[checkpoint])  # once: no new capture
    pruner.rewind(model)
    for got, want in zip(model.get_weights(), recorder.snapshots[iteration], strict=True):
        np.testing.assert_array_equal(got, want)


def test_rewind_checkpoint_by_epoch_and_errors() -> None:
    X, y = vector_data(32)
    spe = 1 if keras.backend.backend() == "torch" else 2
    model = compile_model(make_mlp(), optimizer="sgd", steps_per_execution=spe)
    pruner = LotteryTicketPruner(model)
    checkpoint = RewindCheckpoint(pruner, epoch=1)
    model.fit(X, y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint])
    assert checkpoint.captured_at == 4
    with pytest.raises(ValueError, match="exactly one"):
        RewindCheckpoint(pruner)
    with pytest.raises(ValueError, match="Received: iteration=-1"):
        RewindCheckpoint(pruner, iteration=-1)


def test_bfloat16_kernels_keep_zeros() -> None:
    X, y = vector_data(16)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, dtype="bfloat16", name="low"),
            keras.layers.Dense(3, name="high"),
        ]
    )
    compile_model(model)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    check = ZeroCheck(pruner)
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[PrunerCallback(pruner), check])
    assert check.checks == 1 + 2 + 1


class _TrainFunctionSpy(keras.callbacks.Callback):
    """Records the train function each fit runs (after PrunerCallback set it up)."""

    def __init__(self) -> None:
        super().__init__()
        self.functions: list[object] = []

    def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
        self.functions.append(self.model.train_function)


@pytest.mark.parametrize(("jit_compile", "steps_per_execution"), [(False, 1), (True, 2)])
def test_masked_train_function_is_reused_until_something_changes(
    jit_compile: bool, steps_per_execution: int
) -> None:
    backend = keras.backend.backend()
    if backend == "torch" and (jit_compile or steps_per_execution > 1):
        pytest.skip("torch.compile and steps_per_execution > 1: covered on TF and JAX")
    X, y = vector_data(32)
    model = compile_model(
        make_mlp(), jit_compile=jit_compile, steps_per_execution=steps_per_execution
    )
    pruner = LotteryTicketPruner(model)
    callback, spy = PrunerCallback(pruner), _TrainFunctionSpy()

    def fit(*extra: keras.callbacks.Callback) -> None:
        check = ZeroCheck(pruner)
        model.fit(X, y, batch_size=8, verbose=0, callbacks=[*extra, check])
        assert check.checks == 1 + 4 // steps_per_execution + 1
        assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]

    pruner.calc_prune_mask(model, 0.3, "smallest_weights")
    fit(callback, spy)
    fit(callback, spy)  # same masks: same step
    assert spy.functions[1] is spy.functions[0]
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[spy])  # plain fit between: unmasked
    assert spy.functions[2] is not spy.functions[0]
    assert _zero_counts(pruner, model)[0] < int(np.sum(~pruner.masks[0]))
    fit(callback, spy)
    assert spy.functions[3] is spy.functions[0]
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")  # new masks
    fit(callback, spy)
    # TensorFlow and eager torch read the mask variables live; JAX baked the old values in.
    reads_live = backend == "tensorflow" or (backend == "torch" and not jit_compile)
    assert (spy.functions[4] is spy.functions[0]) == reads_live
    if not jit_compile:  # (saves a compilation)
        compile_model(model, steps_per_execution=steps_per_execution)
        fit(callback, spy)  # recompiled (new optimizer, new loss): a new step
        assert spy.functions[5] is not spy.functions[4]


def test_recompiling_with_the_same_optimizer_rebuilds() -> None:
    X, y = vector_data(16)
    optimizer = keras.optimizers.SGD(0.1)
    model = compile_model(make_mlp(), optimizer=optimizer)
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    callback, spy = PrunerCallback(pruner), _TrainFunctionSpy()
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[callback, spy])
    model.compile(optimizer=optimizer, loss="mse")  # same optimizer, another loss
    y_onehot = np.eye(3, dtype="float32")[y]
    model.fit(X, y_onehot, batch_size=8, verbose=0, callbacks=[callback, spy, ZeroCheck(pruner)])
    assert spy.functions[1] is not spy.functions[0]
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]


def test_sparsity_is_logged_for_csv_logger_and_history(tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y = vector_data(16)
    model = compile_model(make_mlp())
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.25, "smallest_weights_global")
    path = tmp_path / "log.csv"
    history = model.fit(
        X,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[PrunerCallback(pruner), keras.callbacks.CSVLogger(str(path))],
    )
    expected = pruner.cumulative_pruning_rate
    assert history.history["sparsity"] == [expected, expected]
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("sparsity")
    assert [float(line.split(",")[column]) for line in lines[1:]] == [expected, expected]


class _PruneEveryEpoch(keras.callbacks.Callback):
    """Gradual pruning from the user's own callback: new masks at every epoch end, the model
    left as it is (``PrunerCallback`` applies them)."""

    def __init__(self, pruner: LotteryTicketPruner) -> None:
        super().__init__()
        self.pruner = pruner
        self.kernels: list[np.ndarray] = []

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self.kernels.append(to_numpy(self.pruner.prunable_variables(self.model)[0]))
        self.pruner.calc_prune_mask(self.model, 0.5, "smallest_weights")


@pytest.mark.parametrize("method", ["auto", "constraint"])
def test_masks_changed_during_fit_are_enforced_from_the_next_step(method: str) -> None:
    X, y = vector_data(32)
    model = compile_model(make_mlp(), keras.optimizers.SGD(0.1, momentum=0.9))
    pruner = LotteryTicketPruner(model)
    check = ZeroCheck(pruner)  # after every batch and epoch, with the masks of that moment
    callback = PrunerCallback(pruner, method=method)
    gradual = _PruneEveryEpoch(pruner)
    # The pruning callback runs first: PrunerCallback then applies its masks at the same epoch
    # end (callbacks listed after it, like ZeroCheck here, see them applied).
    history = model.fit(
        X,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        validation_data=(X[:8], y[:8]),
        callbacks=[gradual, callback, check],
    )
    assert pruner.level == 3 and check.checks == 1 + 3 * 4 + 3 + 3
    assert history.history["sparsity"] == [0.5, 0.75, 0.875]
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]
    momentum = slot_variables(model.optimizer, pruner.prunable_variables(model)[0])[0]
    assert np.count_nonzero(to_numpy(momentum)[~pruner.masks[0]]) == 0
    kept = pruner.masks[0]  # kept weights trained on after the masks changed
    assert not np.array_equal(gradual.kernels[1][kept], gradual.kernels[2][kept])


def test_use_dwr_rescales_masks_changed_during_fit_once_when_they_take_effect() -> None:
    X, y = vector_data(16)
    model = compile_model(make_mlp(), keras.optimizers.SGD(0.0))  # weights change by DWR only
    pruner = LotteryTicketPruner(model)
    gradual = _PruneEveryEpoch(pruner)
    callback = PrunerCallback(pruner, use_dwr=True)
    model.fit(X, y, batch_size=8, epochs=1, verbose=0, callbacks=[gradual, callback])
    kernel = to_numpy(pruner.prunable_variables(model)[0])
    kept = pruner.masks[0]
    # Rescaled by size / kept when the masks changed at the epoch end: 1 / 0.5 = 2x.
    np.testing.assert_allclose(kernel[kept], 2 * gradual.kernels[0][kept], rtol=1e-6)
    model.fit(X, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])  # same masks
    np.testing.assert_array_equal(to_numpy(pruner.prunable_variables(model)[0]), kernel)


class TwoOptimizers(keras.Model):
    """A custom ``train_step`` that updates each layer with an optimizer of its own, as a GAN
    does; ``model.optimizer`` (from ``compile()``'s default) is never used."""

    def __init__(self) -> None:
        super().__init__()
        self.first = keras.layers.Dense(8)
        self.second = keras.layers.Dense(3)
        self.optimizers = [keras.optimizers.Adam(0.01), keras.optimizers.SGD(0.1, momentum=0.9)]

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.second(self.first(x))

    def train_step(self, data):  # type: ignore[no-untyped-def]
        import tensorflow as tf

        x, y = data
        with tf.GradientTape(persistent=True) as tape:
            loss = tf.reduce_mean((self(x, training=True) - tf.one_hot(y, 3)) ** 2)
        for layer, optimizer in zip([self.first, self.second], self.optimizers, strict=True):
            variables = layer.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return {"loss": loss}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow train_step")
def test_custom_train_step_with_its_own_optimizers_keeps_zeros() -> None:
    # Masked gradients of model.optimizer cannot reach other optimizers: the constraint does.
    X, y = vector_data(16)
    model = TwoOptimizers()
    model(X[:1])
    model.compile()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    check = ZeroCheck(pruner)
    model.fit(X, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner), check])
    assert check.checks == 1 + 2 + 1
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]


@pytest.mark.parametrize("pruner_first", [True, False])
def test_early_stopping_restores_pruned_weights_in_either_order(pruner_first: bool) -> None:
    """Gradual pruning during fit with EarlyStopping(restore_best_weights=True) listed after
    PrunerCallback restored the best epoch's weights, saved before the masks last changed:
    the model came back with pruned weights non-zero, silently."""
    X, y = vector_data(32)
    model = compile_model(make_mlp(), optimizer=keras.optimizers.Adam(0.05))
    pruner = LotteryTicketPruner(model)

    class Gradual(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            pruner.calc_prune_mask(self.model, 0.5, "smallest_weights")

    # mode="max" on the loss: the first epoch stays the best, its weights are restored.
    stopping = keras.callbacks.EarlyStopping(
        "loss", mode="max", patience=9, restore_best_weights=True
    )
    callback = PrunerCallback(pruner)
    ordered = [callback, stopping] if pruner_first else [stopping, callback]
    model.fit(X, y, batch_size=8, epochs=3, verbose=0, callbacks=[Gradual(), *ordered])
    assert pruner.level == 3
    assert _zero_counts(pruner, model) == [int(np.sum(~m)) for m in pruner.masks]


def test_weights_restored_by_a_later_callback_at_train_begin_are_pruned(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """BackupAndRestore listed after PrunerCallback loads a backup (here a dense one, left by a
    crashed run) after PrunerCallback zeroed the pruned weights: on TensorFlow, where masked
    gradients keep weights as they are, the whole fit trained the dense network, silently."""
    X, y = vector_data(32)
    model = compile_model(make_mlp(), optimizer=keras.optimizers.Adam(0.05))
    pruner = LotteryTicketPruner(model)

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            if epoch == 1:
                raise RuntimeError("crash")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    with pytest.raises(RuntimeError, match="crash"):
        model.fit(X, y, batch_size=8, epochs=2, verbose=0, callbacks=[backup, Crash()])
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")

    class StepCheck(ZeroCheck):
        def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
            pass  # the backup is loaded after PrunerCallback's on_train_begin, before step 1

    check = StepCheck(pruner)
    model.fit(
        X, y, batch_size=8, epochs=2, verbose=0, callbacks=[PrunerCallback(pruner), backup, check]
    )
    assert check.checks == 4 + 1  # resumed at epoch 1: one epoch of 4 batches


def test_rewind_checkpoint_counts_steps_across_continued_fits() -> None:
    """``fit(initial_epoch=e, epochs=e + 1)`` in a loop: each fit counted from zero, so
    ``iteration=6`` (4 steps per epoch) was never reached and never captured."""
    X, y = vector_data(32)
    model = compile_model(make_mlp(), optimizer="sgd")
    pruner = LotteryTicketPruner(model)
    checkpoint = RewindCheckpoint(pruner, iteration=6)

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            if checkpoint.captured_at == 6 and not hasattr(self, "weights"):
                self.weights = [to_numpy(v) for v in pruner.prunable_variables(self.model)]

    record = Record()
    for epoch in range(3):
        model.fit(
            X,
            y,
            batch_size=8,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            callbacks=[checkpoint, record],
        )
    assert checkpoint.captured_at == 6
    for captured, seen in zip(pruner.core.rewind_weights, record.weights, strict=True):
        np.testing.assert_array_equal(captured, seen)
