"""lottery-ticket-pruner 0.8.1 code runs against ltp_keras: old names, paths and structures."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest
from keras_models import compile_model, make_mlp, make_nested_model, to_numpy, vector_data

import ltp_core
import ltp_keras
from ltp_keras import LotteryTicketPruner, PrunerCallback


def _old_test_model() -> keras.Model:
    """The old package's test model: Input(32) -> Dense(3); model.layers[0] is the InputLayer."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,), dtype="float32")
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_old_module_paths_and_version() -> None:
    old_pruner = importlib.import_module("ltp_keras.lottery_ticket_pruner")
    old_callback = importlib.import_module("ltp_keras.keras_pruner_callback")
    assert old_pruner.LotteryTicketPruner is LotteryTicketPruner
    assert old_callback.PrunerCallback is PrunerCallback
    assert ltp_keras.__version__ == ltp_core.__version__
    assert isinstance(ltp_keras.__version__, str) and ltp_keras.__version__.count(".") >= 1


def test_old_keyword_names() -> None:
    model = _old_test_model()
    pruner = LotteryTicketPruner(initial_model=model)
    trained = _old_test_model()
    trained.set_weights([w + 1.0 for w in model.get_weights()])
    pruner.set_pretrained_weights(pretrained_model=trained)
    pruner.calc_prune_mask(model, 0.5, "large_final")
    assert int(pruner.masks[0].sum()) == 48
    with pytest.raises(TypeError, match="Received: model=None, initial_model=None"):
        LotteryTicketPruner()
    with pytest.raises(TypeError, match=r"Received: model=<.*>, initial_model=<"):
        LotteryTicketPruner(model, initial_model=model)
    level = pruner.level
    with pytest.raises(TypeError, match="pretrained_model"):
        pruner.set_pretrained_weights(trained, pretrained_model=trained)
    assert pruner.level == level


def test_prune_masks_map_has_the_old_keys_values_and_is_read_only() -> None:
    model = _old_test_model()
    pruner = LotteryTicketPruner(model)
    key = (1, (0,))  # layer 1 (layer 0 is the InputLayer), its weight 0 (the kernel)
    assert pruner.prunable_tuples == [key]
    masks = pruner.prune_masks_map
    assert list(masks) == [key]
    assert len(masks[key]) == 2 and masks[key][1] is None  # the bias is not prunable
    assert masks[key][0].shape == (32, 3) and masks[key][0].dtype == np.float64
    assert np.sum(masks[key][0]) == 96
    pruner.calc_prune_mask(model, 0.2, "smallest_weights")
    assert np.sum(pruner.prune_masks_map[key][0] == 0) == int(96 * 0.2)
    pruner.calc_prune_mask(model, 0.2, "smallest_weights")
    assert np.sum(pruner.prune_masks_map[key][0] == 0) == 19 + int(77 * 0.2)
    with pytest.raises(ValueError, match="read-only"):
        pruner.prune_masks_map[key][0][0, 0] = 1.0
    with pytest.raises(TypeError):
        pruner.prune_masks_map[key] = (None, None)  # type: ignore[index]
    pruner.reset_masks()
    assert np.sum(pruner.prune_masks_map[key][0]) == 96


def test_old_apply_dwr_recipe_through_prune_masks_map() -> None:
    """The old package's own DWR test, written against prune_masks_map."""
    model = _old_test_model()
    pruner = LotteryTicketPruner(model)
    key = (1, (0,))
    layer = model.layers[1]
    weights = layer.get_weights()
    test_weights = np.random.default_rng(0).permutation(96).reshape(32, 3).astype("float32")
    weights[0] = test_weights
    layer.set_weights(weights)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.apply_pruning(model)
    pruner.apply_dwr(model)
    expected = test_weights * pruner.prune_masks_map[key][0] * 2.0
    np.testing.assert_array_equal(layer.get_weights()[0], expected)


def test_iterate_prunables_yields_the_old_tuples() -> None:
    model = make_nested_model()
    pruner = LotteryTicketPruner(model)
    items = list(pruner.iterate_prunables(model))
    assert len(items) == len(pruner.names)
    keys = pruner.prunable_tuples
    assert [item[0] for item in items] == [k for k in keys for _ in k[1]]
    by_path = dict(zip(pruner.names, pruner.masks, strict=True))
    for key, layer, index, initial, pretrained, current, mask in items:
        assert layer is model.layers[key[0]] and index in key[1]
        variable = layer.weights[index]
        np.testing.assert_array_equal(current, to_numpy(variable))
        np.testing.assert_array_equal(initial, current)  # nothing trained yet
        assert pretrained is None
        np.testing.assert_array_equal(mask, by_path[variable.path].astype(float))
        assert not current.flags.writeable
    # the nested Sequential "block" is one top-level layer with two prunable kernels
    block = model.layers.index(model.get_layer("block"))
    assert [k for k in keys if k[0] == block] == [(block, (0, 2))]
    pruner.set_pretrained_weights(model)
    assert all(item[4] is not None for item in pruner.iterate_prunables(model))


@pytest.mark.parametrize("use_dwr", [1, 0])
def test_use_dwr_accepts_0_and_1(use_dwr: int) -> None:
    X, y = vector_data(16)
    model = compile_model(make_mlp(), optimizer=keras.optimizers.SGD(learning_rate=0.0))
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    before = to_numpy(pruner.prunable_variables(model)[0])
    callback = PrunerCallback(pruner, use_dwr=use_dwr)
    assert callback.use_dwr is bool(use_dwr)
    model.fit(X, y, batch_size=8, verbose=0, callbacks=[callback])
    after = to_numpy(pruner.prunable_variables(model)[0])
    factor = 2.0 if use_dwr else 1.0
    np.testing.assert_allclose(after, np.where(pruner.masks[0], before * factor, 0.0), rtol=1e-6)
    with pytest.raises(ValueError, match="Received: use_dwr=2"):
        PrunerCallback(pruner, use_dwr=2)  # type: ignore[arg-type]
