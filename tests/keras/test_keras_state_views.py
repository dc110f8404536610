"""ltp_keras: the pruner's masks cannot be edited behind its back; warnings come through."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from keras_models import ZeroCheck, compile_model, make_mlp, to_numpy, vector_data

from ltp_core import LayerCollapseWarning
from ltp_keras import LotteryTicketPruner, PrunerCallback


def test_masks_and_core_arrays_are_read_only_and_training_still_masks() -> None:
    model = compile_model(make_mlp())
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    before = [m.copy() for m in pruner.masks]
    for arrays in (pruner.masks, pruner.core.masks, pruner.core.rewind_weights):
        with pytest.raises(ValueError, match="read-only"):
            arrays[0][...] = True
    assert all(np.array_equal(a, b) for a, b in zip(before, pruner.masks, strict=True))
    x, y = vector_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. torch's "non-writable array"
        pruner.rewind(model)
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=8,
            verbose=0,
            callbacks=[PrunerCallback(pruner), ZeroCheck(pruner)],
        )
    kernel = to_numpy(model.layers[0].kernel)
    assert np.all(kernel[~pruner.masks[0]] == 0)


def test_min_layer_density_is_passed_through() -> None:
    model = make_mlp()
    head = model.layers[1].kernel
    head.assign(to_numpy(head) * 1e-3)  # a small-scale head: the global ranking empties it
    pruner = LotteryTicketPruner(model)
    pruner.set_pretrained_weights(model)
    with pytest.warns(LayerCollapseWarning, match="out"):
        pruner.calc_prune_mask(model, 0.4, "large_final_global")
    pruner.reset_masks()
    pruner.calc_prune_mask(model, 0.4, "large_final_global", min_layer_density=0.25)
    assert int(pruner.masks[1].sum()) == 12  # ceil(0.25 * 48)
    with pytest.raises(ValueError, match="min_layer_density=-1"):
        pruner.calc_prune_mask(model, 0.4, "large_final_global", min_layer_density=-1)
    assert pruner.level == 1
