"""ltp_keras accepts the global-by-nature criteria (lamp, random_erk) like any strategy."""

from __future__ import annotations

import numpy as np
from keras_models import make_mlp, to_numpy

from ltp_core import compute_masks
from ltp_keras import LotteryTicketPruner


def test_lamp_and_random_erk_match_the_core() -> None:
    model = make_mlp()
    head = model.layers[1].kernel
    head.assign(to_numpy(head) * 1e-3)
    pruner = LotteryTicketPruner(model)
    pruner.set_pretrained_weights(model)
    trained = [to_numpy(model.layers[0].kernel), to_numpy(head)]
    for name in ("lamp", "random_erk"):
        pruner.reset_masks()
        pruner.calc_prune_mask(model, 0.8, name)
        expected = compute_masks(name, 0.8, trained=trained, seed=[0, 0], names=pruner.names)
        assert all(np.array_equal(a, b) for a, b in zip(pruner.masks, expected, strict=True))
        assert all(m.any() for m in pruner.masks)
        pruner.apply_pruning(model)
        assert np.all(to_numpy(head)[~pruner.masks[1]] == 0)
