"""``ltp_keras.LotteryTicketPruner``: same semantics as the core, on model variables."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from keras_models import compile_model, image_data, make_mlp, make_nested_model, to_numpy

from ltp_core import LotteryTicketPruner as CorePruner
from ltp_core import compute_masks
from ltp_keras import LotteryTicketPruner


def _dense_32_to_3() -> tuple[keras.Model, keras.Variable]:
    model = keras.Sequential([keras.Input((32,)), layers.Dense(3, name="d")], name="m")
    kernel = model.layers[0].kernel
    kernel.assign(np.arange(1.0, 97.0, dtype="float32").reshape(32, 3))
    return model, kernel


def test_old_package_smallest_weights_counts() -> None:
    model, kernel = _dense_32_to_3()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.apply_pruning(model)
    assert np.sum(to_numpy(kernel) == 0) == 48
    assert set(to_numpy(kernel)[to_numpy(kernel) != 0].tolist()) == set(range(49, 97))
    pruner.calc_prune_mask(model, 0.2, "smallest_weights")
    pruner.apply_pruning(model)
    assert np.sum(to_numpy(kernel) == 0) == 57
    assert pruner.cumulative_pruning_rate == pytest.approx(57 / 96)


@pytest.mark.parametrize("equal", [False, True])
def test_old_package_conv_large_final_counts(equal: bool) -> None:
    model = keras.Sequential([keras.Input((5, 5, 4)), layers.Conv2D(3, 3, name="c")])
    kernel = model.layers[0].kernel
    assert int(np.prod(kernel.shape)) == 108
    values = np.full(108, 0.5) if equal else np.random.default_rng(1).normal(size=108)
    kernel.assign(values.reshape(kernel.shape).astype("float32"))
    pruner = LotteryTicketPruner(model)
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.2, "large_final")
    pruner.apply_pruning(model)
    assert np.sum(to_numpy(kernel) == 0) == 21
    pruner.calc_prune_mask(model, 0.5, "large_final")
    pruner.apply_pruning(model)
    assert np.sum(to_numpy(kernel) == 0) == 64


@pytest.mark.parametrize(
    "strategy", ["smallest_weights_global", "large_final", "movement", "random"]
)
def test_masks_equal_the_cores(strategy: str) -> None:
    model = make_nested_model()
    pruner = LotteryTicketPruner(model, seed=3)
    initial = [to_numpy(v) for v in pruner.prunable_variables(model)]
    rng = np.random.default_rng(0)
    for v in model.weights:  # "train": perturb every weight
        v.assign(to_numpy(v) + rng.normal(scale=0.1, size=v.shape).astype("float32"))
    trained = [to_numpy(v) for v in pruner.prunable_variables(model)]
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.3, strategy, layer_rates={"head": 0.5})
    core = CorePruner(initial, names=pruner.names, seed=3)
    core.set_pretrained_weights(trained)
    core.calc_prune_mask(trained, 0.3, strategy, layer_rates={"head/kernel": 0.5})
    for mine, theirs in zip(pruner.masks, core.masks, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    direct = compute_masks(
        strategy,
        0.3,
        initial=initial,
        trained=trained,
        current=trained,
        seed=[3, 0],
        layer_rates={7: 0.5},
        names=pruner.names,
    )
    for mine, theirs in zip(pruner.masks, direct, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_calc_prune_mask_leaves_weights_alone_and_apply_zeroes_only_kernels() -> None:
    model = make_nested_model()
    before = [to_numpy(v) for v in model.weights]
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    for v, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(v), b)
    pruner.apply_pruning(model)
    pruned = set(pruner.names)
    for v, b in zip(model.weights, before, strict=True):
        if v.path in pruned:
            mask = pruner.masks[pruner.index_of(v.path)]
            np.testing.assert_array_equal(to_numpy(v), np.where(mask, b, 0))
            assert np.sum(~mask) == int(0.5 * mask.size)
        else:  # biases, BatchNormalization
            np.testing.assert_array_equal(to_numpy(v), b)


def test_reset_masks_clears_cumulative_rate() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    assert pruner.level == 1 and pruner.cumulative_pruning_rate > 0
    pruner.reset_masks()
    assert pruner.level == 0 and pruner.cumulative_pruning_rate == 0.0
    assert all(m.all() for m in pruner.masks)


def test_apply_dwr_scales_once_relative_to_given_weights() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.75, "smallest_weights")
    variables = pruner.prunable_variables(model)
    before = [to_numpy(v) for v in variables]
    pruner.apply_dwr(model)
    for v, b, m in zip(variables, before, pruner.masks, strict=True):
        np.testing.assert_allclose(to_numpy(v), np.where(m, b * (m.size / m.sum()), 0), rtol=1e-6)


def test_rewind_restores_all_weights_masked_and_keeps_identity() -> None:
    model = compile_model(make_nested_model())
    x, y = image_data()
    initial = [to_numpy(v) for v in model.weights]
    ids = [id(v) for v in model.weights]
    pruner = LotteryTicketPruner(model)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.4, "large_final")
    pruner.rewind(model)
    assert [id(v) for v in model.weights] == ids
    for v, w0 in zip(model.weights, initial, strict=True):
        expected = w0
        if v.path in pruner.names:
            expected = np.where(pruner.masks[pruner.index_of(v.path)], w0, 0)
        np.testing.assert_array_equal(to_numpy(v), expected)  # BN moving stats too
    # optimizer state at pruned entries is zero after rewinding
    slot = next(s for s in model.optimizer.variables if s.name.endswith("head_kernel_momentum"))
    assert np.count_nonzero(to_numpy(slot)[~pruner.masks[pruner.index_of("head/kernel")]]) == 0


def test_late_rewind_point() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    for v in model.weights:
        v.assign(to_numpy(v) + 1.0)
    pruner.set_rewind_weights(model)
    snapshot = [to_numpy(v) for v in model.weights]
    for v in model.weights:
        v.assign(to_numpy(v) * 3.0)
    pruner.rewind(model)
    for v, s in zip(model.weights, snapshot, strict=True):
        np.testing.assert_array_equal(to_numpy(v), s)


def test_another_instance_of_the_architecture_is_accepted() -> None:
    model = make_mlp(seed=0)
    pruner = LotteryTicketPruner(model)
    twin = make_mlp(seed=1)  # different auto names and values, same structure
    pruner.set_pretrained_weights(twin)
    pruner.calc_prune_mask(twin, 0.5, "large_final")
    pruner.apply_pruning(twin)
    kernel = pruner.prunable_variables(twin)[0]
    assert np.sum(to_numpy(kernel) == 0) == kernel.shape[0] * kernel.shape[1] // 2


def test_mismatched_model_is_a_clear_error() -> None:
    pruner = LotteryTicketPruner(make_mlp(hidden=16))
    other = make_mlp(hidden=8)
    with pytest.raises(ValueError, match="do not match this pruner"):
        pruner.calc_prune_mask(other, 0.5, "smallest_weights")
    with pytest.raises(ValueError, match="do not match this pruner"):
        pruner.apply_pruning(other)


def test_core_errors_pass_through() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    with pytest.raises(ValueError, match=r"Received: prune_percentage=1\.5"):
        pruner.calc_prune_mask(model, 1.5, "smallest_weights")
    with pytest.raises(ValueError, match="set_pretrained_weights"):
        pruner.calc_prune_mask(model, 0.5, "large_final")
    with pytest.raises(ValueError):
        pruner.calc_prune_mask(model, 0.5, "no_such_strategy")
    with pytest.raises(ValueError, match="Unknown variable path"):
        pruner.index_of("nope")
    model.layers[0].kernel.assign(np.full(model.layers[0].kernel.shape, np.nan, "float32"))
    with pytest.raises(ValueError, match="NaN"):
        pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    assert pruner.level == 0


def test_state_dict_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.save(tmp_path / "state.npz")
    fresh = LotteryTicketPruner(model)
    fresh.load_state_dict(CorePruner.load(tmp_path / "state.npz").state_dict())
    for a, b in zip(pruner.masks, fresh.masks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_kernels_are_pruned() -> None:
    model = keras.Sequential([keras.Input((6,)), layers.Dense(4, dtype="bfloat16", name="d")])
    pruner = LotteryTicketPruner(model)
    assert pruner.core.dtypes == ["float32"]  # read as float32 for the core
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.apply_pruning(model)
    kernel = pruner.prunable_variables(model)[0]
    assert keras.backend.standardize_dtype(kernel.dtype) == "bfloat16"
    assert np.sum(to_numpy(kernel).astype(np.float32) == 0) == 12


def test_loading_another_instances_state_keeps_this_models_names() -> None:
    # The state's model had other auto-generated layer names, shifted by one against this
    # model's: a layer name in `layer_rates` must still mean this model's layer.
    def build(names: list[str]) -> keras.Model:
        return keras.Sequential(
            [keras.Input((4,))]
            + [keras.layers.Dense(n, name=name) for n, name in zip([6, 6, 2], names, strict=True)]
        )

    saved_model = build(["dense_1", "dense_2", "dense_3"])
    saved = LotteryTicketPruner(saved_model)
    saved.calc_prune_mask(saved_model, 0.5, "smallest_weights")
    model = build(["dense", "dense_1", "dense_2"])
    pruner = LotteryTicketPruner(model)
    names = list(pruner.names)
    pruner.load_state_dict(saved.state_dict())
    assert pruner.names == names and pruner.level == 1
    pruner.calc_prune_mask(model, 0.5, "smallest_weights", layer_rates={"dense_2": 0})
    assert [int((~m).sum()) for m in pruner.masks] == [18, 27, 6]  # dense_2 (the output) kept
    assert pruner.index_of(names[2]) == 2


def test_a_model_wrapping_the_pruners_model_prunes_its_variables() -> None:
    # Fine-tuning wrapper: a layer of the same shape in front of the pruned model. Matching by
    # position picked that layer's kernel and left the last one dense.
    base = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, name="b1"), keras.layers.Dense(8, name="b2")],
        name="base",
    )
    pruner = LotteryTicketPruner(base)
    pruner.calc_prune_mask(base, 0.5, "smallest_weights")
    inputs = keras.Input((8,))
    wrapper = keras.Model(inputs, base(keras.layers.Dense(8, name="pre")(inputs)))
    variables = pruner.prunable_variables(wrapper)
    assert [v.path for v in variables] == pruner.names == ["base/b1/kernel", "base/b2/kernel"]
    pruner.apply_pruning(wrapper)
    assert [int(np.sum(to_numpy(v) == 0)) for v in variables] == [32, 32]
    # Another instance wrapped the same way holds none of them: refused, not matched by position.
    other = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(8)], name="other"
    )
    with pytest.raises(ValueError, match="has 6 weights, the pruner's model had 4"):
        pruner.prunable_variables(keras.Model(inputs, other(keras.layers.Dense(8)(inputs))))
